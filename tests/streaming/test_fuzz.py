"""A bounded protocol fuzz against a live server (bench/fuzz.py's generator): every category mixed
in one stream of connections (mutations, garbage, megabyte strings, lying image headers, speech
storms, VAD flips, replies between malformed events, closes racing replies, invalid UTF-8). No
traceback, no "never awaited" or "never retrieved", no internal_error, and the live session
answers a valid event after every 250 actions."""

from __future__ import annotations

import gc
import logging
import warnings

import pytest

from bench.fuzz import BAD_LOG, actions, run


@pytest.mark.asyncio
@pytest.mark.parametrize("seed,pace_s", [(11, 0.0), (12, 0.002)])
async def test_fuzzed_sessions_never_break(server, caplog, seed, pace_s):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = await run(server.ws_url, actions(seed, 2000 if not pace_s else 1000), check_every=250, pace_s=pace_s)
        gc.collect()  # a dropped coroutine or an unretrieved task error is reported when collected
    assert out["stalls"] == [] and out["checks"] >= 4, out
    assert out["internal_errors"] == 0, out
    assert sum(out["error_codes"].values()) > 100, out  # it did reach the validators
    assert out["connections"] > 1 and "1007" in out["closes"], out  # reconnected after the server's closes
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    bad += [str(w.message) for w in caught if any(b in str(w.message) for b in BAD_LOG)]
    assert not bad, bad[:5]
    assert server.app["manager"].in_use <= 1
