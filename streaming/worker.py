"""The model owner: one thread that runs every torch step, so the event loop never blocks on torch.

Owns: the shared `Omni` bundle and a single-thread executor. Connections submit small steps (one
unit prefill, one `next()` of a reply generator: one 3-token LLM call plus at most one 25-frame TTS
step) and await them; the FIFO queue of the executor interleaves sessions step by step, so a step
of one session never waits for more than the steps already queued by others. Does not own:
per-session state (each connection's `omni.session.Session`), protocol, media.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import time
from dataclasses import dataclass, field

import torch

_DONE = object()


@dataclass
class WorkerStats:
    steps: int = 0
    busy_s: float = 0.0
    step_ms_by_kind: dict = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.steps += 1
        self.busy_s += seconds
        self.step_ms_by_kind.setdefault(kind, []).append(seconds * 1000)
        if len(self.step_ms_by_kind[kind]) > 1000:     # bounded: keep the recent window only
            del self.step_ms_by_kind[kind][:500]


def auto_lanes(device: str) -> int:
    """Parallel step lanes: on a CPU, one per core with single-threaded torch ops (small tiny-model
    ops scale better across sessions than inside one op); on a GPU one lane (kernels serialise)."""
    if device.startswith("cpu"):
        return max(1, min(4, os.cpu_count() or 1))
    return 1


class ModelWorker:
    """`lanes` threads run steps; one session never has two steps in flight (each awaits its
    own), so sessions run in parallel while each one's steps stay ordered."""

    def __init__(self, omni, lanes: int = 1):
        self.omni = omni
        self.stats = WorkerStats()
        self.lanes = lanes
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="omni-model")
        if lanes > 1:
            torch.set_num_threads(1)   # process-wide: each lane is one core

    async def run(self, kind: str, fn, *args, **kwargs):
        """Run `fn(*args, **kwargs)` on the model thread; returns its result (exceptions propagate)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(self._timed, kind, fn, *args, **kwargs)
        return await loop.run_in_executor(self._pool, call)

    async def next(self, kind: str, iterator):
        """One `next()` of a generator on the model thread; `None` when it is exhausted."""
        item = await self.run(kind, next, iterator, _DONE)
        return None if item is _DONE else item

    def for_session(self) -> "SessionLane":
        return SessionLane(self)

    def _timed(self, kind, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.stats.add(kind, time.perf_counter() - t)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class SessionLane:
    """The worker as one session sees it: its steps run strictly one after another (the engine's
    state is not thread-safe, and a reply step and a unit prefill of the same session may be
    submitted by two coroutines), while other sessions' steps run on the other lanes."""

    def __init__(self, worker: ModelWorker):
        self.worker = worker
        self.omni = worker.omni
        self._lock = asyncio.Lock()

    async def run(self, kind: str, fn, *args, **kwargs):
        async with self._lock:
            return await self.worker.run(kind, fn, *args, **kwargs)

    async def next(self, kind: str, iterator):
        async with self._lock:
            return await self.worker.next(kind, iterator)
