"""`ProcessWorker`: one model process per lane, each running a batch engine, for multi-core CPUs.

Why processes: the tiny model's steps are thousands of small torch ops, and threads of one
interpreter contend for the GIL between them; measured on this 2-core machine (bench/engine.py),
one batch engine per process on each core gives about 1.3x the TTS frames per second of one
engine using both cores. Each process loads its own copy of the model (the memory cost: the
default plans as many as fit, lanes.py; `worker = "threads"` keeps one copy) and owns the
sessions placed on it. Commands are pipelined: the parent sends them as they come (a sender
thread) and a reader thread settles each one's future when its answer arrives, so a process's
engine sees every session's work at once and batches it. Only plain data crosses: command names,
numpy audio, PIL frames, results.

A process that dies (killed, out of memory) or hangs (commands outstanding and nothing heard for
`model_step_timeout_s`: it is killed) fails every outstanding command and is started again; the
sessions it held lost their context: each of their commands then fails with `ModelError`
`model_process_died`, which closes the connection (1011) so the client reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time

from ..errors import ModelError
from .handle import EngineHandle
from . import model_process
from .model_process import ModelProcessError
from .worker import BACKGROUND_SLOTS, PROBE_TIMEOUT_S, EngineSpec, full_error, probe, settle

log = logging.getLogger("omni.procs")
START_TIMEOUT_S = 600.0  # loading a full checkpoint on CPU takes minutes


@contextlib.contextmanager
def _stop_signals_held():
    """SIGTERM/SIGINT wait until a model process is started: a handler raising (SIGTERM while
    loading) inside Process.start() would leave the child reading half its arguments (EOFError and
    a traceback in the log) and no process object to kill. Handlers are the main thread's alone
    (a signal mask would not do: any thread of the process may take the signal)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # a restart: signals reach the main thread's handlers, not this one
        return
    caught: list[int] = []
    before = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for n in caught:
            signal.raise_signal(n)  # to the handler it was meant for, now


def _died(code) -> ModelError:
    return ModelError(
        "model_process_died",
        f"The model process serving this session died (exit code "
        f"{code}) and was restarted; the conversation's context is lost. Reconnect to start "
        "a new session.",
    )


