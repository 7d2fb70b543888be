"""A model process's side of `ProcessWorker` (procs.py): load the checkpoint, build the batch
engine, and answer the parent's (rid, sid, command, args, deadline) requests as they come, while
the engine runs on this process's main thread. Only plain data crosses the pipe."""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import threading
import time

from ..errors import ModelError

PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_POLL_S = 0.5


class ModelProcessError(RuntimeError):
    """A model process failed to start, or an error that does not pickle, as text."""


def _portable(e: BaseException) -> BaseException:
    """The exception itself when it pickles (ValueError, CheckpointError...), else its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any pickling failure
        return ModelProcessError(f"{type(e).__name__}: {e}")


def exit_with_parent(parent_pid: int) -> None:
    """A model process never outlives its gateway, however the gateway ends (SIGKILL, a crash,
    SIGTERM while loading): the kernel kills it with its parent (PR_SET_PDEATHSIG; the "parent" is
    the thread that started it, and the lanes' threads live as long as the worker), and a watchdog
    thread exits when the parent is gone anyway (it died before the prctl, or no Linux)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died before the prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="omni-orphan-watch", daemon=True).start()


def main(
    conn, parent_pid: int, checkpoint: str, dtype: str, device: str, spec_fields: dict, quantize: str | None = None
) -> None:
    """A model process: load, build the engine, answer (rid, sid, command, args, deadline) requests.
    Its arguments are plain data, and this module imports nothing heavy at the top: the process
    watches its parent before torch is imported (seconds) and the checkpoint loaded (minutes)."""
    exit_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    import torch
    from omni.loader import load

    from .worker import EngineSpec

    spec = EngineSpec(**spec_fields)
    torch.set_num_threads(1)
    try:
        omni = load(checkpoint, dtype=getattr(torch, dtype), device=device, progress=False, quantize=quantize)
        engine = spec.engine(omni)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send((False, _portable(e)))
        return
    conn.send((True, engine.slots))
    lock = threading.Lock()  # the engine thread and the reader both answer

    def answer(rid):
        def done(result, error):
            with lock:
                conn.send((rid, error is None, result if error is None else _portable(error)))

        return done

    def read() -> None:
        ids: dict[int, int] = {}  # parent's session id -> the engine's
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                msg = None
            if msg is None:
                return engine.stop()
            rid, sid, op, args, deadline_s = msg
            try:
                if op == "open":
                    ids[sid] = engine.open(*args, done=answer(rid))
                elif op == "stats":
                    import resource

                    answer(rid)(
                        {
                            "sessions": len(ids),
                            "slots": engine.slots,
                            "queue_depth": engine.queue_depth,
                            **engine.stats.as_dict(),
                            "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                        },
                        None,
                    )
                elif op == "probe":
                    engine.submit(0, "probe", (), None, answer(rid))
                elif sid not in ids:  # opened on a process that died, or refused: the session is gone
                    raise ModelError(
                        "model_process_died",
                        f"session {sid} is not open in this model process "
                        "(its process was restarted); reconnect to start a new session",
                    )
                elif op == "close":
                    engine.close(ids.pop(sid), answer(rid))
                else:
                    engine.submit(ids[sid], op, args, deadline_s, answer(rid))
            except Exception as e:  # noqa: BLE001 - answered; this thread must keep reading
                answer(rid)(None, _portable(e))

    threading.Thread(target=read, name="omni-model-read", daemon=True).start()
    engine.run_forever()
