"""The client's function-call items: `function_call` (a call the client adds, e.g. Pipecat
restoring a saved context) and `function_call_output` (a call's result), parsed and checked; the
checks of a call sent back (its id, name and arguments) serve chat messages too (chat_tools.py)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .tool_config import NAME
from .validate import bad, get_field, no_unknown

if TYPE_CHECKING:
    from .protocol import ConversationItem

ITEM_TYPES = ("message", "function_call", "function_call_output")
MAX_CALL_ID_CHARS = 64
MAX_ARGUMENTS_CHARS = 32_000


def call_item(kind: str, o: dict[str, Any], p: str) -> ConversationItem:
    from .protocol import ConversationItem

    call_id = call_id_field(o, "call_id", p)
    if kind == "function_call_output":
        no_unknown(o, {"id", "type", "object", "call_id", "output", "status"}, p)
        output = get_field(o, "output", str, p, required=True)
        return ConversationItem(get_field(o, "id", str, p), "", (), kind, call_id, output=output)
    no_unknown(o, {"id", "type", "object", "call_id", "name", "arguments", "status"}, p)
    name, arguments = call_fields(o, p)
    return ConversationItem(get_field(o, "id", str, p), "", (), kind, call_id, name, arguments)


def call_id_field(o: dict[str, Any], key: str, p: str) -> str:
    """A call's id (`call_id` here, a chat message's `id` / `tool_call_id`), checked."""
    call_id = get_field(o, key, str, p, required=True)
    if not 0 < len(call_id) <= MAX_CALL_ID_CHARS:
        raise bad("invalid_value", f"Invalid value for '{p}.{key}': 1 to {MAX_CALL_ID_CHARS} characters.", f"{p}.{key}")
    return call_id


def call_fields(o: dict[str, Any], p: str) -> tuple[str, str]:
    """(name, arguments) of a call the client sends back, checked: a function name, and the
    arguments a JSON object as text ("" is {})."""
    name = get_field(o, "name", str, p, required=True)
    if not NAME.fullmatch(name):
        raise bad("invalid_value", f"Invalid value for '{p}.name': {name!r} is not a function name.", f"{p}.name")
    arguments = get_field(o, "arguments", str, p, required=True)
    if len(arguments) > MAX_ARGUMENTS_CHARS:
        raise bad("invalid_value", f"'{p}.arguments' is over {MAX_ARGUMENTS_CHARS} characters.", f"{p}.arguments")
    try:
        ok = isinstance(json.loads(arguments or "{}"), dict)
    except ValueError:
        ok = False
    if not ok:
        raise bad("invalid_value", f"Invalid value for '{p}.arguments': a JSON object as a string.", f"{p}.arguments")
    return name, arguments or "{}"
