"""Function tools on the wire, parsed: what session.update and response.create accept (flat and
nested tools, every tool_choice) and the clear error each bad input gets, with its param."""

from __future__ import annotations

import json

import pytest

from streaming.errors import ProtocolError
from streaming.gateway.protocol import SessionConfig, apply_update, parse_client_event, to_wire

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def update(session: dict) -> SessionConfig:
    return apply_update(SessionConfig(), session)


def test_flat_and_nested_tools_and_every_choice_are_accepted_and_echoed():
    nested = {"type": "function", "function": {"name": "get_time", "description": "Time.", "strict": True}}
    c = update({"tools": [WEATHER, nested], "tool_choice": {"type": "function", "name": "get_time"}})
    assert [t.name for t in c.tools] == ["get_weather", "get_time"] and (c.tool_choice, c.tool_name) == (
        "function",
        "get_time",
    )
    wire = to_wire(c)
    assert wire["tools"][0] == WEATHER and wire["tools"][1] == {
        "type": "function",
        "name": "get_time",
        "description": "Time.",
    }
    assert wire["tool_choice"] == {"type": "function", "name": "get_time"}
    for choice in ("auto", "none", "required"):
        assert update({"tools": [WEATHER], "tool_choice": choice}).tool_choice == choice
    assert update({"parallel_tool_calls": False}).parallel_tool_calls is False
    ev = parse_client_event(
        json.dumps(
            {
                "type": "response.create",
                "response": {"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": False},
            }
        )
    )
    assert ev.response.tools[0].name == "get_weather" and ev.response.tool_choice == ("required", None)
    assert ev.response.parallel_tool_calls is False


BAD = [
    ({"tools": [{**WEATHER, "name": "get weather"}]}, "invalid_value", "session.tools[0].name"),
    ({"tools": [WEATHER, WEATHER]}, "invalid_value", "session.tools[1].name"),
    (
        {"tools": [{**WEATHER, "parameters": {"type": "array"}}]},
        "invalid_function_parameters",
        "session.tools[0].parameters",
    ),
    (
        {"tools": [{**WEATHER, "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}]},
        "invalid_function_parameters",
        "session.tools[0].parameters",
    ),
    ({"tools": [{"type": "mcp", "server_label": "x"}]}, "unsupported_parameter", "session.tools[0].type"),
    ({"tools": [{**WEATHER, "extra": 1}]}, "unknown_parameter", "session.tools[0].extra"),
    ({"tools": [{**WEATHER, "description": "x" * 5000}]}, "invalid_value", "session.tools[0].description"),
    (
        {"tools": [{**WEATHER, "name": f"f{i}", "description": "x" * 4000} for i in range(9)]},
        "invalid_value",
        "session.tools",
    ),
    ({"tools": [WEATHER] * 129}, "invalid_value", "session.tools"),
    ({"tool_choice": "sometimes"}, "invalid_value", "session.tool_choice"),
    ({"tool_choice": {"type": "mcp", "server_label": "x"}}, "unsupported_parameter", "session.tool_choice.type"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
        "invalid_value",
        "session.tool_choice.name",
    ),
    ({"parallel_tool_calls": "yes"}, "invalid_type", "session.parallel_tool_calls"),
]


@pytest.mark.parametrize("session, code, param", BAD, ids=[str(i) for i in range(len(BAD))])
def test_a_bad_tool_input_names_its_param_and_changes_nothing(session, code, param):
    with pytest.raises(ProtocolError) as e:
        parse_client_event(json.dumps({"type": "session.update", "event_id": "ev_1", "session": session}))
    assert (e.value.code, e.value.param, e.value.event_id) == (code, param, "ev_1"), e.value.message


@pytest.mark.parametrize(
    "item, param",
    [
        ({"type": "function_call_output", "output": "x"}, "item.call_id"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}, "item.arguments"),
        ({"type": "function_call", "call_id": "c", "name": "f g", "arguments": "{}"}, "item.name"),
        ({"type": "function_call_output", "call_id": "c" * 65, "output": "x"}, "item.call_id"),
    ],
)
def test_a_bad_call_item_names_its_param(item, param):
    with pytest.raises(ProtocolError) as e:
        parse_client_event(json.dumps({"type": "conversation.item.create", "item": item}))
    assert e.value.param == param
