"""The model workers: earliest deadline first, exceptions reach the caller, one session's steps in
order even with several lanes; model processes run real sessions, report errors with their type,
free closed sessions and survive a killed process."""
import asyncio
import threading
import time

import numpy as np
import pytest

from omni.sampling import SamplingParams
from omni.session.engine import GenerateOptions
from streaming.handle import EngineHandle
from streaming.worker import ModelWorker


@pytest.mark.asyncio
async def test_earliest_deadline_first_and_errors_propagate():
    w = ModelWorker(omni=None, lanes=1)
    gate, order = threading.Event(), []
    try:
        blocker = asyncio.ensure_future(w.run(gate.wait))
        await asyncio.sleep(0.05)                       # the lane is busy: the rest queue up
        now = time.monotonic()
        jobs = [asyncio.ensure_future(w.run(order.append, name, deadline_s=now + d))
                for name, d in (("late", 3.0), ("urgent", -1.0), ("soon", 0.5))]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocker, *jobs)
        assert order == ["urgent", "soon", "late"]
        with pytest.raises(ZeroDivisionError):
            await w.run(lambda: 1 / 0)
    finally:
        w.close()


@pytest.mark.asyncio
async def test_a_handle_keeps_one_sessions_steps_in_order():
    w = ModelWorker(omni=None, lanes=2)
    seen, active = [], []

    def step(i):
        active.append(i)
        assert len(active) == 1, "two steps of one session ran at once"
        time.sleep(0.01)
        seen.append(i)
        active.remove(i)

    async def call(op, i, deadline_s=None):
        return await w.run(step, i, deadline_s=deadline_s)
    h = EngineHandle(call, close=lambda: None)
    try:
        await asyncio.gather(*[h._run("unit", i) for i in range(10)])
        assert sorted(seen) == list(range(10))
    finally:
        w.close()


def _reply_opts():
    return GenerateOptions(sampling=SamplingParams(), max_new_tokens=9, max_speech_s=1.0, low_latency=True,
                           step_yields=True)


async def _talk(h: EngineHandle, seed: int) -> tuple[str, int]:
    rng = np.random.default_rng(seed)
    await h.set_system(seed, "audio_assistant", None, None)
    await h.append_unit((0.1 * rng.standard_normal(16000)).astype(np.float32))
    await h.start_reply(_reply_opts())
    text, samples = "", 0
    while (item := await h.reply_step()) is not None:
        text, samples = text + item[0], samples + len(item[1])
    return text, samples


@pytest.mark.asyncio
async def test_process_sessions_match_in_process_ones(tiny_omni, proc_worker):
    """The same seeded conversation gives the same reply in a model process as on a lane thread."""
    local = ModelWorker(tiny_omni, lanes=1)
    try:
        mine = local.open_session()
        want = await _talk(mine, seed=3)
    finally:
        local.close()
    handles = [proc_worker.open_session() for _ in range(3)]     # spread over both processes
    got = await asyncio.gather(*[_talk(h, seed=3) for h in handles])
    assert want[1] > 0 and all(g == want for g in got)
    assert mine.last_reply_end is not None                          # why it ended crosses too
    assert all(h.last_reply_end == mine.last_reply_end for h in handles)
    assert sum(st["sessions"] for st in await proc_worker.stats()) == 3
    for h in handles:
        h.close()


@pytest.mark.asyncio
async def test_process_errors_keep_their_type_and_closed_sessions_are_freed(proc_worker):
    h = proc_worker.open_session()
    with pytest.raises(ValueError, match="reference clip must be 1-30 s"):
        await h.set_system(None, "audio_assistant", np.zeros(100, np.float32), None)   # 6 ms: too short
    await h.set_system(None, "audio_assistant", None, None)        # the session goes on
    h.close()
    with pytest.raises(RuntimeError, match="closed"):
        await h.append_unit(np.zeros(16000, np.float32))
    assert all(not lane.sids for lane in proc_worker._lanes)
    stats = await proc_worker.stats()                # the processes dropped them too
    assert [st["sessions"] for st in stats] == [0, 0] and all(st["max_rss_mb"] > 100 for st in stats), stats


@pytest.mark.asyncio
async def test_a_killed_model_process_is_reported_and_replaced():
    from streaming.gateway.errors import ModelError, close_code
    from streaming.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    w = ProcessWorker(checkpoint_dir(ServerSettings()), lanes=1)
    try:
        h = w.open_session()
        await h.set_system(None, "audio_assistant", None, None)
        w._lanes[0].proc.kill()                                    # forced fault: the process dies
        with pytest.raises(ModelError, match="died") as died:
            await h.append_unit(np.zeros(16000, np.float32))
        assert died.value.code == "model_process_died" and close_code(died.value) == 1011
        with pytest.raises(ModelError, match="context is lost"):
            await h.append_unit(np.zeros(16000, np.float32))       # its sessions are gone, and say so
        h.close()
        fresh = w.open_session()                                   # the replacement serves new sessions
        assert (await _talk(fresh, seed=1))[1] > 0
    finally:
        w.close()


@pytest.mark.asyncio
async def test_a_hung_model_process_is_killed_after_the_step_timeout():
    import os
    import signal
    from streaming.gateway.errors import ModelError
    from streaming.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    w = ProcessWorker(checkpoint_dir(ServerSettings()), lanes=1, step_timeout_s=1.0)
    try:
        h = w.open_session()
        await h.set_system(None, "audio_assistant", None, None)
        os.kill(w._lanes[0].proc.pid, signal.SIGSTOP)              # forced fault: the process hangs
        t = time.monotonic()
        with pytest.raises(ModelError, match="died"):
            await h.append_unit(np.zeros(16000, np.float32))
        assert 0.9 < time.monotonic() - t < 5.0
        fresh = w.open_session()
        assert (await _talk(fresh, seed=2))[1] > 0
    finally:
        w.close()
