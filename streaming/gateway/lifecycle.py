"""A session's life as both transports report it: its start and end (a log line each, the session
gauges), and the watch that closes a connection at once when its engine lost the session."""

from __future__ import annotations

import asyncio
import logging
import time

from .errors import close_code, to_error_event
from .events import omni_heartbeat

log = logging.getLogger("omni.gateway")
# A quiet session (listening to silence) sends nothing; a page that hears nothing for a few
# beats knows the server or the network is gone (browsers cannot see WebSocket pings).
HEARTBEAT_S = 2.0


def session_started(app, conv, transport: str) -> float:
    """The session's first log line and metrics; returns its start time (monotonic seconds)."""
    app["metrics"].session_started(transport)
    log.info("session %s start: %s on %s", conv.session_id, transport, conv.engine.where)
    conv.transport = transport
    return time.monotonic()


def session_ended(app, conv, started_s: float) -> None:
    app["metrics"].session_ended()
    s = conv.summary()
    log.info(
        "session %s end: %s, %.1f s, %d turn(s), first audio p50 %s ms, on %s",
        conv.session_id,
        conv.transport,
        time.monotonic() - started_s,
        s["turns"],
        s["first_audio_p50_ms"],
        s["engine"],
    )


async def watch_engine(conv, send, close) -> None:
    """The session's engine lost it (its model process or replica died): say so and close now."""
    await conv.engine.lost.wait()
    err = conv.engine.lost_error
    await send(to_error_event(err))
    await close(close_code(err))


async def heartbeat(wire, period_s: float = HEARTBEAT_S) -> None:
    """[ext] `omni.heartbeat` every period_s; `wire` (outbound.WireEvents) passes it only to a
    client that opted in."""
    while True:
        await asyncio.sleep(period_s)
        await wire.send(omni_heartbeat())
