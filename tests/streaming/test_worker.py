"""The model workers: one session's commands in order, admission from the engines' capacity (and
the memory that decides it); model processes run real sessions like an engine thread does, report
errors with their type, free closed sessions and survive a killed or hung process."""

import asyncio
import time

import numpy as np
import pytest

from omni.sampling import SamplingParams
from omni.session.engine import GenerateOptions
from streaming.engines.handle import EngineHandle
from streaming.settings import ServerSettings
from streaming.engines.worker import EngineSpec, EngineWorker


@pytest.mark.asyncio
async def test_a_handle_keeps_one_sessions_commands_in_order():
    seen, active = [], []

    async def call(op, i, frame, deadline_s=None):
        active.append(i)
        assert len(active) == 1, "two commands of one session ran at once"
        await asyncio.sleep(0.001)
        seen.append(i)
        active.remove(i)

    h = EngineHandle(call, close=lambda: None)
    await asyncio.gather(*[h.append_unit(i) for i in range(10)])
    assert seen == list(range(10))  # in the order they were submitted


def _spec(**kw) -> EngineSpec:
    return EngineSpec.from_settings(ServerSettings(**{"model_lanes": 1, **kw}))


@pytest.mark.asyncio
async def test_sessions_beyond_the_engines_capacity_are_refused(tiny_omni):
    """Admission from capacity: an engine holds what its KV pools hold; one more is server_busy."""
    from streaming.errors import CapacityError

    w = EngineWorker(tiny_omni, _spec(max_sessions=2))
    try:
        assert w.capacity == 2
        a, b = w.open_session(), w.open_session()
        with pytest.raises(CapacityError) as full:
            w.open_session()
        assert full.value.code == "server_busy" and "2 session slots" in full.value.message
        b.close()
        assert (await _talk(w.open_session(), seed=4))[1] > 0  # a freed slot serves again
        a.close()
    finally:
        w.close()


def test_memory_decides_how_many_sessions_an_engine_holds(tiny_omni):
    from omni.batch.engine import slot_bytes

    spec = _spec(max_sessions=16)
    per = slot_bytes(tiny_omni, spec.slot_tokens)
    # 4.5 slots of memory: 3 conversation slots and the engine's background slot (user transcripts)
    assert EngineSpec(**{**spec.__dict__, "kv_cache_gb": 4.5 * per / 2**30}).slots(tiny_omni) == 3
    assert spec.slots(tiny_omni) == 16  # auto on a CPU: max_sessions fits


def _reply_opts():
    return GenerateOptions(sampling=SamplingParams(), max_new_tokens=9, max_speech_s=1.0, low_latency=True)


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
    """The same seeded conversation gives the same reply in a model process as on an engine thread."""
    local = EngineWorker(tiny_omni, _spec())
    try:
        mine = local.open_session()
        want = await _talk(mine, seed=3)
    finally:
        local.close()
    handles = [proc_worker.open_session() for _ in range(3)]  # spread over both processes
    got = await asyncio.gather(*[_talk(h, seed=3) for h in handles])
    assert want[1] > 0 and all(g == want for g in got)
    assert mine.last_reply_end is not None  # why it ended crosses too
    assert all(h.last_reply_end == mine.last_reply_end for h in handles)
    assert sum(st["sessions"] for st in await proc_worker.stats()) == 3
    for h in handles:
        h.close()


@pytest.mark.asyncio
async def test_process_errors_keep_their_type_and_closed_sessions_are_freed(proc_worker):
    h = proc_worker.open_session()
    with pytest.raises(ValueError, match="reference clip must be 1-30 s"):
        await h.set_system(None, "audio_assistant", np.zeros(100, np.float32), None)  # 6 ms: too short
    await h.set_system(None, "audio_assistant", None, None)  # the session goes on
    h.close()
    with pytest.raises(RuntimeError, match="closed"):
        await h.append_unit(np.zeros(16000, np.float32))
    assert all(not lane.sids for lane in proc_worker._lanes)
    stats = await proc_worker.stats()  # the processes dropped them too
    assert [st["sessions"] for st in stats] == [0, 0] and all(st["max_rss_mb"] > 100 for st in stats), stats


@pytest.mark.asyncio
async def test_a_killed_model_process_is_reported_and_replaced():
    from streaming.errors import ModelError, close_code
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings

    w = ProcessWorker(checkpoint_dir(ServerSettings()), _spec())
    try:
        h = w.open_session()
        await h.set_system(None, "audio_assistant", None, None)
        w._lanes[0].proc.kill()  # forced fault: the process dies
        with pytest.raises(ModelError, match="died") as died:
            await h.append_unit(np.zeros(16000, np.float32))
        assert died.value.code == "model_process_died" and close_code(died.value) == 1011
        with pytest.raises(ModelError, match="context is lost"):
            await h.append_unit(np.zeros(16000, np.float32))  # its sessions are gone, and say so
        h.close()
        fresh = w.open_session()  # the replacement serves new sessions
        assert (await _talk(fresh, seed=1))[1] > 0
    finally:
        w.close()


@pytest.mark.asyncio
async def test_a_hung_model_process_is_killed_after_the_step_timeout():
    import os
    import signal
    from streaming.errors import ModelError
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings

    w = ProcessWorker(checkpoint_dir(ServerSettings()), _spec(), step_timeout_s=1.0)
    try:
        h = w.open_session()
        await h.set_system(None, "audio_assistant", None, None)
        os.kill(w._lanes[0].proc.pid, signal.SIGSTOP)  # forced fault: the process hangs
        t = time.monotonic()
        with pytest.raises(ModelError, match="died"):
            await h.append_unit(np.zeros(16000, np.float32))
        assert 0.9 < time.monotonic() - t < 5.0
        fresh = w.open_session()
        assert (await _talk(fresh, seed=2))[1] > 0
    finally:
        w.close()
