"""Conversation timelines on virtual time (scenario.py): barge-in while a reply is generated or
only plays out, the client's truncate and cancel, turn detection that does not interrupt, the
deadlines a reply's steps get, and the idle reaper. Each asserts on what the client was sent and
on what the engine was asked, never on the conversation's own state.

With the scenarios' scripted VAD a turn spoken from 0 to 2 s starts at 0.3 s (250 ms of speech)
and ends at 2.6 s (500 ms of silence, seen when the microphone's next 100 ms arrive); one spoken
from 3.5 s starts at 3.8 s."""

from __future__ import annotations

import asyncio

import pytest

import virtual_time
from scenario import FakeEngine, Reply, Scenario, Step, speech
from streaming.session import events as E
from streaming.session.manager import SessionManager
from streaming.session.respond import FIRST_AUDIO_TARGET_S, PLAYOUT_MARGIN_S

SLOW = dict(cost_s=0.4)  # 0.5 s of audio per 0.4 s step: still generated when the user cuts in
FAST = dict(cost_s=0.05)  # generated at once: the reply only plays out when the user cuts in


def truncate(ms: int):
    return lambda sc: {
        "type": "conversation.item.truncate",
        "item_id": sc.of(E.ResponseStarted)[0].item.id,
        "content_index": 0,
        "audio_end_ms": ms,
    }


CANCEL = {"type": "response.cancel"}
NO_INTERRUPT = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "interrupt_response": False}}},
    },
}


def talked_over(engine: FakeEngine, client: tuple = (), until_s: float = 8.0) -> Scenario:
    """The user speaks 0-2 s, and again 3.5-4.5 s while the first reply is heard; the client
    sends `client` ((time, event) pairs)."""
    sc = Scenario(engine).speak(0.0, 2.0).speak(3.5, 4.5)
    for t, ev in client:
        sc.at(t, ev)
    return sc.run(until_s)


def first_reply(sc: Scenario):
    started = sc.of(E.ResponseStarted)[0]
    ended = next(e for e in sc.of(E.ResponseEnded) if e.response_id == started.response_id)
    audio = [e for e in sc.of(E.ResponseAudio) if e.response_id == started.response_id]
    return started, ended, audio


def rollback_before_next_unit(engine: FakeEngine, after_s: float):
    """The one rollback, and the first unit the engine got after `after_s`."""
    rollbacks, units = engine.ops("interrupt_ms"), [c for c in engine.ops("append_unit") if c.t > after_s]
    assert len(rollbacks) == 1 and units, engine.calls
    return rollbacks[0], units[0]


def test_barge_in_while_the_reply_is_generated_cancels_it_and_keeps_what_was_heard():
    engine = FakeEngine([speech(10.0, **SLOW), speech(1.0)])
    sc = talked_over(engine)
    started, ended, audio = first_reply(sc)
    began = sc.of(E.SpeechBegan)
    assert len(began) == 2 and sc.when(began[1]) == pytest.approx(3.8)
    assert ended.outcome == E.Outcome("cancelled", "turn_detected")
    names, i = sc.names(), sc.index(ended)
    assert names[i : i + 3] == ["ResponseEnded", "ResponseTimings", "SpeechBegan"]  # cut before the turn begins
    assert sc.when(ended) == sc.when(began[1])
    later = [ev for t, ev in sc.events[i + 1 :] if getattr(ev, "response_id", None) == started.response_id]
    assert [type(ev) for ev in later] == [E.ResponseTimings]  # nothing of it after its end
    # The context keeps the reply audio the client had heard: the clock since its first audio.
    heard_ms = 1000 * (sc.when(began[1]) - sc.when(audio[0]))
    rollback, unit = rollback_before_next_unit(engine, sc.when(began[1]))
    assert rollback.arg == pytest.approx(heard_ms) and heard_ms == pytest.approx(750)
    assert rollback.t >= max(c.t for c in engine.ops("reply_step") if c.t < sc.when(ended))
    assert engine.calls.index(rollback) == engine.calls.index(unit) - 1  # applied first, once
    assert len(sc.of(E.ResponseStarted)) == 2 and sc.of(E.ResponseEnded)[1].outcome.status == "completed"


