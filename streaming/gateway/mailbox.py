"""A connection's one owner task: client messages, media from the WebRTC tracks and the
conversation's own follow-up work (its `post`) are handled here one at a time, in arrival order,
so the conversation's state (session/state.py) is only ever changed by this task.

Producers that can wait (the WebSocket reader, the microphone and camera readers) hold one of
BACKLOG slots per queued item, so a slow model backs them up instead of growing the queue; the
data channel's callback cannot wait (SCTP's receive window bounds it) and follow-ups are few.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .boundary import dispatch, guard

BACKLOG = 64  # queued messages / media chunks a waiting producer may be ahead by
_MESSAGE, _WORK, _STOP = range(3)


class Mailbox:
    def __init__(self, inbound, send, max_bytes: int, fragments=None, state=None) -> None:
        """`inbound` (inbound.Inbound) decodes messages for the conversation; `send` takes error
        events; `fragments` joins data-channel pieces (fragments.Reassembler); `state` is the
        conversation's (session/state.ConnectionState), which `run` claims for its task."""
        self.inbound, self.send, self.max_bytes, self.fragments = inbound, send, max_bytes, fragments
        self.state = state
        self._queue: asyncio.Queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(BACKLOG)

    async def message(self, raw: str | bytes) -> None:
        await self._slots.acquire()
        self._queue.put_nowait((_MESSAGE, raw, True))

    def message_nowait(self, raw: str | bytes) -> None:
        self._queue.put_nowait((_MESSAGE, raw, False))

    async def media(self, work: Callable[[], Awaitable[None]]) -> None:
        """A track reader's decoded media, as the call that hands it to the conversation."""
        await self._slots.acquire()
        self._queue.put_nowait((_WORK, work, True))

    def post(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        """The conversation's follow-up (session/conversation.Post): after what is queued."""
        self._queue.put_nowait((_WORK, work, False))

    def stop(self) -> None:
        """End `run` after what is queued so far."""
        self._queue.put_nowait((_STOP, None, False))

    async def run(self) -> int | None:
        """Handle everything in order until `stop`; returns a close code when an error ends the
        connection (auth, capacity, a lost model), None after `stop`."""
        if self.state is not None:
            self.state.owner = asyncio.current_task()  # no other task may change it now
        while True:
            kind, item, slot = await self._queue.get()
            if slot:
                self._slots.release()
            if kind == _STOP:
                return None
            if kind == _MESSAGE:
                code = await dispatch(self.inbound, item, self.send, self.max_bytes, self.fragments)
            else:
                code = await guard(item(), self.send)
            if code is not None:
                return code
