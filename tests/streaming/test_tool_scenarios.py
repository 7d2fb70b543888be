"""Function calling as conversation timelines on virtual time (scenario.py): a spoken preamble
that stops at the call (auto), a call-only reply, parallel calls, barge-in while a call's
arguments stream, a result answered, one for an unknown call, and a user heard while a call is
pending. Each asserts on what the client was sent and on what the engine was asked."""

from __future__ import annotations

from omni.tools.calls import CallPiece
from omni.tools.spec import ToolSpec
from scenario import FakeEngine, Reply, Scenario, Step, speech
from streaming.session import events as E

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TOOLS = {"type": "session.update", "session": {"type": "realtime", "tools": [WEATHER]}}
ASK = {"type": "response.create"}


def piece(delta: str, done: bool = False, index: int = 0) -> CallPiece:
    return CallPiece(index, "get_weather", delta, done)


def call(*deltas: str, cost_s: float = 0.1, index: int = 0) -> tuple[Step, ...]:
    """A call whose arguments come in these pieces, one engine step each (the last one ends it)."""
    last = len(deltas) - 1
    return tuple(Step(calls=(piece(d, k == last, index),), cost_s=cost_s) for k, d in enumerate(deltas))


def kinds(sc: Scenario, response_id: str) -> list[str]:
    """The response's events by type name (audio and timings left out)."""
    return [
        type(ev).__name__
        for _, ev in sc.events
        if getattr(ev, "response_id", None) == response_id and not isinstance(ev, (E.ResponseAudio, E.ResponseTimings))
    ]


def test_auto_preamble_is_spoken_and_closes_before_the_call():
    preamble = (Step("Let me check. ", 500.0), Step("One moment.", 500.0))
    engine = FakeEngine([Reply(preamble + call('{"city": ', '"Paris"}'))])
    sc = Scenario(engine).at(0.05, TOOLS).speak(0.0, 2.0).run(6.0)
    (opts,) = [c.arg for c in engine.ops("start_reply")]
    assert opts.tools == ToolSpec(opts.tools.tools, "auto") and opts.tools.tools[0].name == "get_weather"
    (started,) = sc.of(E.ResponseStarted)
    assert started.item is None  # the message item opens with the first output
    assert kinds(sc, started.response_id) == [
        "ResponseStarted",
        "MessageStarted",
        "ResponseText",
        "ResponseText",
        "MessageEnded",  # audio stops at the call: the message closes first
        "CallStarted",
        "CallArguments",
        "CallArguments",
        "CallEnded",
        "ResponseEnded",
    ]
    (ended,) = sc.of(E.ResponseEnded)
    (c,) = ended.calls
    assert ended.outcome.status == "completed" and ended.closed and ended.text == "Let me check. One moment."
    assert (c.name, c.arguments, c.status) == ("get_weather", '{"city": "Paris"}', "completed")
    assert len(c.call_id) <= 32
    (cs,) = sc.of(E.CallStarted)
    assert cs.output_index == 1 and cs.previous_item_id == ended.item.id and cs.call.arguments == ""
    assert sum(len(e.pcm_24k) for e in sc.of(E.ResponseAudio)) == 2 * 500 * 24  # no audio after the call


def test_auto_without_a_call_is_a_plain_spoken_reply():
    engine = FakeEngine([speech(1.0)])
    sc = Scenario(engine).at(0.05, TOOLS).speak(0.0, 2.0).run(6.0)
    (started,) = sc.of(E.ResponseStarted)
    (ended,) = sc.of(E.ResponseEnded)
    assert kinds(sc, started.response_id)[:3] == ["ResponseStarted", "MessageStarted", "ResponseText"]
    assert ended.calls == () and ended.item is not None and ended.outcome.status == "completed"


def test_parallel_calls_get_their_own_items_indices_and_call_ids():
    steps = call('{"city": "Paris"}', index=0) + call('{"city": ', '"Rome"}', index=1)
    engine = FakeEngine([Reply(steps)])
    sc = Scenario(engine).at(0.05, TOOLS).at(0.1, ASK).run(3.0)
    (ended,) = sc.of(E.ResponseEnded)
    assert ended.item is None  # calls only: no message item
    a, b = ended.calls
    assert [a.arguments, b.arguments] == ['{"city": "Paris"}', '{"city": "Rome"}']
    assert a.id != b.id and a.call_id != b.call_id
    assert [e.output_index for e in sc.of(E.CallStarted)] == [0, 1]
    assert sc.of(E.CallStarted)[1].previous_item_id == a.id


