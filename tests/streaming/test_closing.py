"""No reply starts on a closing connection (gateway/boundary.Supervisor, session/respond.Responder):
a connection whose task group is shutting down, or whose owner loop has ended, starts no task,
sends no response.created, leaves no current response behind, and leaks no coroutine ("never
awaited")."""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest

from scenario import FakeEngine, speech
from streaming.gateway.boundary import Supervisor
from streaming.playout import ClockPlayout
from streaming.session.respond import Responder


def _never_awaited(caught: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()  # a dropped coroutine warns when it is collected
    return [str(w.message) for w in caught if "never awaited" in str(w.message)]


def _responder(spawn, sent: list) -> Responder:
    async def send(ev) -> None:
        sent.append(ev)

    engine = FakeEngine([speech(1.0)]).open_session()
    return Responder(send, engine, ClockPlayout(), spawn=spawn)


async def _reply_while_the_group_aborts() -> tuple[object, list, Responder, Supervisor]:
    """A connection's task group in which one task failed; the owner, cancelled, still handles a
    response.create it was in the middle of (as a message mid-dispatch would)."""
    sent: list = []
    result: dict = {}

    async def failing() -> None:
        raise ConnectionResetError("the transport broke")

    with pytest.raises(ExceptionGroup):
        async with asyncio.TaskGroup() as tg:
            sup = Supervisor(tg, lambda ev: None, lambda code: None)
            responder = _responder(sup.spawn, sent)
            tg.create_task(failing())
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:  # the group aborts: the owner is cancelled...
                result["r"] = await responder.start(None, 0.0, None)  # ...mid-message
                raise
    return result["r"], sent, responder, sup


@pytest.mark.asyncio
async def test_a_reply_asked_for_while_the_task_group_aborts_never_starts():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r, sent, responder, sup = await _reply_while_the_group_aborts()
        assert r is None and sent == [] and responder.current is None and sup.closing
        assert _never_awaited(caught) == []


@pytest.mark.asyncio
async def test_after_the_owner_loop_ends_spawn_starts_nothing():
    sent: list = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with asyncio.TaskGroup() as tg:
            sup = Supervisor(tg, lambda ev: None, lambda code: None)
            responder = _responder(sup.spawn, sent)
            sup.closing = True  # what ws.py / webrtc.py set when the mailbox stops
            assert await responder.start(None, 0.0, None) is None
            sup.cancel_all()
        assert sent == [] and responder.current is None and sup.tasks == set()
        assert _never_awaited(caught) == []


@pytest.mark.asyncio
async def test_a_started_reply_has_its_task_before_response_created_and_runs_after_it():
    """The order the change keeps: the task exists first, but its first event follows
    response.created."""
    sent: list = []
    async with asyncio.TaskGroup() as tg:
        sup = Supervisor(tg, lambda ev: None, lambda code: None)
        responder = _responder(sup.spawn, sent)
        from omni.session.engine import GenerateOptions

        r = await responder.start(GenerateOptions(max_new_tokens=4), 0.0, None)
        assert r is not None and r.task is not None and responder.current is r
        await r.task
    names = [type(ev).__name__ for ev in sent]
    assert names[0] == "ResponseStarted" and "ResponseEnded" in names, names


@pytest.mark.asyncio
async def test_a_task_cancelled_before_its_first_step_leaves_no_coroutine_behind():
    ran = []

    async def work() -> None:
        ran.append(True)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with asyncio.TaskGroup() as tg:
            sup = Supervisor(tg, lambda ev: None, lambda code: None)
            assert sup.spawn(work(), "reply") is not None
            sup.cancel_all()  # the connection ends before the loop ever ran the task
        assert ran == [] and _never_awaited(caught) == []
