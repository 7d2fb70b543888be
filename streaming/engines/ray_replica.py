"""The Ray actor that `RayWorker` (rayworker.py) places sessions on: one `BatchEngine` on its own
thread, the sessions each gateway opened on it, and the leases that close a dead gateway's sessions.
Commands arrive as plain data and errors go back as values (`("err", exception)`)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

from ..errors import ModelError
from .worker import EngineSpec

log = logging.getLogger("omni.ray")


def replica_name(i: int) -> str:
    return f"omni-replica-{i}"


class _ReplicaImpl:
    """The actor's body (`Replica` is this class under `ray.remote`, made when ray is imported)."""

    def __init__(
        self,
        index: int,
        checkpoint: str,
        dtype: str,
        device: str,
        spec: EngineSpec,
        lease_s: float,
        quantize: str | None = None,
    ):
        import torch

        from omni.loader import load

        if device.startswith("cpu"):
            torch.set_num_threads(1)  # one core per replica (num_cpus=1): no oversubscription
        omni = load(checkpoint, dtype=getattr(torch, dtype), device=device, progress=False, quantize=quantize)
        self.index, self.lease_s = index, lease_s
        self.incarnation = uuid.uuid4().hex[:12]
        self.engine = spec.engine(omni)
        self.owners: dict[int, str] = {}  # session id -> the gateway that opened it
        self.seen: dict[str, float] = {}  # gateway -> last heartbeat (monotonic)
        self.lock = threading.Lock()
        threading.Thread(target=self.engine.run_forever, name="omni-engine", daemon=True).start()
        threading.Thread(target=self._reap, name="omni-lease-reaper", daemon=True).start()

    # ---- called by gateways ---------------------------------------------------------------------
    async def open(self, gateway: str, max_cache_tokens: int | None, background: bool = False):
        """(incarnation, session id), or None when every slot is taken."""
        from omni.batch.engine import EngineFull

        with self.lock:
            self.seen[gateway] = time.monotonic()
            try:
                sid = self.engine.open(max_cache_tokens, background)
            except EngineFull:
                return None
            self.owners[sid] = gateway
        return self.incarnation, sid

    async def call(self, incarnation: str, sid: int, op: str, args: tuple, deadline_in_s: float | None):
        """("ok", result) or ("err", exception): a command of an open session."""
        from .model_process import _portable

        if incarnation != self.incarnation or sid not in self.owners:
            return "err", ModelError(
                "model_process_died",
                f"session {sid} is not open on {replica_name(self.index)} "
                "(the replica was restarted); reconnect to start a new session",
            )
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(result, error):
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result((result, error)))

        deadline = None if deadline_in_s is None else self.engine.clock_s() + deadline_in_s
        self.engine.submit(sid, op, args, deadline, done)
        result, error = await fut
        return ("ok", result) if error is None else ("err", _portable(error))

    async def close(self, incarnation: str, sid: int) -> None:
        with self.lock:
            if incarnation == self.incarnation and self.owners.pop(sid, None) is not None:
                self.engine.close(sid)

    async def heartbeat(self, gateway: str) -> dict:
        with self.lock:
            self.seen[gateway] = time.monotonic()
            mine = sum(g == gateway for g in self.owners.values())
        return {
            "incarnation": self.incarnation,
            "slots": self.engine.slots,
            "free": self.engine.free_slots,
            "sessions_of_gateway": mine,
        }

    async def stats(self) -> dict:
        import resource

        return {
            "sessions": self.engine.slots - self.engine.free_slots,
            "slots": self.engine.slots,
            "queue_depth": self.engine.queue_depth,
            "incarnation": self.incarnation,
            **self.engine.stats.as_dict(),
            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }

    async def probe(self) -> float:
        """Seconds of one real model step (readiness)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def done(result, error) -> None:
            loop.call_soon_threadsafe(fut.set_result, (result, error))

        self.engine.submit(0, "probe", (), None, done)
        seconds, error = await fut
        if error is not None:
            raise error
        return seconds

    def pid(self) -> int:
        import os

        return os.getpid()

    # ---- leases -------------------------------------------------------------------------------------
    def _reap(self) -> None:
        """Close the sessions of gateways whose heartbeat stopped (they died)."""
        while True:
            time.sleep(min(1.0, self.lease_s / 4))
            now = time.monotonic()
            with self.lock:
                gone = {g for g, t in self.seen.items() if now - t > self.lease_s}
                orphans = [sid for sid, g in self.owners.items() if g in gone]
                for sid in orphans:
                    del self.owners[sid]
                    self.engine.close(sid)
                for g in gone:
                    del self.seen[g]
            if orphans:
                log.warning(
                    "replica %d: closed %d session(s) of gateway(s) %s (no heartbeat for %.0f s)",
                    self.index,
                    len(orphans),
                    sorted(gone),
                    self.lease_s,
                )


_REPLICA = None


def replica_class():
    """`_ReplicaImpl` as a Ray actor class (made once: importing ray is optional)."""
    global _REPLICA
    if _REPLICA is None:
        import ray

        _REPLICA = ray.remote(_ReplicaImpl)
    return _REPLICA
