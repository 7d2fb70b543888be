"""The connection's owner task (streaming/gateway/mailbox.py): messages, media and the
conversation's follow-ups run one at a time in arrival order, a slow owner backs producers up,
and an error that ends the session stops it with its close code."""

from __future__ import annotations

import asyncio
import json

import pytest

from streaming.errors import CapacityError, close_code
from streaming.gateway.mailbox import BACKLOG, Mailbox
from streaming.session.config import SessionConfig
from streaming.session.respond import Response
from streaming.session.state import ConnectionState, Phase, TransitionError


class Recorder:
    """An inbound adapter that records what reached it and checks nothing overlaps."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.busy = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def handle(self, ev) -> None:
        await self.step(ev.TYPE)

    async def step(self, name: str) -> None:
        assert not self.busy, "two items handled at once"
        self.busy = True
        await self.gate.wait()
        await asyncio.sleep(0)
        self.seen.append(name)
        self.busy = False


def msg(kind: str) -> str:
    return json.dumps({"type": kind})


async def no_errors(ev) -> None:
    raise AssertionError(f"unexpected error event {ev}")


@pytest.mark.asyncio
async def test_messages_media_and_follow_ups_run_one_at_a_time_in_arrival_order():
    rec = Recorder()
    box = Mailbox(rec, no_errors, 1 << 20)
    owner = asyncio.create_task(box.run())
    await box.message(msg("input_audio_buffer.commit"))
    await box.media(lambda: rec.step("mic"))
    box.message_nowait(msg("response.create"))
    box.post(lambda: rec.step("follow-up"), "after")
    await box.media(lambda: rec.step("camera"))
    box.stop()
    assert await owner is None
    assert rec.seen == ["input_audio_buffer.commit", "mic", "response.create", "follow-up", "camera"]


@pytest.mark.asyncio
async def test_a_slow_owner_backs_producers_up_after_the_backlog():
    rec = Recorder()
    rec.gate.clear()  # the model is busy: nothing is handled
    box = Mailbox(rec, no_errors, 1 << 20)
    owner = asyncio.create_task(box.run())
    for _ in range(BACKLOG + 1):  # the owner holds one; BACKLOG more are queued
        await asyncio.wait_for(box.media(lambda: rec.step("mic")), 1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(box.media(lambda: rec.step("mic")), 0.05)
    rec.gate.set()
    await asyncio.wait_for(box.media(lambda: rec.step("mic")), 1)
    box.stop()
    await owner
    assert len(rec.seen) == BACKLOG + 2


@pytest.mark.asyncio
async def test_an_error_that_ends_the_session_stops_the_owner_with_its_close_code():
    sent = []

    async def send(ev) -> None:
        sent.append(ev)

    async def lost() -> None:
        raise CapacityError("server_busy", "no engine slot")

    rec = Recorder()
    box = Mailbox(rec, send, 1 << 20)
    owner = asyncio.create_task(box.run())
    box.message_nowait("{not json")  # a bad message: an error event, and it goes on
    box.post(lost, "follow-up")
    box.message_nowait(msg("response.create"))  # after the end: never handled
    assert await owner == close_code(CapacityError("server_busy", "x"))
    assert [e["error"]["code"] for e in sent] == ["invalid_json", "server_busy"]
    assert rec.seen == []


@pytest.mark.asyncio
async def test_once_run_claims_the_state_only_its_task_changes_the_phase():
    st = ConnectionState(SessionConfig())
    r = Response("resp_1", "item_1", 0.0)
    box = Mailbox(Recorder(), no_errors, 1 << 20, state=st)
    owner = asyncio.create_task(box.run())

    async def start_reply() -> None:
        st.reply_started(r)

    box.post(start_reply, "start")  # on the owner task: allowed
    await asyncio.sleep(0.01)
    assert st.phase is Phase.RESPONDING
    with pytest.raises(TransitionError, match="owner task"):
        st.interrupted(r, 0.0)  # this test's task is not the owner
    assert st.phase is Phase.RESPONDING
    box.stop()
    assert await owner is None
    st.closing()  # the connection's teardown runs after its owner has stopped
    assert st.phase is Phase.CLOSING