class _Lane:
    """One model process, its outstanding requests and the two parent threads that talk to it."""

    def __init__(self, index: int, spec: tuple, step_timeout_s: float):
        self.index, self.spec, self.step_timeout_s = index, spec, step_timeout_s
        self.slots = 0
        self.sids: set[int] = set()  # sessions placed on the process
        self.background: set[int] = set()  # those of them in the engine's background slots
        self.lost: set[int] = set()  # sessions whose process died
        self.died_code: int | None = None
        self.lock = threading.Lock()  # sids, lost, pending: the event loop and both threads
        self.pending: dict[int, tuple] = {}  # rid -> (loop, fut)
        self.handles: dict[int, EngineHandle] = {}  # sid -> handle: told at once when the process dies
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.ready = threading.Event()
        self.stopping = False
        self.failures = 0  # restarts that failed in a row
        self.proc, self.conn = None, None

    @property
    def free(self) -> int:
        """Slots a new session may take: none while the process is (re)starting or broken."""
        if not self.ready.is_set() or self.failures or self.proc is None or not self.proc.is_alive():
            return 0
        with self.lock:
            return self.slots - len(self.sids - self.background - self.lost)

    @property
    def background_free(self) -> bool:
        if not self.ready.is_set() or self.failures or self.proc is None or not self.proc.is_alive():
            return False
        with self.lock:
            return len(self.background - self.lost) < BACKGROUND_SLOTS

    def start(self) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the event loop's threads and locks
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=model_process.main,
            args=(child, os.getpid(), *self.spec[:3], dataclasses.asdict(self.spec[3]), self.spec[4]),
            name=f"omni-model-{self.index}",
            daemon=True,
        )
        with _stop_signals_held():
            self.proc.start()
        child.close()

    def wait_ready(self) -> None:
        if not self.conn.poll(START_TIMEOUT_S):
            self.proc.kill()  # its late handshake must not reach the reader
            self.proc.join(5.0)
            raise ModelProcessError(f"model process {self.index} did not load within {START_TIMEOUT_S:.0f} s")
        try:
            ok, value = self.conn.recv()
        except EOFError:
            raise ModelProcessError(
                f"model process {self.index} exited while loading (exit code {self.proc.exitcode})"
            ) from None
        if not ok:
            raise value
        self.slots = value
        self.ready.set()

    def send(self, rid: int, sid: int | None, op: str, args: tuple, deadline_s: float | None, waiter) -> None:
        if waiter is not None:
            with self.lock:
                self.pending[rid] = waiter
        self.outbox.put((rid, sid, op, args, deadline_s))

    def run_sender(self) -> None:
        """The only thread that writes to the process; None in the outbox ends it (and the process)."""
        while True:
            msg = self.outbox.get()
            self.ready.wait()
            try:
                self.conn.send(msg)
            except OSError:  # a dead pipe: the reader restarts the process
                if msg is not None:
                    self._settle(msg[0], None, _died(self.died_code))
            except Exception as e:  # noqa: BLE001 - an argument that does not pickle
                if msg is not None:
                    self._settle(msg[0], None, e)
            if msg is None:
                return

    def run_reader(self) -> None:
        """Settle answers as they come; a process silent for `step_timeout_s` with commands
        outstanding (one batched step of the engine took that long) is killed and replaced."""
        heard = time.monotonic()
        while not self.stopping:
            try:
                if not self.conn.poll(0.5):
                    with self.lock:
                        busy = bool(self.pending)
                    if busy and time.monotonic() - heard > self.step_timeout_s:  # hung: end it
                        if self.proc.is_alive():
                            self.proc.kill()
                        raise EOFError(f"no answer within {self.step_timeout_s:g} s; killed")
                    if not busy:
                        heard = time.monotonic()
                    continue
                rid, ok, value = self.conn.recv()
                heard = time.monotonic()
                self._settle(rid, value if ok else None, None if ok else value)
            except Exception as e:  # noqa: BLE001 - died, or sent what no request expects: replace it
                if self.stopping:
                    return
                if self.proc is not None and self.proc.is_alive():
                    self.proc.kill()
                self._died(e)
                heard = time.monotonic()

    def _settle(self, rid: int, result, error) -> None:
        with self.lock:
            waiter = self.pending.pop(rid, None)
        if waiter is not None:
            settle(*waiter, result, error)

    def _died(self, e: BaseException) -> None:
        self.ready.clear()
        self.proc.join(1.0)
        code = self.died_code = self.proc.exitcode
        with self.lock:
            self.lost |= self.sids
            n, waiters = len(self.sids), list(self.pending.values())
            self.pending.clear()
            handles = [self.handles[sid] for sid in self.sids if sid in self.handles]
        for h in handles:  # their connections close now, not at their next command
            h.lose(_died(code))
        log.error("model process %d died (%s, exit code %s): %d session(s) lost; restarting it", self.index, e, code, n)
        for waiter in waiters:
            settle(*waiter, None, _died(code))
        if self.failures:  # a restart failed before: back off (1, 2, 4 ... 60 s)
            time.sleep(min(60.0, 2.0 ** (self.failures - 1)))
        try:
            t = time.monotonic()
            self.start()
            self.wait_ready()
            self.failures = 0
            log.info("model process %d replaced in %.1f s", self.index, time.monotonic() - t)
        except Exception:  # noqa: BLE001 - takes no new sessions; the reader tries again
            self.failures += 1
            log.exception("model process %d could not be restarted (%d time(s) in a row)", self.index, self.failures)
            self.ready.set()  # queued commands reach the dead pipe and fail: nothing hangs