def test_barge_in_while_the_arguments_stream_cancels_and_leaves_the_call_incomplete():
    slow = call('{"ci', 'ty": ', '"Pa', 'ris"}', cost_s=0.6)
    engine = FakeEngine([Reply(slow), speech(1.0)])
    sc = Scenario(engine).at(0.05, TOOLS).speak(0.0, 2.0).speak(3.2, 4.2).run(8.0)
    first = sc.of(E.ResponseEnded)[0]
    assert first.outcome == E.Outcome("cancelled", "turn_detected")
    (c,) = first.calls
    assert c.status == "incomplete" and c.arguments and c.arguments != '{"city": "Paris"}'
    (ended_call,) = sc.of(E.CallEnded)
    assert ended_call.call.status == "incomplete" and sc.index(ended_call) < sc.index(first)
    assert engine.ops("interrupt_ms"), "the context is cut back"
    assert len(sc.of(E.ResponseStarted)) == 2  # the barge-in turn is answered


def test_a_result_is_prefilled_and_answered_and_an_unknown_call_id_is_an_error():
    engine = FakeEngine([Reply(call('{"city": "Oslo"}')), speech(1.0)])

    def output(sc: Scenario) -> dict:
        c = sc.of(E.CallEnded)[0].call
        return {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": c.call_id, "output": "7 C"},
        }

    bad = {
        "type": "conversation.item.create",
        "event_id": "ev_x",
        "item": {"type": "function_call_output", "call_id": "call_nope", "output": "?"},
    }
    sc = Scenario(engine).at(0.05, TOOLS).at(0.1, ASK).at(1.0, output).at(1.1, bad).at(1.2, ASK).run(4.0)
    tool_turns = [c.arg for c in engine.ops("prefill") if c.arg.get("role") == "tool"]
    assert tool_turns == [{"turn": True, "role": "tool", "content": "7 C", "extend": False}]
    (err,) = sc.errors()
    assert (err["param"], err["event_id"]) == ("item.call_id", "ev_x")
    out = [e for e in sc.of(E.ItemAdded) if isinstance(e.item, E.FunctionOutput)]
    assert len(out) == 1 and out[0].previous_item_id == sc.of(E.CallEnded)[0].call.id
    second = sc.of(E.ResponseEnded)[1]
    assert second.item is not None and second.outcome.status == "completed"  # the answer, spoken


def test_the_user_is_heard_while_a_call_is_pending():
    engine = FakeEngine([Reply(call('{"city": "Oslo"}')), speech(1.0)])
    sc = Scenario(engine).at(0.05, TOOLS).at(0.1, ASK).speak(1.0, 3.0).run(6.0)
    assert sc.of(E.ResponseEnded)[0].calls[0].status == "completed"
    units = [c for c in engine.ops("append_unit") if c.t > 1.0]
    assert units and len(sc.of(E.ResponseStarted)) == 2  # heard, and answered


def test_a_result_sent_while_a_reply_is_made_goes_in_after_it():
    # an async tool's result arriving during the next (spoken) reply: acknowledged at once,
    # prefilled once that reply is over, so the context keeps the order the client saw
    engine = FakeEngine([Reply(call('{"city": "Oslo"}')), speech(3.0, cost_s=0.4), speech(1.0)])

    def output(sc: Scenario) -> dict:
        c = sc.of(E.CallEnded)[0].call
        return {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": c.call_id, "output": "late"},
        }

    sc = Scenario(engine).at(0.05, TOOLS).at(0.1, ASK).at(1.0, ASK).at(1.5, output).run(6.0)
    added = next(e for e in sc.of(E.ItemAdded) if isinstance(e.item, E.FunctionOutput))
    second = sc.of(E.ResponseEnded)[1]
    assert sc.when(added) < sc.when(second)  # acknowledged while the reply runs
    (turn,) = [c for c in engine.ops("prefill") if c.arg.get("role") == "tool"]
    assert turn.t >= sc.when(second) and second.outcome.status == "completed"  # the reply was not cut


def test_tools_changed_mid_session_are_shown_before_the_next_reply():
    clock = {**WEATHER, "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    change = {"type": "session.update", "session": {"type": "realtime", "tools": [clock]}}
    engine = FakeEngine([speech(0.5), speech(0.5), speech(0.5)])
    sc = Scenario(engine).at(0.05, TOOLS).at(0.1, ASK).at(1.5, change).at(1.6, ASK).at(3.0, ASK).run(5.0)
    (system,) = [c for c in engine.ops("set_system")]
    turns = [c for c in engine.ops("prefill") if c.arg.get("role") == "system"]
    assert len(turns) == 1 and '"name": "get_time"' in turns[0].arg["content"]  # once: then it is shown
    first, second, third = [c.arg.tools for c in engine.ops("start_reply")]
    assert [t.name for t in first.tools] == ["get_weather"] and [t.name for t in second.tools] == ["get_time"]
    assert third == second and system.t < turns[0].t < engine.ops("start_reply")[1].t
    assert not sc.errors()