def test_barge_in_while_the_reply_only_plays_out_keeps_what_was_heard():
    engine = FakeEngine([speech(4.0, **FAST), speech(1.0)])
    sc = talked_over(engine)
    started, ended, audio = first_reply(sc)
    began = sc.of(E.SpeechBegan)[1]
    assert ended.outcome == E.Outcome("completed") and sc.when(ended) < sc.when(began)
    assert [e.outcome.status for e in sc.of(E.ResponseEnded)] == ["completed", "completed"]  # no cancel
    rollback, unit = rollback_before_next_unit(engine, sc.when(began))
    assert rollback.arg == pytest.approx(1000 * (sc.when(began) - sc.when(audio[0])))
    assert rollback.arg == pytest.approx(1100) and rollback.arg < 4000  # 1.1 s of the 4 s played
    assert engine.calls.index(rollback) == engine.calls.index(unit) - 1


def test_talking_after_the_reply_played_out_cuts_nothing():
    engine = FakeEngine([speech(1.0, **FAST), speech(1.0)])
    sc = Scenario(engine).speak(0.0, 2.0).speak(5.0, 6.0).run(8.0)  # the reply plays 2.7-3.7 s
    assert [e.outcome.status for e in sc.of(E.ResponseEnded)] == ["completed", "completed"]
    assert engine.ops("interrupt_ms") == [] and len(sc.of(E.SpeechBegan)) == 2


def test_truncate_and_cancel_after_a_barge_in_cut_to_the_clients_position():
    """An SDK hears speech_started and sends truncate (what it played) + cancel."""
    engine = FakeEngine([speech(10.0, **SLOW), speech(1.0)])
    sc = talked_over(engine, client=((3.95, truncate(200)), (3.96, CANCEL)))
    started, ended, _ = first_reply(sc)
    assert ended.outcome == E.Outcome("cancelled", "turn_detected")
    assert sc.of(E.ItemTruncated) == [E.ItemTruncated(started.item.id, 0, 200)]
    # the barge-in already cancelled it: OpenAI's answer to a cancel with nothing active
    assert [e["code"] for e in sc.errors()] == ["response_cancel_not_active"]
    rollback, _ = rollback_before_next_unit(engine, 3.96)
    assert rollback.arg == 200.0  # the client's cut, not the server's 750 ms


def test_truncate_and_cancel_of_a_reply_being_generated_cancel_it_once():
    """Client-side turn detection: truncate + cancel while the reply is still generated."""
    engine = FakeEngine([speech(10.0, **SLOW)])
    sc = Scenario(engine).speak(0.0, 2.0).at(3.25, truncate(100)).at(3.26, CANCEL).run(4.0)
    started, ended, _ = first_reply(sc)
    assert ended.outcome == E.Outcome("cancelled", "client_cancelled")
    assert sc.names()[-3:] == ["ResponseEnded", "ResponseTimings", "ItemTruncated"]
    assert sc.errors() == []  # the cancel is the truncate's pair, not an error
    assert not [ev for ev in sc.of(E.ResponseAudio) if sc.when(ev) > sc.when(ended)]

    later = Scenario(FakeEngine([speech(10.0, **SLOW), speech(1.0)])).speak(0.0, 2.0).speak(4.0, 5.0)
    later.at(3.25, truncate(100)).at(3.26, CANCEL).run(7.0)
    rollback, unit = rollback_before_next_unit(later.engine, 3.26)
    assert rollback.arg == 100.0 and later.engine.calls.index(rollback) == later.engine.calls.index(unit) - 1


def test_response_cancel_with_nothing_active_is_an_error_and_changes_nothing():
    engine = FakeEngine([speech(1.0, **FAST)])
    sc = Scenario(engine).speak(0.0, 2.0).at(0.55, CANCEL).at(5.05, CANCEL).run(6.0)  # before; after it played
    assert [e["code"] for e in sc.errors()] == ["response_cancel_not_active"] * 2
    assert [e.outcome.status for e in sc.of(E.ResponseEnded)] == ["completed"]
    assert engine.ops("interrupt_ms", "forget_reply") == []


def test_no_barge_in_when_interrupt_response_is_false_the_turn_is_heard_after_the_reply():
    engine = FakeEngine([speech(4.0, **SLOW)])  # generated until 5.85 s
    sc = talked_over(engine, client=((0.05, NO_INTERRUPT),))
    assert [e.outcome.status for e in sc.of(E.ResponseEnded)] == ["completed"]
    assert len(sc.of(E.SpeechBegan)) == 2 and engine.ops("interrupt_ms") == []
    last_step = engine.ops("reply_step")[-1]
    second_turn = [c for c in engine.ops("append_unit") if c.t > 3.8]
    assert second_turn and all(engine.calls.index(c) > engine.calls.index(last_step) for c in second_turn)
    assert sum(c.arg for c in second_turn) == pytest.approx(1000 * (5.024 - 3.188))  # all of it, in the end


