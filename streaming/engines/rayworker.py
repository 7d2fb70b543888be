"""`RayWorker`: batch-engine replicas as Ray actors, shared by any number of `omni serve` gateways.

Owns the gateway side of the replica actors (ray_replica.py: `Replica`, one `BatchEngine` on its
own thread, one per GPU with `num_gpus=1` or one per CPU core; named `omni-replica-N` in the `omni`
namespace and detached, so every gateway on the cluster finds the same ones and a gateway's exit
does not end them): placing a session on the replica with the most free slots (affinity: every
command of a session goes to the replica that opened it), the heartbeat that keeps this gateway's
lease and learns each replica's free slots, and what a replica's death means for its sessions.

Capacity is the replicas': a replica opens a session only into a free slot, so gateways never
over-admit; a gateway's view of free slots only steers placement, and a lost race shows as
`server_busy` on the session's first command. A gateway that stops heartbeating (it died) loses
its lease after `lease_s`: the replicas close its sessions. A replica that dies is restarted by
Ray (`max_restarts`); its sessions are told at once (`model_process_died`, the connection closes)
and new sessions go to the other replicas meanwhile. Each replica incarnation has its own id, so a
command of a lost session never reaches a new session with a reused number.

Only plain data crosses (command names, numpy audio, PIL frames, results); errors travel as values
and are raised again with their own type. Deadlines cross as seconds from now (replicas on other
machines have other clocks).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

from ..errors import ModelError
from .handle import EngineHandle
from .ray_replica import replica_class, replica_name
from .worker import PROBE_TIMEOUT_S, EngineSpec, full_error, probe

log = logging.getLogger("omni.ray")
NAMESPACE = "omni"
START_TIMEOUT_S = 600.0  # loading a full checkpoint on CPU takes minutes
HEARTBEAT_S = 1.0


def _died(name: str) -> ModelError:
    return ModelError(
        "model_process_died",
        f"The engine replica serving this session ({name}) died and is "
        "being restarted; the conversation's context is lost. Reconnect to start a new session.",
    )


class _Remote:
    """The gateway's view of one replica: its actor, what its heartbeat said, this gateway's sessions."""

    def __init__(self, index: int, actor):
        self.index, self.actor, self.name = index, actor, replica_name(index)
        self.incarnation: str | None = None
        self.slots, self.free, self.alive = 0, 0, False
        self.handles: dict[tuple, EngineHandle] = {}  # (incarnation, sid) -> handle
        self.lock = threading.Lock()


class RayWorker:
    """`replicas` engine replicas on a Ray cluster (a local one when `address` is None)."""

    kind = "ray"

    def __init__(
        self,
        checkpoint: str,
        spec: EngineSpec,
        dtype: str = "float32",
        device: str = "cpu",
        replicas: int = 2,
        address: str | None = None,
        lease_s: float = 10.0,
        max_restarts: int = 5,
        step_timeout_s: float = 60.0,
        quantize: str | None = None,
    ):
        import ray

        self.started_cluster = not ray.is_initialized()
        if self.started_cluster:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        self.spec, self.step_timeout_s, self.gateway = spec, step_timeout_s, f"gw-{uuid.uuid4().hex[:8]}"
        gpu = device.startswith("cuda")
        options = dict(
            namespace=NAMESPACE,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=max_restarts,
            max_task_retries=0,
            num_gpus=1 if gpu else 0,
            num_cpus=0 if gpu else 1,
        )
        cls = replica_class()
        self._remotes = [
            _Remote(
                i,
                cls.options(name=replica_name(i), **options).remote(
                    i, str(checkpoint), dtype, device, spec, lease_s, quantize
                ),
            )
            for i in range(replicas)
        ]
        self._stop = threading.Event()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(r.alive for r in self._remotes):  # every replica loaded
            if time.monotonic() > deadline:
                raise RuntimeError(f"Ray replicas did not load within {START_TIMEOUT_S:.0f} s")
            self._beat()
        self._thread = threading.Thread(target=self._heartbeats, name="omni-ray-heartbeat", daemon=True)
        self._thread.start()

    @property
    def lanes(self) -> int:
        return len(self._remotes)

    @property
    def capacity(self) -> int:
        return sum(r.slots for r in self._remotes)

    # ---- sessions -------------------------------------------------------------------------------------
    def open_session(self, max_cache_tokens: int | None = None, background: bool = False) -> EngineHandle:
        """A session on the live replica with the most free slots (as the last heartbeat said);
        a background one on any live replica (its engine has background slots of its own)."""
        live = sorted((r for r in self._remotes if r.alive and (background or r.free > 0)), key=lambda r: -r.free)
        if not live:
            raise full_error(self.capacity)
        if not background:
            live[0].free -= 1  # until the next heartbeat says
        state: dict = {
            "remote": live[0],
            "opened": live[0].actor.open.remote(self.gateway, max_cache_tokens, background),
        }

        async def open_any() -> None:
            """The first choice, else (another gateway took its last slot) any other with room."""
            tried = []
            while True:
                remote = state["remote"]
                key = await state["opened"]
                tried.append(remote)
                if key is not None:
                    break
                rest = [r for r in live[1:] + [r for r in self._remotes if r not in live] if r not in tried and r.alive]
                if not rest:
                    raise full_error(self.capacity)
                state["remote"], state["opened"] = (
                    rest[0],
                    rest[0].actor.open.remote(self.gateway, max_cache_tokens, background),
                )
            state["key"], handle.where = key, remote.name
            with remote.lock:
                remote.handles[key] = handle
            if remote.incarnation is not None and key[0] != remote.incarnation:
                raise _died(remote.name)

        async def call(op: str, *args, deadline_s: float | None = None):
            if "key" not in state:
                await open_any()
            remote, (incarnation, sid) = state["remote"], state["key"]
            left = None if deadline_s is None else deadline_s - time.monotonic()
            try:
                kind, value = await remote.actor.call.remote(incarnation, sid, op, args, left)
            except Exception as e:  # noqa: BLE001 - the actor died under the call (RayActorError)
                raise _died(remote.name) from e
            if kind == "err":
                try:
                    raise value
                finally:
                    del value, args  # its traceback holds this frame: no cycle keeps the args
            return value

        def close() -> None:
            remote, key = state["remote"], state.get("key")
            if key is None:  # never used: free it once it opened

                async def later():
                    k = await state["opened"]
                    if k is not None:
                        remote.actor.close.remote(*k)

                try:
                    asyncio.get_running_loop().create_task(later())
                except RuntimeError:
                    pass
                return
            with remote.lock:
                remote.handles.pop(key, None)
            if not background:
                remote.free += 1  # this gateway's view, until the next heartbeat
            remote.actor.close.remote(*key)

        handle = EngineHandle(call, close, where=live[0].name)
        return handle

    # ---- heartbeats -------------------------------------------------------------------------------
    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._beat()

    def _beat(self) -> None:
        import ray

        refs = [(r, r.actor.heartbeat.remote(self.gateway)) for r in self._remotes]
        for r, ref in refs:
            try:
                hb = ray.get(ref, timeout=max(HEARTBEAT_S, 5.0) if r.alive else 1.0)
            except Exception as e:  # noqa: BLE001 - dead, restarting or not loaded yet
                if r.alive:
                    log.error(
                        "engine replica %s is not answering (%s): its sessions are lost", r.name, type(e).__name__
                    )
                    self._lose(r)
                r.alive = False
                continue
            if r.incarnation is not None and hb["incarnation"] != r.incarnation:
                log.error("engine replica %s was restarted: its sessions are lost", r.name)
                self._lose(r)
            r.incarnation, r.slots, r.free, r.alive = hb["incarnation"], hb["slots"], hb["free"], True

    def _lose(self, r: _Remote) -> None:
        with r.lock:
            handles, r.handles = list(r.handles.values()), {}
        for h in handles:
            h.lose(_died(r.name))

    # ---- operations -----------------------------------------------------------------------------------
    async def stats(self) -> list[dict]:
        async def one(r: _Remote) -> dict:
            try:
                return {"replica": r.name, **(await asyncio.wait_for(r.actor.stats.remote(), PROBE_TIMEOUT_S))}
            except Exception as e:  # noqa: BLE001 - a replica being restarted
                return {"replica": r.name, "error": type(e).__name__}

        return list(await asyncio.gather(*[one(r) for r in self._remotes]))

    async def ready(self, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
        return list(
            await asyncio.gather(
                *[probe(lambda op, r=r: r.actor.probe.remote(), r.name, timeout_s) for r in self._remotes]
            )
        )

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop heartbeating and close this gateway's sessions on the replicas; the replicas stay
        (they are the cluster's), except when this gateway started the local cluster."""
        import ray

        self._stop.set()
        self._thread.join(timeout_s)
        for r in self._remotes:
            with r.lock:
                keys, r.handles = list(r.handles), {}
            for key in keys:
                r.actor.close.remote(*key)
        if self.started_cluster:
            for r in self._remotes:
                ray.kill(r.actor, no_restart=True)
            ray.shutdown()
