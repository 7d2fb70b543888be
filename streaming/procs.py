"""`ProcessWorker`: one model process per lane, for multi-core CPUs.

Why processes: the tiny model's steps are thousands of small torch ops, and lane threads of one
interpreter contend for the GIL between them; measured on this 2-core machine, two threads give
about 1.3x the reply throughput of one, two processes 2.0x. Each process loads its own copy of the
model (the memory cost: `model_lanes = 1` or `worker = "threads"` avoids it for big checkpoints on
CPU) and owns the sessions placed on it; the parent keeps one earliest-deadline-first queue per
process and a thread that feeds it one step at a time over a pipe, so scheduling is the same as
`ModelWorker`'s. Only plain data crosses: op names, numpy audio, PIL frames, step results.

A process that dies (killed, out of memory) or hangs (no answer to a step within
`model_step_timeout_s`: it is killed) fails its step in flight and is started again; the
sessions it held lost their context: each of their steps then fails with `ModelError`
`model_process_died`, which closes the connection (1011) so the client reconnects to a new session.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import pickle
import signal
import threading
import time

from .gateway.errors import ModelError
from .handle import OPS, EngineHandle, _open
from .worker import STOP, DeadlineQueue, settle

log = logging.getLogger("omni.procs")
START_TIMEOUT_S = 600.0      # loading a full checkpoint on CPU takes minutes


class ModelProcessError(RuntimeError):
    """A model process failed to start, or an error that does not pickle, as text."""


def _died(code) -> ModelError:
    return ModelError("model_process_died", f"The model process serving this session died (exit code "
                      f"{code}) and was restarted; the conversation's context is lost. Reconnect to start "
                      "a new session.")


def _portable(e: BaseException) -> BaseException:
    """The exception itself when it pickles (ValueError, CheckpointError...), else its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any pickling failure
        return ModelProcessError(f"{type(e).__name__}: {e}")