@pytest.mark.parametrize("trigger", ["server_vad", "response.create"])
def test_reply_steps_are_due_by_first_audio_then_before_the_listener_starves(trigger):
    """The deadline each reply step carries to the engine's scheduler (respond.py)."""
    reply = Reply((Step("Hi", 0, 0.1), Step("", 500, 0.1), Step("", 500, 0.1), Step("", 500, 0.1)))
    sc = Scenario(engine := FakeEngine([reply]))
    if trigger == "server_vad":
        sc.speak(0.0, 2.0)
    else:
        sc.at(
            0.55,
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            },
        )
        sc.at(1.05, {"type": "response.create"})
    sc.run(5.0)
    t_turn = sc.when(sc.of(E.SpeechEnded)[0]) if trigger == "server_vad" else 1.05
    t_audio = sc.when(sc.of(E.ResponseAudio)[0])
    due = [c.arg for c in engine.ops("reply_step")]
    first = t_turn + FIRST_AUDIO_TARGET_S
    starve = [t_audio + s - PLAYOUT_MARGIN_S for s in (0.5, 1.0, 1.5)]
    assert due == pytest.approx([first, first, *starve])  # the last one is the step that ends it
    timings = sc.of(E.ResponseTimings)[0].timings_ms
    assert timings["first_text_ms"] == pytest.approx(1000 * (sc.when(sc.of(E.ResponseText)[0]) - t_turn), abs=0.1)
    assert timings["first_audio_ms"] == pytest.approx(1000 * (t_audio - t_turn), abs=0.1)


def test_idle_sessions_are_closed_by_the_reaper_within_one_period_and_a_failing_close_stops_nothing():
    closed: list[tuple[str, float]] = []

    async def timeline():
        loop = asyncio.get_running_loop()
        m = SessionManager(4, idle_timeout_s=10, clock=loop.time)
        busy, quiet, broken = m.acquire(), m.acquire(), m.acquire()
        busy.close = lambda why: closed.append(("busy", loop.time()))
        quiet.close = lambda why: closed.append(("quiet", loop.time()))

        def fail(why):
            raise RuntimeError("queue full")

        broken.close = fail
        reaper = asyncio.create_task(m.reap())
        for t in (4.0, 8.0, 12.0):  # the busy session's client sends something
            await asyncio.sleep(t - loop.time())
            m.touch(busy)
        await asyncio.sleep(40 - loop.time())
        reaper.cancel()
        return m.reap_period_s, m.in_use

    period, in_use = virtual_time.run(timeline())
    assert period == 5.0 and in_use == 0
    # idle > 10 s: quiet (and broken) at the 15 s look, busy (last active at 12 s) at 25 s
    assert closed == [("quiet", 15.0), ("busy", 25.0)]


@pytest.mark.parametrize("pace", ["generating", "playing"])
def test_barge_in_silences_the_webrtc_track_from_the_next_frame(pace):
    """The real outgoing track (media.PlayoutTrack) reads the queue every 20 ms: the frame after
    the cut is silence, and the context keeps exactly what the track played."""
    engine = FakeEngine([speech(10.0, **SLOW) if pace == "generating" else speech(4.0, **FAST)])
    sc = Scenario(engine, "webrtc").speak(0.0, 2.0).speak(3.5, 4.5).run(5.0)
    started, ended, audio = first_reply(sc)
    t_cut = sc.when(sc.of(E.SpeechBegan)[1])
    if pace == "generating":
        assert ended.outcome == E.Outcome("cancelled", "turn_detected") and sc.when(ended) == t_cut
    else:
        assert ended.outcome == E.Outcome("completed") and sc.when(ended) < t_cut
    before = [rms for t, rms in sc.frames if sc.when(audio[0]) < t <= t_cut]
    after = [rms for t, rms in sc.frames if t > t_cut]
    assert before and min(before) > 0.05  # the reply was heard up to the cut...
    assert after and max(after) == 0.0  # ...and not one frame after it
    assert len(after) == pytest.approx((5.0 - t_cut) / 0.02, abs=1.5)  # the track kept running
    voiced = sum(rms > 0 for _, rms in sc.frames)
    rollback, _ = rollback_before_next_unit(engine, t_cut)
    assert rollback.arg == pytest.approx(20.0 * voiced)  # heard = played, to the sample
