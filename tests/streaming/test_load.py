"""Load against a live `omni serve` subprocess (bench/soak.py's driver, briefly): max_sessions
speakers in real time, 8 more refused cleanly (server_busy, close 1013), no error events, and the
memory of the server and its model processes back at its warmed-up baseline afterwards."""

from __future__ import annotations

import asyncio

import pytest

from bench.soak import load, rss_mb
from rtclient import free_port, omni_serve

MAX_SESSIONS = 4
RSS_SLACK_MB = 64  # allocator noise; a leak of a session's state per round would be far more


@pytest.mark.asyncio
async def test_max_sessions_plus_8_refusals_are_clean_and_memory_returns():
    port = free_port()
    p, _ = omni_serve("--port", str(port), "--max-sessions", str(MAX_SESSIONS))
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        await load(url, MAX_SESSIONS, 8.0, 0)  # warm-up: pools and arenas get committed
        await asyncio.sleep(2.0)
        base = rss_mb(p.pid)
        out = await load(url, MAX_SESSIONS, 12.0, 8, p.pid)
        await asyncio.sleep(3.0)
        after = rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(30)
        p.stderr.close()
    assert out["refused_cleanly"] == 8 and out["refused_badly"] == 0, out
    assert out["errors"] == [] and out["replies"] >= MAX_SESSIONS, out
    assert after - base < RSS_SLACK_MB, (base, out["rss_peak_mb"], after)
