"""What the tool tests share: a tool schema the random tiny model can always finish (an enum and
a bounded integer), and checks that a call parses, matches its schema and came in the event order
every stock client needs (docs/protocol.md, "Function calling")."""

from __future__ import annotations

import json

import jsonschema

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather forecast.",
    "parameters": WEATHER,
}
TIME_TOOL = {
    "type": "function",
    "name": "get_time",
    "description": "The time now.",
    "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME_TOOL["parameters"]}


def valid_call(name: str, arguments: str) -> dict:
    """The parsed arguments; fails unless they match the tool's schema."""
    args = json.loads(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


def checked_calls(events: list[dict], response_id: str) -> list[dict]:
    """The response's completed function_call items (from its response.done), after checking
    each came in the one order every stock client needs: output_item.added (in_progress, empty
    arguments), conversation.item.added, arguments deltas that add up, arguments.done,
    conversation.item.done, output_item.done (completed), then response.done; valid arguments,
    distinct call_ids of at most 32 characters and distinct output indices."""
    done = next(e for e in events if e["type"] == "response.done" and e["response"]["id"] == response_id)
    end = events.index(done)
    calls = [i for i in done["response"]["output"] if i["type"] == "function_call"]
    for c in calls:
        mine = [
            (k, e)
            for k, e in enumerate(events[:end])
            if (e.get("item") or {}).get("id") == c["id"] or e.get("item_id") == c["id"]
        ]
        kinds = [e["type"] for _, e in mine if not e["type"].endswith(".delta")]
        assert kinds == [
            "response.output_item.added",
            "conversation.item.added",
            "response.function_call_arguments.done",
            "conversation.item.done",
            "response.output_item.done",
        ], kinds
        added = mine[0][1]
        assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
        assert added["item"]["name"] == c["name"] and added["item"]["call_id"] == c["call_id"]
        deltas = "".join(e["delta"] for _, e in mine if e["type"] == "response.function_call_arguments.delta")
        args_done = next(e for _, e in mine if e["type"] == "response.function_call_arguments.done")
        item_done = mine[-1][1]
        assert deltas == args_done["arguments"] == item_done["item"]["arguments"] == c["arguments"]
        assert args_done["name"] == c["name"] and item_done["item"]["status"] == c["status"] == "completed"
        assert item_done["output_index"] == added["output_index"]
        assert 0 < len(c["call_id"]) <= 32
        valid_call(c["name"], c["arguments"])
    assert len({c["call_id"] for c in calls}) == len(calls)
    indices = [
        next(
            e["output_index"]
            for e in events
            if e["type"] == "response.output_item.added" and e["item"]["id"] == c["id"]
        )
        for c in calls
    ]
    assert len(set(indices)) == len(indices)
    return calls