class ProcessWorker:
    """`spec.lanes` model processes; a session opens on the one with the most free slots."""

    kind = "processes"

    def __init__(
        self,
        checkpoint: str,
        spec: EngineSpec,
        dtype: str = "float32",
        device: str = "cpu",
        step_timeout_s: float = 60.0,
        quantize: str | None = None,
    ):
        """`step_timeout_s`: a process silent this long with commands outstanding is killed and replaced."""
        self.spec = spec
        load_args = (str(checkpoint), dtype, device, spec, quantize)
        self._lanes = [_Lane(i, load_args, step_timeout_s) for i in range(spec.lanes)]
        self._ids = itertools.count()
        self._rids = itertools.count()
        try:
            for lane in self._lanes:  # all load at once
                lane.start()
            for lane in self._lanes:
                lane.wait_ready()
        except BaseException:
            self._kill()
            raise
        self._threads = []
        for lane in self._lanes:
            for fn, name in ((lane.run_sender, "send"), (lane.run_reader, "read")):
                t = threading.Thread(target=fn, name=f"omni-model-{name}_{lane.index}", daemon=True)
                t.start()
                self._threads.append(t)

    @property
    def lanes(self) -> int:
        return len(self._lanes)

    @property
    def capacity(self) -> int:
        return sum(lane.slots for lane in self._lanes)

    def open_session(self, max_cache_tokens: int | None = None, background: bool = False) -> EngineHandle:
        lane = self._place_background() if background else self._place()
        sid = next(self._ids)
        with lane.lock:
            lane.sids.add(sid)
            if background:
                lane.background.add(sid)
        lane.send(next(self._rids), sid, "open", (max_cache_tokens, background), None, None)  # before any command

        async def call(op: str, *args, deadline_s: float | None = None):
            if sid in lane.lost:
                raise _died(lane.died_code)
            loop = asyncio.get_running_loop()
            fut = loop.create_future()
            lane.send(next(self._rids), sid, op, args, deadline_s, (loop, fut))
            try:
                return await fut
            finally:
                del fut, args  # the future holds the error, whose traceback holds this frame: a cycle

        def close() -> None:
            with lane.lock:
                lane.sids.discard(sid)
                lane.background.discard(sid)
                lane.lost.discard(sid)
                lane.handles.pop(sid, None)
            # Sent even for a lost session: its "open" may have reached the new process.
            lane.send(next(self._rids), sid, "close", (), None, None)

        handle = EngineHandle(call, close, where=f"process-{lane.index}")
        with lane.lock:
            lane.handles[sid] = handle
        return handle

    def _place_background(self) -> _Lane:
        """A healthy process with a background slot free (user transcripts)."""
        for lane in sorted(self._lanes, key=lambda x: -x.free):
            if lane.background_free:
                return lane
        raise full_error(self.capacity)

    def _place(self) -> _Lane:
        """The healthy process with the most free slots; else one being replaced (the session's
        commands wait for it); a process whose restart failed takes none."""
        healthy = [lane for lane in self._lanes if lane.free > 0]
        if healthy:
            return max(healthy, key=lambda x: x.free)
        for lane in self._lanes:
            with lane.lock:
                room = lane.slots - len(lane.sids - lane.background - lane.lost)
            if not lane.ready.is_set() and not lane.failures and room > 0:
                return lane
        raise full_error(self.capacity)

    async def stats(self) -> list[dict]:
        """Per process: the sessions it holds (as it counts them), its engine's figures, peak RSS."""
        stats = await asyncio.gather(*[self._request(lane, "stats") for lane in self._lanes])
        return [{"replica": f"process-{lane.index}", **st} for lane, st in zip(self._lanes, stats)]

    async def ready(self, timeout_s: float = PROBE_TIMEOUT_S) -> list[dict]:
        """Per process: did a real model step (a probe, after what is queued) finish in time."""
        return list(
            await asyncio.gather(
                *[
                    probe(lambda op, lane=lane: self._request(lane, op), f"process-{lane.index}", timeout_s)
                    for lane in self._lanes
                ]
            )
        )

    async def _request(self, lane: _Lane, op: str):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        lane.send(next(self._rids), None, op, (), None, (loop, fut))
        try:
            return await fut
        finally:
            del fut  # no cycle through the error's traceback

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop each process after the commands already sent, then the parent threads."""
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes:
            lane.stopping = True
            lane.outbox.put(None)
        for lane in self._lanes:
            lane.proc.join(max(0.1, deadline - time.monotonic()))
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for lane in self._lanes:
            with lane.lock:
                waiters = list(lane.pending.values())
                lane.pending.clear()
            for waiter in waiters:
                settle(*waiter, None, RuntimeError("the model worker closed"))
        self._kill()

    def _kill(self) -> None:
        for lane in self._lanes:
            if lane.proc is not None and lane.proc.is_alive():
                lane.proc.kill()
                lane.proc.join(1.0)
