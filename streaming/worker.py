"""The model owner: lanes that run every torch step, so the event loop never blocks on torch.

Owns: the step scheduler and, for `ModelWorker`, the shared `Omni` bundle. Connections submit
small steps through their `EngineHandle` (one unit prefill, one bounded reply step: one 3-token LLM
call plus at most one 25-frame TTS step) and await them. Steps are served earliest-deadline-first:
a reply step's deadline is the moment its listener would run out of audio, a prefill's is "now",
so under load the session whose playback is about to starve goes first instead of whoever queued
first. Does not own: per-session state (each session's `omni.session.Session`), protocol, media.

Two workers share this queue: `ModelWorker` (lane threads in this process; tests, GPUs) and
`procs.ProcessWorker` (one model process per lane; the default on a multi-core CPU).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import os
import threading
import time

import torch

from .handle import OPS, EngineHandle, _open

STOP = object()


class DeadlineQueue:
    """Thread-safe queue of (loop, future, payload) jobs, most urgent deadline first (FIFO on ties)."""

    def __init__(self, clock_s=time.monotonic):
        self.clock_s = clock_s
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()

    def submit(self, payload, deadline_s: float | None = None) -> asyncio.Future:
        """Queue `payload`; the returned future (on the running loop) gets the lane's result."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.put(payload, deadline_s, loop, fut)
        return fut

    def put(self, payload, deadline_s: float | None = None, loop=None, fut=None) -> None:
        """Queue without a waiter (loop/fut None): fire and forget."""
        deadline = self.clock_s() if deadline_s is None else deadline_s
        with self._cv:
            heapq.heappush(self._heap, (deadline, next(self._seq), (payload, loop, fut)))
            self._cv.notify()

    def pop(self):
        """Block until a job is due: (payload, loop, fut), or STOP."""
        with self._cv:
            while not self._heap:
                self._cv.wait()
            return heapq.heappop(self._heap)[2]

    def stop(self, lanes: int) -> list:
        """Replace every queued job by `lanes` STOPs; returns the dropped jobs."""
        with self._cv:
            dropped = [job for _, _, job in self._heap]
            self._heap = [(float("inf"), next(self._seq), STOP) for _ in range(lanes)]
            self._cv.notify_all()
        return [j for j in dropped if j is not STOP]


def settle(loop, fut, result, error: BaseException | None) -> None:
    """Hand a lane's result to the awaiting coroutine (from any thread)."""
    if fut is None:
        return
    try:
        loop.call_soon_threadsafe(_settle, fut, result, error)
    except RuntimeError:        # the caller's loop is gone (shutdown): nobody waits
        pass


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def auto_lanes(device: str) -> int:
    """Parallel step lanes: on a CPU, one per core with single-threaded torch ops (small tiny-model
    ops scale better across sessions than inside one op); on a GPU one lane (kernels serialise)."""
    if device.startswith("cpu"):
        return max(1, min(4, os.cpu_count() or 1))
    return 1


class ModelWorker:
    """`lanes` threads in this process pull the most urgent step; one session never has two steps
    in flight (EngineHandle), so sessions run in parallel while each one's steps stay ordered.

    Threads share the interpreter: the tiny model's many small ops contend for the GIL, so on this
    2-core CPU two lanes give about 1.3x one lane; `procs.ProcessWorker` gives 2x."""

    kind = "threads"

    def __init__(self, omni, lanes: int = 1, clock_s=time.monotonic):
        self.omni = omni
        self.lanes = lanes
        self.queue = DeadlineQueue(clock_s)
        self._threads = [threading.Thread(target=self._lane, name=f"omni-model_{i}", daemon=True)
                         for i in range(lanes)]
        for t in self._threads:
            t.start()

    async def run(self, fn, *args, deadline_s: float | None = None):
        """Run `fn(*args)` on a lane, most urgent `deadline_s` (clock seconds) first; default now."""
        return await self.queue.submit((fn, args), deadline_s)

    def open_session(self, max_cache_tokens: int | None = None) -> EngineHandle:
        """A new engine session in this process; its steps run on the lanes (see EngineHandle)."""
        session = _open(self.omni, max_cache_tokens)

        async def call(op: str, *args, deadline_s: float | None = None):
            return await self.run(OPS[op], session, *args, deadline_s=deadline_s)
        return EngineHandle(call, close=lambda: None, session=session)   # freed with the handle

    def _lane(self) -> None:
        if self.lanes > 1:
            torch.set_num_threads(1)   # the intra-op setting is per thread: without this, every
            #                            lane's GEMMs spread over all cores and the lanes fight
        while True:
            job = self.queue.pop()
            if job is STOP:
                return
            (fn, args), loop, fut = job
            try:
                result, error = fn(*args), None
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting coroutine
                result, error = None, e
            settle(loop, fut, result, error)

    def close(self, timeout_s: float = 10.0) -> None:
        """Drop queued steps, stop the lanes and wait for the step in flight, so no lane is inside
        torch while the interpreter shuts down."""
        for _, loop, fut in self.queue.stop(len(self._threads)):
            settle(loop, fut, None, RuntimeError("the model worker closed"))
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout_s)
