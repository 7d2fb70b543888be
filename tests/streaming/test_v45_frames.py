"""The V-4.5 camera gate and reply emitter under the cases a live client makes: frames out of
capture order, full-HD frames held through a long reply, packs closed by typed items, and a cancel
while a text delta waits for a slow reader (a scripted engine and a send that blocks: the fault)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from omni.session.v45 import ReplyOptions
from streaming.session import events as E
from streaming.session.v45_frames import MAX_HELD_PIXELS, FrameGate
from streaming.session.v45_respond import V45Responder


def test_a_frame_captured_before_the_last_admitted_is_dropped():
    gate = FrameGate()
    # at 2 fps the early allowance lets 0.95 s in after 0 s; 0.9 s is then older than the last one
    assert [gate.admit(t, 2) for t in (0.0, 0.95, 0.9, 1.5)] == [True, True, False, True]


def test_a_refunded_slot_goes_to_the_next_frame():
    gate = FrameGate()
    assert gate.admit(0.0, 2)
    assert gate.admit(0.5, 2)
    gate.refund()  # the frame at 0.5 s was not a picture
    assert gate.admit(0.55, 2) and not gate.admit(0.6, 2)


def test_held_full_hd_frames_stay_within_the_pixel_budget():
    gate = FrameGate()
    hd = Image.new("RGB", (1920, 1080))
    for i in range(64):
        gate.hold(hd, float(i))
    held = gate.take_held()
    assert len(held) * 1920 * 1080 <= MAX_HELD_PIXELS and len(held) >= 1
    assert [h.t_s for h in held] == [float(i) for i in range(64 - len(held), 64)]  # the newest kept


def test_every_input_closes_the_open_pack_in_the_stats():
    gate = FrameGate()
    gate.sent(0.0, 3)
    gate.sent(0.5, 3)
    gate.input_followed()  # a typed question flushes the pack of two
    gate.sent(1.0, 3)
    gate.input_followed()  # the reply
    assert (gate.frames_total, gate.packs_total) == (3, 2)


class _Engine:
    """Scripted reply steps (the fault harness: no model)."""

    def __init__(self, pieces):
        self.pieces, self.last_reply_end, self.reply_usage = list(pieces), "eos", (10, 3)

    async def start_reply(self, opts):
        pass

    async def reply_step(self, deadline_s):
        await asyncio.sleep(0)
        return (self.pieces.pop(0), np.zeros(0, np.float32)) if self.pieces else None


@pytest.mark.asyncio
@pytest.mark.parametrize("thinking", [False, True])
async def test_a_cancel_while_a_delta_waits_for_the_reader_keeps_what_the_client_gets(thinking):
    sent: list = []
    gate = asyncio.Event()
    queue: asyncio.Queue = asyncio.Queue(maxsize=1)  # the connection's bounded send queue, FIFO

    async def reader():  # reads two events, then stalls until the gate opens
        while True:
            if len(sent) >= 2:
                await gate.wait()
            sent.append(await queue.get())

    reading = asyncio.ensure_future(reader())
    send = queue.put
    pieces = ["<think>\nWhy. ", "</think>\n\nHello. ", "Hello. ", "Bye."] if thinking else ["Hello. "] * 4
    r_engine = _Engine(pieces)
    responder = V45Responder(send, r_engine)
    r = await responder.start(ReplyOptions(thinking, None, 16), None, None)
    assert r is not None
    for _ in range(500):
        if len(sent) >= 2 and not queue.empty():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # a delta waits in the full queue now
    cancelling = asyncio.ensure_future(responder.cancel("client_cancelled"))
    await asyncio.sleep(0.05)  # the cancel waits for room in the queue too
    gate.set()
    await asyncio.wait_for(cancelling, 5)
    await asyncio.wait_for(asyncio.gather(r.task, return_exceptions=True), 5)
    for _ in range(500):
        if queue.empty() and any(isinstance(e, E.ResponseTimings) for e in sent):
            break
        await asyncio.sleep(0.01)
    reading.cancel()
    kinds = [type(e).__name__ for e in sent]
    done = kinds.index("ResponseEnded")
    assert not any(k in ("ResponseText", "ReasoningText") for k in kinds[done:]), kinds  # nothing after done
    delivered_text = "".join(e.delta for e in sent if isinstance(e, E.ResponseText))
    delivered_reasoning = "".join(e.delta for e in sent if isinstance(e, E.ReasoningText))
    raw = "".join(pieces)
    # the cut keeps exactly the raw characters behind what the client got
    if thinking:
        assert raw[: r.chars].endswith(delivered_text or delivered_reasoning), (r.chars, kinds)
    else:
        assert r.chars == len(delivered_text), (r.chars, delivered_text)


@pytest.mark.asyncio
async def test_the_send_queue_keeps_events_in_order_under_backpressure():
    from streaming.gateway.outbound import SendQueue

    q = SendQueue(1)
    await q.put("delta")
    done = asyncio.ensure_future(q.put("response.done"))  # waits for room: the reader is slow
    await asyncio.sleep(0)
    late = asyncio.ensure_future(q.put("error"))  # ready to run before the waiting put is woken
    got = [q.get_nowait()]  # room for one: it must go to the put that waited for it
    for _ in range(2):
        got.append(await asyncio.wait_for(q.get(), 1))
    await asyncio.gather(done, late)
    assert got == ["delta", "response.done", "error"]
