"""The model owner: lane threads that run every torch step, so the event loop never blocks on torch.

Owns: the shared `Omni` bundle and the step scheduler. Connections submit small steps (one unit
prefill, one `next()` of a reply generator: one 3-token LLM call plus at most one 25-frame TTS
step) and await them. Steps are served earliest-deadline-first: a reply step's deadline is the
moment its listener would run out of audio, a prefill's is "now", so under load the session whose
playback is about to starve goes first instead of whoever queued first. Does not own: per-session
state (each connection's `omni.session.Session`), protocol, media.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time
from dataclasses import dataclass, field

import torch

_DONE = object()
_STOP = object()


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
    """`lanes` threads pull the most urgent step; one session never has two steps in flight
    (see SessionLane), so sessions run in parallel while each one's steps stay ordered."""

    def __init__(self, omni, lanes: int = 1, clock_s=time.monotonic):
        self.omni = omni
        self.stats = WorkerStats()
        self.lanes = lanes
        self.clock_s = clock_s
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        if lanes > 1:
            torch.set_num_threads(1)   # process-wide: each lane is one core
        self._threads = [threading.Thread(target=self._lane, name=f"omni-model_{i}", daemon=True)
                         for i in range(lanes)]
        for t in self._threads:
            t.start()

    async def run(self, kind: str, fn, *args, deadline_s: float | None = None):
        """Run `fn(*args)` on a lane, most urgent `deadline_s` (clock seconds) first; default now."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = self.clock_s() if deadline_s is None else deadline_s
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), (kind, fn, args, loop, fut)))
            self._cv.notify()
        return await fut

    async def next(self, kind: str, iterator, deadline_s: float | None = None):
        """One `next()` of a generator on a lane; `None` when it is exhausted."""
        item = await self.run(kind, next, iterator, _DONE, deadline_s=deadline_s)
        return None if item is _DONE else item

    def for_session(self) -> "SessionLane":
        return SessionLane(self)

    def _lane(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                job = heapq.heappop(self._heap)[2]
            if job is _STOP:
                return
            kind, fn, args, loop, fut = job
            t = time.perf_counter()
            try:
                result, error = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, e
            self.stats.add(kind, time.perf_counter() - t)
            try:
                loop.call_soon_threadsafe(_settle, fut, result, error)
            except RuntimeError:        # the caller's loop is gone (shutdown): nobody waits
                pass

    def close(self, timeout_s: float = 10.0) -> None:
        """Drop queued steps, stop the lanes and wait for the step in flight, so no lane is inside
        torch while the interpreter shuts down."""
        with self._cv:
            self._heap = [(float("inf"), next(self._seq), _STOP) for _ in self._threads]
            self._cv.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout_s)


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class SessionLane:
    """The worker as one session sees it: its steps run strictly one after another (the engine's
    state is not thread-safe, and a reply step and a unit prefill of the same session may be
    submitted by two coroutines), while other sessions' steps run on the other lanes."""

    def __init__(self, worker: ModelWorker):
        self.worker = worker
        self.omni = worker.omni
        self._lock = asyncio.Lock()

    async def run(self, kind: str, fn, *args, deadline_s: float | None = None):
        async with self._lock:
            return await self.worker.run(kind, fn, *args, deadline_s=deadline_s)

    async def next(self, kind: str, iterator, deadline_s: float | None = None):
        async with self._lock:
            return await self.worker.next(kind, iterator, deadline_s=deadline_s)
