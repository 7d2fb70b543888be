"""The model worker: earliest deadline first, exceptions reach the caller, one session's steps in
order even with several lanes."""
import asyncio
import threading
import time

import pytest

from streaming.worker import ModelWorker


@pytest.mark.asyncio
async def test_earliest_deadline_first_and_errors_propagate():
    w = ModelWorker(omni=None, lanes=1)
    gate, order = threading.Event(), []
    try:
        blocker = asyncio.ensure_future(w.run("block", gate.wait))
        await asyncio.sleep(0.05)                       # the lane is busy: the rest queue up
        now = time.monotonic()
        jobs = [asyncio.ensure_future(w.run(name, order.append, name, deadline_s=now + d))
                for name, d in (("late", 3.0), ("urgent", -1.0), ("soon", 0.5))]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocker, *jobs)
        assert order == ["urgent", "soon", "late"]
        with pytest.raises(ZeroDivisionError):
            await w.run("boom", lambda: 1 / 0)
        assert await w.next("it", iter([])) is None
    finally:
        w.close()


@pytest.mark.asyncio
async def test_session_lane_keeps_one_sessions_steps_in_order():
    w = ModelWorker(omni=None, lanes=2)
    lane, seen, active = w.for_session(), [], []
    try:
        def step(i):
            active.append(i)
            assert len(active) == 1, "two steps of one session ran at once"
            time.sleep(0.01)
            seen.append(i)
            active.remove(i)
        await asyncio.gather(*[lane.run("s", step, i) for i in range(10)])
        assert sorted(seen) == list(range(10))
    finally:
        w.close()
