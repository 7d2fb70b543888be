"""`EngineHandle`: one conversation's engine session as the event loop sees it, wherever it lives.

Owns: the commands a conversation sends its session (system prompt, prefill, unit, rollback,
start a reply, reply step; `omni.batch.engine.COMMANDS`), their order (one command of a session in
flight at a time: a reply step and a unit prefill may be submitted by two coroutines), how a reply
ends (`last_reply_end`), and turning a full context into a typed error. Does not own: scheduling
and the session state (the batch engine that holds the session, in this process or a model
process), protocol.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable

import numpy as np

from omni.model.pool import ContextFull
from omni.session.engine import GenerateOptions, InputTooLong

from ..errors import MediaError

# call(command, *args, deadline_s=...) -> awaitable result, run by the engine that holds the session.
Call = Callable[..., Awaitable]


class EngineHandle:
    """Async facade over one session: `await h.append_unit(audio, frame)`, `await h.reply_step(t)`."""

    def __init__(
        self, call: Call, close: Callable[[], None], local: Callable[[], object] | None = None, where: str = "local"
    ):
        self._call, self._close, self._local = call, close, local
        self.where = where  # the engine holding the session (a lane or replica name)
        self._lock = asyncio.Lock()
        self.last_reply_end: str | None = None  # "eos" | "max_tokens" | "max_speech" once a reply ended
        # (context tokens before the reply, tokens sampled so far) as of the latest reply step
        self.reply_usage: tuple[int, int] | None = None
        self.closed = False
        self.on_step: Callable[[str, float], None] | None = None  # (command, seconds) of each one run
        self.lost = asyncio.Event()  # the engine lost the session (its process died)
        self.lost_error: BaseException | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def lose(self, error: BaseException) -> None:
        """The session is gone with its engine (any thread): every later command raises `error`,
        and `lost` is set so the transport can close the connection at once."""
        self.lost_error = error
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self.lost.set)
            except RuntimeError:  # the loop is closed: nobody waits
                pass
        else:
            self.lost.set()

    @property
    def session(self):
        """The engine's `omni.session.engine.Session` when it lives in this process (tests), else None."""
        return self._local() if self._local else None

    async def _run(self, op: str, *args, deadline_s: float | None = None):
        if self.closed:
            raise RuntimeError("the session's engine is closed")
        if self.lost_error is not None:
            raise self.lost_error
        async with self._lock:
            t = time.perf_counter()
            try:
                return await self._call(op, *args, deadline_s=deadline_s)
            except ContextFull as e:
                raise MediaError("context_full", str(e)) from None
            except InputTooLong as e:
                raise MediaError("item_too_large", str(e)) from None
            finally:
                if self.on_step is not None:
                    self.on_step(op, time.perf_counter() - t)

    async def set_system(
        self,
        seed: int | None,
        mode: str,
        ref: np.ndarray | None,
        text: str | None,
        tools: str = "",
        deadline_s: float | None = None,
    ) -> None:
        """`tools`: the `# Tools` section at the system turn's end (omni.tools.prompt);
        `deadline_s` (here and for `prefill`, `start_reply`): when it is due; None: now."""
        await self._run("system", seed, mode, ref, text, tools, deadline_s=deadline_s)

    async def prefill(self, msg: dict, max_tokens: int | None = None, deadline_s: float | None = None) -> None:
        """A whole message; one that tokenizes longer than `max_tokens` is item_too_large."""
        await self._run("prefill", msg, max_tokens, deadline_s=deadline_s)

    async def append_unit(self, audio_16k: np.ndarray, frame=None) -> None:
        await self._run("unit", audio_16k, frame)

    async def append_frame(self, image, t_s: float, pack_frames: int, origin_s: float | None = None) -> None:
        """MiniCPM-V 4.5: a camera frame captured at `t_s` s, prefilled with its pack (omni.session.v45)."""
        await self._run("frame", image, t_s, pack_frames, origin_s)

    async def cut_reply(self, chars: int | None) -> None:
        """MiniCPM-V 4.5: the latest reply keeps its first `chars` characters (those delivered)."""
        await self._run("cut", chars)

    async def interrupt_ms(self, heard_ms: float) -> None:
        await self._run("rollback", heard_ms)

    async def forget_reply(self) -> None:
        """Take the latest reply out of the context (it was deleted before anything followed it)."""
        await self._run("forget")

    async def start_reply(self, opts: GenerateOptions, deadline_s: float | None = None) -> None:
        self.last_reply_end, self.reply_usage = None, None
        await self._run("generate", opts, deadline_s=deadline_s)

    async def reply_step(self, deadline_s: float | None = None) -> tuple | None:
        """Every piece of the reply produced since the last call, merged (waiting for one if there
        is none yet): (text, wav), or (text, wav, calls) when it wrote tool calls; None once the
        reply is over. `deadline_s`: when the listener runs out of audio. The engine answers
        (text, wav, calls, usage) or (None, end, usage): the reply's token counts (`reply_usage`)."""
        item = await self._run("reply_step", deadline_s=deadline_s)
        if item[0] is None:
            self.last_reply_end = item[1]
            if len(item) > 2 and item[2] is not None:
                self.reply_usage = tuple(item[2])
            return None
        text, wav, *rest = item
        calls = rest[0] if rest else ()
        if len(rest) > 1 and rest[1] is not None:
            self.reply_usage = tuple(rest[1])
        return (text, wav, calls) if calls else (text, wav)

    def close(self) -> None:
        """Free the session on its engine (after its last command); idempotent."""
        if not self.closed:
            self.closed = True
            self._close()
