"""`EngineHandle`: one conversation's engine `Session` as the event loop sees it, wherever it lives.

Owns: the operations a conversation runs on its session (`OPS`, plain functions of a `Session`, so
the same code runs in a lane thread of this process or inside a model process), their order (one
step of a session in flight at a time: the engine's state is not thread-safe, and a reply step and
a unit prefill may be submitted by two coroutines), and how a reply ends (`last_reply_end`).
Does not own: scheduling (the worker's `call`: earliest deadline first on a lane), the session
state itself (`omni.session.Session`), protocol.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import numpy as np

from omni.session.engine import GenerateOptions, Session


def _open(omni, max_cache_tokens: int | None) -> Session:
    return Session(omni, seed=None, max_cache_tokens=max_cache_tokens)


def _system(s: Session, seed: int | None, mode: str, ref: np.ndarray | None, text: str | None) -> None:
    s.seed = seed                         # a seed takes effect from the context start below
    s.set_system(mode, ref, text)


def _prefill(s: Session, msg: dict) -> None:
    s.prefill(msg)


def _unit(s: Session, audio_16k: np.ndarray, frame) -> None:
    s.append_unit(audio_16k, frame)


def _rollback(s: Session, heard_ms: float) -> None:
    s.interrupt_ms(heard_ms)


def _generate(s: Session, opts: GenerateOptions) -> None:
    s.generate(opts)                      # the session keeps the generator (reply_step)


def _step(s: Session):
    """(text, wav), or (None, why it ended): a remote caller learns the end reason with the last step."""
    item = s.reply_step()
    return (None, s.last_reply_end) if item is None else item


# Results are dropped (None) except reply steps: nothing else crosses a process boundary.
OPS: dict[str, Callable] = {"system": _system, "prefill": _prefill, "unit": _unit, "rollback": _rollback,
                            "generate": _generate, "reply_step": _step}

# call(op name, *args, deadline_s=...) -> awaitable result, run by the worker that owns the session.
Call = Callable[..., Awaitable]


class EngineHandle:
    """Async facade over one session: `await h.append_unit(audio, frame)`, `await h.reply_step(t)`."""

    def __init__(self, call: Call, close: Callable[[], None], session: Session | None = None):
        self._call, self._close = call, close
        self.session = session                   # the engine session when it lives in this process
        self._lock = asyncio.Lock()
        self.last_reply_end: str | None = None   # "eos" | "max_tokens" | "max_speech" once a reply ended
        self.closed = False

    async def _run(self, op: str, *args, deadline_s: float | None = None):
        if self.closed:
            raise RuntimeError("the session's engine is closed")
        async with self._lock:
            return await self._call(op, *args, deadline_s=deadline_s)

    async def set_system(self, seed: int | None, mode: str, ref: np.ndarray | None, text: str | None) -> None:
        await self._run("system", seed, mode, ref, text)

    async def prefill(self, msg: dict) -> None:
        await self._run("prefill", msg)

    async def append_unit(self, audio_16k: np.ndarray, frame=None) -> None:
        await self._run("unit", audio_16k, frame)

    async def interrupt_ms(self, heard_ms: float) -> None:
        await self._run("rollback", heard_ms)

    async def start_reply(self, opts: GenerateOptions) -> None:
        self.last_reply_end = None
        await self._run("generate", opts)

    async def reply_step(self, deadline_s: float | None = None) -> tuple[str, np.ndarray] | None:
        """One bounded step of the reply (see GenerateOptions.step_yields); None once it is over."""
        item = await self._run("reply_step", deadline_s=deadline_s)
        if item[0] is None:
            self.last_reply_end = item[1]
            return None
        return item

    def close(self) -> None:
        """Free the session on its worker (queued behind its last step); idempotent."""
        if not self.closed:
            self.closed = True
            self._close()
