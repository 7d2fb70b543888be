"""The model owner: batch engines on their own threads, so the event loop never blocks on torch.

Owns: `EngineWorker` (one or more `omni.batch.BatchEngine`s in this process, each on a thread,
sharing the read-only model), how many sessions an engine holds (`EngineSpec`, from the settings
and the memory there is), and the bridge from an engine's `done` callbacks to asyncio futures.
A connection's `EngineHandle` sends its commands (a unit prefill, a reply step with the moment its
listener would run out of audio as the deadline); the engine batches every session's model work
and serves the most urgent first. Does not own: per-session state (in the engine), protocol, media.

`procs.ProcessWorker` runs the same engines in model processes (the default on a multi-core CPU,
where one interpreter's GIL caps what the tiny model's many small ops can use).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
from dataclasses import dataclass

import torch

from omni.batch.engine import BatchEngine, EngineFull, slot_bytes

from ..errors import CapacityError
from .handle import EngineHandle

log = logging.getLogger("omni.worker")
TURN_ROOM_TOKENS = 1024  # a slot's room over the context budget and a reply: one turn's growth
CUDA_ACTIVATION_RESERVE_GB = 2.0  # kept free on a GPU for activations and CUDA graphs
CPU_MEMORY_SHARE = 0.5  # of physical memory at most for the KV pools on a CPU
BACKGROUND_SLOTS = 1  # per engine, over `slots`: room for a user transcript when every
# conversation slot is taken (streaming/session/transcribe.py)


def settle(loop, fut, result, error: BaseException | None) -> None:
    """Hand a result to the awaiting coroutine (from any thread)."""
    try:
        loop.call_soon_threadsafe(_settle, fut, result, error)
    except RuntimeError:  # the caller's loop is gone (shutdown): nobody waits
        pass


def _settle(fut: asyncio.Future, result, error) -> None:
    if fut.cancelled():
        return
    if error is not None:
        # The engine thread's traceback holds its command (args, this future): a cycle that kept
        # camera frames until the cyclic GC ran. The engine logged what was unexpected already.
        fut.set_exception(error.with_traceback(None))
    else:
        fut.set_result(result)


@dataclass(frozen=True)
class EngineSpec:
    """What each engine is built with (plain data: it crosses to model processes)."""

    max_sessions: int  # the server's cap, over all engines
    lanes: int
    slot_tokens: int
    max_batch: int = 32
    reply_reserve_tokens: int = 0
    kv_cache_gb: float = 0.0  # per engine; 0 = auto
    cuda_graphs: bool = True

    @classmethod
    def from_settings(cls, s) -> "EngineSpec":
        return cls(
            s.max_sessions,
            s.lanes,
            s.max_context_tokens + s.max_reply_tokens + TURN_ROOM_TOKENS,
            s.max_batch,
            s.max_reply_tokens + 16,
            s.kv_cache_gb,
            s.cuda_graphs,
        )

    def slots(self, omni) -> int:
        """Sessions one engine holds: its share of max_sessions, within the memory for its pools."""
        want = math.ceil(self.max_sessions / self.lanes)
        per_slot = slot_bytes(omni, self.slot_tokens)
        if self.kv_cache_gb > 0:
            budget = self.kv_cache_gb * 2**30
        elif omni.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(omni.device)
            budget = 0.9 * free - CUDA_ACTIVATION_RESERVE_GB * 2**30
        else:
            budget = CPU_MEMORY_SHARE * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / self.lanes
        fits = int(budget // per_slot) - BACKGROUND_SLOTS  # the budget holds the background slot too
        if fits < want:
            log.warning(
                "KV pools: %d of %d sessions fit per engine (%.0f MB each, %.1f GB for the pools)",
                max(fits, 1),
                want,
                per_slot / 2**20,
                budget / 2**30,
            )
        return max(1, min(want, fits))

    def engine(self, omni) -> BatchEngine:
        return BatchEngine(
            omni,
            self.slots(omni),
            self.slot_tokens,
            self.max_batch,
            self.reply_reserve_tokens,
            cuda_graphs=self.cuda_graphs,
            background_slots=BACKGROUND_SLOTS,
        )


def engine_call(engine: BatchEngine, sid: int):
    """An `EngineHandle` call for session `sid`: submit the command, await its `done`."""

    async def call(op: str, *args, deadline_s: float | None = None):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        engine.submit(sid, op, args, deadline_s, lambda result, error, fut=fut: settle(loop, fut, result, error))
        try:
            return await fut
        finally:
            del fut, args  # the future holds the error, whose traceback holds this frame: a cycle

    return call


PROBE_TIMEOUT_S = 10.0


async def probe(call, name: str, timeout_s: float) -> dict:
    """Readiness of one engine: a one-token LLM step run by it now (`probe` command)."""
    try:
        async with asyncio.timeout(timeout_s):
            seconds = await call("probe")
        return {"replica": name, "ready": True, "probe_ms": round(1000 * seconds, 1)}
    except Exception as e:  # noqa: BLE001 - not ready, and why
        return {"replica": name, "ready": False, "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__}


def full_error(capacity: int) -> CapacityError:
    return CapacityError(
        "server_busy", f"server full: all {capacity} session slots of the model are in use; try again later"
    )


class EngineWorker:
    """`lanes` batch engines in this process, one thread each; a session opens on the engine with
    the most free slots."""

    kind = "threads"

    def __init__(self, omni, spec: EngineSpec, torch_threads: int | None = None):
        """`torch_threads`: intra-op threads per engine thread (None: one each when there are
        several engines, else this thread's count: all cores unless set)."""
        self.spec = spec
        self.engines = [spec.engine(omni) for _ in range(spec.lanes)]
        threads = torch_threads or (1 if spec.lanes > 1 else torch.get_num_threads())
        self._threads = [
            threading.Thread(target=self._serve, args=(e, threads), name=f"omni-engine_{i}", daemon=True)
            for i, e in enumerate(self.engines)
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _serve(engine: BatchEngine, threads: int) -> None:
        torch.set_num_threads(threads)  # per thread: the engine's own OpenMP team, this size
        engine.run_forever()

    @property
    def lanes(self) -> int:
        return len(self.engines)

    @property
    def capacity(self) -> int:
        return sum(e.slots for e in self.engines)

    def open_session(self, max_cache_tokens: int | None = None, background: bool = False) -> EngineHandle:
        engine = max(self.engines, key=lambda e: e.free_slots)
        try:
            sid = engine.open(max_cache_tokens, background)
        except EngineFull:
            raise full_error(self.capacity) from None
        local = lambda: getattr(engine._sessions.get(sid), "session", None)  # noqa: E731 - tests look inside
        return EngineHandle(
            engine_call(engine, sid), lambda: engine.close(sid), local, where=f"engine-{self.engines.index(engine)}"
        )

    async def stats(self) -> list[dict]:
        return [
            {
                "replica": f"engine-{i}",
                "sessions": e.slots - e.free_slots,
                "slots": e.slots,
                "queue_depth": e.queue_depth,
                **e.stats.as_dict(),
            }
            for i, e in enumerate(self.engines)
        ]

    async def ready(self, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
        """Per engine: did a real model step (a probe, after what is queued) finish in time."""
        return list(
            await asyncio.gather(
                *[probe(engine_call(e, 0), f"engine-{i}", timeout_s) for i, e in enumerate(self.engines)]
            )
        )

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the engines (queued commands fail) and wait for the batch in flight, so no thread
        is inside torch while the interpreter shuts down."""
        for e in self.engines:
            e.stop()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout_s)
