"""The one place where a client message meets the conversation and exceptions become `error`
events (STYLE §12). Both transports (WebSocket frames, WebRTC data-channel messages) call
`dispatch`, WebRTC media goes through `guard`; a bad message costs an error event, never the
session or the server."""

from __future__ import annotations

import asyncio
import logging

from .errors import OmniError, close_code, to_error_event
from .protocol import parse_client_event

log = logging.getLogger("omni.gateway")


async def dispatch(inbound, raw: str | bytes, send, max_bytes: int, fragments=None) -> int | None:
    """Parse and handle one client message (`inbound`: the connection's inbound.Inbound, which
    decodes it for the session); returns a close code when the connection must end.
    `fragments` (a fragments.Reassembler, on the data channel) joins `omni.fragment` pieces first."""
    event_id = None
    try:
        if fragments is not None:
            raw = fragments.push(raw)
            if raw is None:  # a piece of a larger message: nothing to handle yet
                return None
        ev = parse_client_event(raw, max_bytes)
        event_id = ev.event_id
        await inbound.handle(ev)
    except Exception as e:  # noqa: BLE001 - this is the boundary
        return await _report_and_code(send, e, event_id)
    return None


async def guard(awaitable, send) -> int | None:
    """Await media handling (a WebRTC microphone frame); errors as in `dispatch`."""
    try:
        await awaitable
    except Exception as e:  # noqa: BLE001 - this is the boundary
        return await _report_and_code(send, e, None)
    return None


async def _report_and_code(send, e: Exception, event_id: str | None) -> int | None:
    await send(to_error_event(e, event_id))
    # Typed errors say whether to close (auth, capacity, model); anything unexpected is
    # reported and the session goes on, so one bad message never ends a conversation.
    return close_code(e) if isinstance(e, OmniError) else None


class Supervisor:
    """A connection's background tasks (a session's `Spawn`, session/tasks.py): each runs in the
    connection's task group, and what it raises is reported here like a failed message; an error
    that ends the session (a typed close code) calls `close(code)`. `cancel_all` at the end.

    Once the connection is closing (`cancel_all`, or a task group that is shutting down because
    a task failed) nothing new starts: `spawn` closes the coroutine unrun and returns None, and
    the session starts no reply (session/tasks.py)."""

    def __init__(self, group: asyncio.TaskGroup, send, close) -> None:
        self.group, self.send, self.close = group, send, close
        self.tasks: set[asyncio.Task] = set()
        self.closing = False

    def spawn(self, coro, name: str) -> asyncio.Task | None:
        if self.closing:
            coro.close()
            return None
        guarded = self._guarded(coro)
        try:
            task = self.group.create_task(guarded, name=name)
        except RuntimeError:  # the group is shutting down (a task of it failed): so is the connection
            self.closing = True
            guarded.close()
            coro.close()
            return None
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        # A task cancelled before its first step (the connection closed at once) never ran
        # `_guarded`, so nobody awaited `coro`: close it (a no-op once it ran).
        task.add_done_callback(lambda _t: coro.close())
        return task

    async def _guarded(self, coro) -> None:
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - this is the boundary for background work
            code = await _report_and_code(self.send, e, None)
            if code is not None:
                await self.close(code)

    def cancel_all(self) -> None:
        self.closing = True
        for task in list(self.tasks):
            task.cancel()
