"""Function calling in Chat Completions, on the wire.

Owns: the request's `tools` / `tool_choice` / `parallel_tool_calls` -> an omni.tools.spec.ToolSpec
(with the realtime tool config's checks and `param` paths, tool_config.py); an assistant
message's `tool_calls` and `tool` messages (a call sent back is checked as a realtime
`function_call` item is, tool_items.py; a result must answer a call of an earlier assistant
message); and a reply's calls as OpenAI writes them (`ChatCalls`): whole in `message.tool_calls`,
or streamed as `delta.tool_calls` entries, the first of a call with its `index`, `id`, `type` and
name (arguments ""), the later ones with more of its arguments. Does not own: what the model is
shown (chat/o26.py), the grammar that keeps the arguments valid (omni.tools).
"""

from __future__ import annotations

from typing import Any

from omni.tools.calls import CallPiece
from omni.tools.spec import ToolSpec

from ..chat.request import Message, Text, ToolCall
from ..ids import new_id
from .tool_config import check_choice, parse_choice, parse_tools
from .tool_items import call_fields, call_id_field
from .validate import as_type, bad, get_field, no_unknown

MAX_CALLS_PER_MESSAGE = 128


def tool_spec(req: dict[str, Any]) -> ToolSpec | None:
    """The reply's tools from the request body; None without tools (`tool_choice` auto or none
    then change nothing; required or a named function need tools)."""
    tools = parse_tools(req["tools"], "tools") if req.get("tools") is not None else ()
    parallel = get_field(req, "parallel_tool_calls", bool, "")
    raw = req.get("tool_choice")
    choice, name = parse_choice(raw, "tool_choice") if raw is not None else ("auto", None)
    if not tools:
        if choice in ("required", "function"):
            raise bad(
                "invalid_value",
                "Invalid value for 'tool_choice': a required or named tool choice is only allowed when 'tools' "
                "are specified.",
                "tool_choice",
            )
        return None
    check_choice(
        choice, name, tools, "tool_choice.function" if isinstance(raw, dict) and "function" in raw else "tool_choice"
    )
    return ToolSpec(tools, choice, name, True if parallel is None else parallel)


def assistant_calls(v: Any, p: str) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls`: [{"id", "type": "function", "function": {"name",
    "arguments"}}]."""
    items = as_type(v, list, p)
    if len(items) > MAX_CALLS_PER_MESSAGE:
        raise bad("invalid_value", f"'{p}' holds {len(items)} calls; the limit is {MAX_CALLS_PER_MESSAGE}.", p)
    out = []
    for i, x in enumerate(items):
        q = f"{p}[{i}]"
        call = as_type(x, dict, q)
        no_unknown(call, {"id", "type", "function"}, q)
        kind = get_field(call, "type", str, q) or "function"
        if kind != "function":
            raise bad("unsupported_value", f"'{q}.type' {kind!r}: only function calls are supported.", f"{q}.type")
        call_id = call_id_field(call, "id", q)
        fn = get_field(call, "function", dict, q, required=True)
        no_unknown(fn, {"name", "arguments"}, f"{q}.function")
        name, arguments = call_fields(fn, f"{q}.function")
        out.append(ToolCall(call_id, name, arguments))
    return tuple(out)


def tool_message(m: dict[str, Any], p: str) -> Message:
    """A `tool` message: {"role": "tool", "tool_call_id", "content": text or text parts}."""
    no_unknown(m, {"role", "content", "tool_call_id", "name"}, p)
    call_id = call_id_field(m, "tool_call_id", p)
    content = m.get("content")
    if content is None:
        raise bad("missing_required_parameter", f"Missing required parameter: '{p}.content'.", f"{p}.content")
    if isinstance(content, str):
        return Message("tool", (Text(content),), call_id=call_id)
    parts = []
    for j, x in enumerate(as_type(content, list, f"{p}.content")):
        q = f"{p}.content[{j}]"
        part = as_type(x, dict, q)
        kind = get_field(part, "type", str, q, required=True)
        if kind != "text":
            raise bad("invalid_value", f"Invalid value for '{q}.type': '{kind}'. A tool's result is text.", f"{q}.type")
        no_unknown(part, {"type", "text"}, q)
        parts.append(Text(get_field(part, "text", str, q, required=True)))
    return Message("tool", tuple(parts), call_id=call_id)


def check_answers(messages: tuple[Message, ...]) -> None:
    """Every tool message answers a call of an earlier assistant message."""
    known: set[str] = set()
    for i, m in enumerate(messages):
        known.update(c.id for c in m.calls)
        if m.role == "tool" and m.call_id not in known:
            p = f"messages[{i}].tool_call_id"
            raise bad(
                "invalid_value",
                f"Invalid value for '{p}': {m.call_id!r} answers no call; a tool message must follow an "
                "assistant message whose tool_calls hold that id.",
                p,
            )


class ChatCalls:
    """One reply's calls on the wire: their ids, names and arguments so far."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}  # CallPiece.index -> {id, name, arguments, done}

    def deltas(self, pieces: tuple[CallPiece, ...]) -> list[dict]:
        """The `delta`s that stream `pieces` (noting them for `whole`)."""
        out: list[dict] = []
        for p in pieces:
            c = self.calls.get(p.index)
            if c is None:
                c = self.calls[p.index] = {"id": new_id("call"), "name": p.name, "arguments": "", "done": False}
                fn = {"name": p.name, "arguments": ""}
                out.append({"tool_calls": [{"index": p.index, "id": c["id"], "type": "function", "function": fn}]})
            if p.delta:
                c["arguments"] += p.delta
                out.append({"tool_calls": [{"index": p.index, "function": {"arguments": p.delta}}]})
            c["done"] = c["done"] or p.done
        return out

    def whole(self) -> list[dict]:
        """`message.tool_calls`: the calls written whole (one the token cap cut is left out)."""
        return [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(self.calls.items())
            if c["done"]
        ]
