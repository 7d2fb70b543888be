"""A bounded protocol fuzz against a live server (bench/fuzz.py's generator, 2,000 messages): no
traceback in the log, no internal_error, and the session answers a valid event after every 250."""

from __future__ import annotations

import logging

import pytest

from bench.fuzz import messages, run


@pytest.mark.asyncio
@pytest.mark.parametrize("seed,pace_s", [(11, 0.0), (12, 0.002)])
async def test_fuzzed_session_never_breaks(server, caplog, seed, pace_s):
    caplog.set_level(logging.WARNING)
    out = await run(server.ws_url, messages(seed, 2000 if not pace_s else 1000), check_every=250, pace_s=pace_s)
    assert out["stalls"] == [] and out["checks"] >= 4, out
    assert out["internal_errors"] == 0, out
    assert sum(out["error_codes"].values()) > 100, out  # it did reach the validators
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks][:5]
    assert server.app["manager"].in_use <= 1