def _child(conn, checkpoint: str, dtype: str, device: str) -> None:
    """A model process: load, then run (session id, op, args) requests one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the parent decides when we stop
    import torch
    from omni.loader import load
    torch.set_num_threads(1)
    try:
        omni = load(checkpoint, dtype=getattr(torch, dtype), device=device, progress=False)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((False, _portable(e)))
        return
    conn.send((True, None))
    sessions = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        sid, op, args = msg
        try:
            if op == "open":
                sessions[sid], result = _open(omni, *args), None
            elif op == "close":
                sessions.pop(sid, None)
                result = None
            elif op == "stats":           # not a session op: what this process holds
                import resource
                result = {"sessions": len(sessions),
                          "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
            elif sid not in sessions:     # the parent stops these first (lost sessions); kept as a guard
                raise ModelProcessError(f"session {sid} is not open in this model process")
            else:
                result = OPS[op](sessions[sid], *args)
            reply = (True, result)
        except Exception as e:  # noqa: BLE001 - handed to the awaiting coroutine
            reply = (False, _portable(e))
        conn.send(reply)


class _Lane:
    """One model process, its queue and the parent thread that feeds it."""

    def __init__(self, index: int, spec: tuple, clock_s, step_timeout_s: float):
        self.index, self.spec, self.step_timeout_s = index, spec, step_timeout_s
        self.queue = DeadlineQueue(clock_s)
        self.sids: set[int] = set()       # sessions living in the process
        self.lost: set[int] = set()       # sessions whose process died
        self.died_code: int | None = None
        self.lock = threading.Lock()      # sids/lost: changed by the event loop and this lane's thread
        self.proc, self.conn = None, None

    def start(self) -> None:
        ctx = mp.get_context("spawn")     # fork would copy the event loop's threads and locks
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child, args=(child, *self.spec), name=f"omni-model-{self.index}",
                                daemon=True)
        self.proc.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(START_TIMEOUT_S):
            raise ModelProcessError(f"model process {self.index} did not load within {START_TIMEOUT_S:.0f} s")
        try:
            ok, error = self.conn.recv()
        except EOFError:
            raise ModelProcessError(f"model process {self.index} exited while loading "
                                    f"(exit code {self.proc.exitcode})") from None
        if not ok:
            raise error

    def serve(self) -> None:
        while True:
            job = self.queue.pop()
            if job is STOP:
                return
            payload, loop, fut = job
            try:
                self.conn.send(payload)
                if not self.conn.poll(self.step_timeout_s):   # hung (stopped, deadlocked): end it
                    self.proc.kill()
                    raise EOFError(f"no answer within {self.step_timeout_s:g} s; killed")
                ok, value = self.conn.recv()
                settle(loop, fut, value if ok else None, None if ok else value)
            except (EOFError, OSError) as e:   # the process died under this step
                self.proc.join(1.0)
                code = self.died_code = self.proc.exitcode
                with self.lock:
                    self.lost |= self.sids
                    n = len(self.sids)
                log.error("model process %d died (%s, exit code %s): %d session(s) lost; restarting it",
                          self.index, e, code, n)
                settle(loop, fut, None, _died(code))
                self._restart()
            except Exception as e:  # noqa: BLE001 - e.g. an argument that does not pickle
                settle(loop, fut, None, e)

    def _restart(self) -> None:
        try:
            self.start()
            self.wait_ready()
        except Exception:  # noqa: BLE001 - the next step reports the dead pipe again
            log.exception("model process %d could not be restarted", self.index)


class ProcessWorker:
    """`lanes` model processes; a session lives on the one with the fewest sessions when it opens."""

    kind = "processes"

    def __init__(self, checkpoint: str, dtype: str = "float32", device: str = "cpu", lanes: int = 2,
                 step_timeout_s: float = 60.0, clock_s=time.monotonic):
        """`step_timeout_s`: a process that takes longer over one step is killed and replaced."""
        self._lanes = [_Lane(i, (str(checkpoint), dtype, device), clock_s, step_timeout_s) for i in range(lanes)]
        self._ids = itertools.count()
        for lane in self._lanes:   # all load at once
            lane.start()
        try:
            for lane in self._lanes:
                lane.wait_ready()
        except BaseException:
            self._kill()
            raise
        self._threads = [threading.Thread(target=lane.serve, name=f"omni-model-feed_{lane.index}", daemon=True)
                         for lane in self._lanes]
        for t in self._threads:
            t.start()

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    def open_session(self, max_cache_tokens: int | None = None) -> EngineHandle:
        lane = min(self._lanes, key=lambda x: len(x.sids) - len(x.lost))
        sid = next(self._ids)
        with lane.lock:
            lane.sids.add(sid)
        lane.queue.put((sid, "open", (max_cache_tokens,)))     # before any step of the session

        async def call(op: str, *args, deadline_s: float | None = None):
            if sid in lane.lost:
                raise _died(lane.died_code)
            return await lane.queue.submit((sid, op, args), deadline_s)

        def close() -> None:
            with lane.lock:
                lane.sids.discard(sid)
                was_lost = sid in lane.lost
                lane.lost.discard(sid)
            if not was_lost:
                lane.queue.put((sid, "close", ()))
        return EngineHandle(call, close)

    async def stats(self) -> list[dict]:
        """Per process: the sessions it holds (as it counts them) and its peak RSS."""
        return list(await asyncio.gather(*[lane.queue.submit((None, "stats", ())) for lane in self._lanes]))

    def close(self, timeout_s: float = 10.0) -> None:
        """Drop queued steps, let each process finish its step in flight, then stop them."""
        for lane in self._lanes:
            for _, loop, fut in lane.queue.stop(1):
                settle(loop, fut, None, RuntimeError("the model worker closed"))
        for t in self._threads:
            t.join(timeout_s)
        for lane in self._lanes:
            try:
                lane.conn.send(None)
            except OSError:
                pass
            lane.proc.join(timeout_s)
        self._kill()

    def _kill(self) -> None:
        for lane in self._lanes:
            if lane.proc is not None and lane.proc.is_alive():
                lane.proc.kill()
                lane.proc.join(1.0)
