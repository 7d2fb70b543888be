"""Function tools on the wire: `tools`, `tool_choice` and `parallel_tool_calls` of a session or a
response, parsed into omni.tools values, and the GA shape `session.updated` shows.

Tools come flat (GA: {"type": "function", "name", "description", "parameters"}) or nested (the
chat shape some clients send: {"type": "function", "function": {...}}). Every check names its
`param`: a bad name, a duplicate, a schema llguidance cannot hold (`invalid_function_parameters`,
OpenAI's code), a tool list too large for a system turn; MCP and other tool types are refused as
not supported.
"""

from __future__ import annotations

import json
from typing import Any

from omni.tools.grammar import schema_error
from omni.tools.spec import NAME, Tool

from .validate import as_type, bad, get_field, no_unknown, one_of

MAX_TOOLS = 128  # OpenAI's limit per request
MAX_TOOLS_CHARS = 32_000  # the tools' JSON in the system turn (as `instructions`): about 8k tokens
MAX_DESCRIPTION_CHARS = 4_096
CHOICES = ("auto", "none", "required")


def parse_tools(v: Any, p: str) -> tuple[Tool, ...]:
    items = as_type(v, list, p)
    if len(items) > MAX_TOOLS:
        raise bad("invalid_value", f"'{p}' has {len(items)} tools; the limit is {MAX_TOOLS}.", p)
    tools = tuple(_tool(x, f"{p}[{i}]") for i, x in enumerate(items))
    seen: set[str] = set()
    for i, t in enumerate(tools):
        if t.name in seen:
            where = f"{p}[{i}].function" if items[i].get("function") is not None else f"{p}[{i}]"  # nested or flat
            raise bad("invalid_value", f"Duplicate function name '{t.name}' in '{p}'.", f"{where}.name")
        seen.add(t.name)
    size = sum(len(t.name) + len(t.description or "") + len(t.parameters or "") for t in tools)
    if size > MAX_TOOLS_CHARS:
        raise bad(
            "invalid_value",
            f"'{p}' is {size} characters of names, descriptions and schemas; the limit is {MAX_TOOLS_CHARS} "
            "(the tools are part of the model's system turn).",
            p,
        )
    return tools


def _tool(v: Any, p: str) -> Tool:
    obj = as_type(v, dict, p)
    kind = get_field(obj, "type", str, p) or "function"
    if kind != "function":
        raise bad(
            "unsupported_parameter",
            f"'{p}.type' {kind!r} is not supported: this server runs function tools only (no MCP servers).",
            f"{p}.type",
        )
    if obj.get("function") is not None:  # the nested chat shape
        no_unknown(obj, {"type", "function"}, p)
        p, obj = f"{p}.function", as_type(obj["function"], dict, f"{p}.function")
        no_unknown(obj, {"name", "description", "parameters", "strict"}, p)
    else:
        no_unknown(obj, {"type", "name", "description", "parameters"}, p)
    name = get_field(obj, "name", str, p, required=True)
    if not NAME.fullmatch(name):
        raise bad(
            "invalid_value",
            f"Invalid value for '{p}.name': {name!r}; function names are 1-64 of a-z, A-Z, 0-9, _ and -.",
            f"{p}.name",
        )
    desc = get_field(obj, "description", str, p)
    if desc is not None and len(desc) > MAX_DESCRIPTION_CHARS:
        raise bad("invalid_value", f"'{p}.description' is over {MAX_DESCRIPTION_CHARS} characters.", f"{p}.description")
    params = obj.get("parameters")
    if params is None:
        return Tool(name, desc)
    why = schema_error(params)
    if why is not None:
        raise bad(
            "invalid_function_parameters",
            f"Invalid schema for function '{name}': {why}",
            f"{p}.parameters",
        )
    return Tool(name, desc, json.dumps(params, ensure_ascii=False))


def parse_choice(v: Any, p: str) -> tuple[str, str | None]:
    """(auto | none | required | function, the function's name)."""
    if isinstance(v, str):
        return one_of(v, CHOICES, p), None
    obj = as_type(v, dict, p)
    kind = get_field(obj, "type", str, p, required=True)
    if kind == "mcp":
        raise bad("unsupported_parameter", f"'{p}': MCP tools are not supported by this server.", f"{p}.type")
    one_of(kind, ("function",), f"{p}.type")
    if obj.get("function") is not None:  # chat shape {"type": "function", "function": {"name"}}
        no_unknown(obj, {"type", "function"}, p)
        name = get_field(as_type(obj["function"], dict, f"{p}.function"), "name", str, f"{p}.function", required=True)
    else:
        no_unknown(obj, {"type", "name"}, p)
        name = get_field(obj, "name", str, p, required=True)
    return "function", name


def check_choice(choice: str, name: str | None, tools: tuple[Tool, ...], p: str) -> None:
    """A named choice must name one of the tools in force."""
    if choice == "function" and name not in {t.name for t in tools}:
        raise bad(
            "invalid_value",
            f"'{p}.name' {name!r} is not one of the tools: " + (", ".join(t.name for t in tools) or "none are set"),
            f"{p}.name",
        )


def tools_wire(tools: tuple[Tool, ...]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        obj: dict[str, Any] = {"type": "function", "name": t.name}
        if t.description is not None:
            obj["description"] = t.description
        if t.parameters is not None:
            obj["parameters"] = json.loads(t.parameters)
        out.append(obj)
    return out


def choice_wire(choice: str, name: str | None) -> str | dict[str, Any]:
    return {"type": "function", "name": name} if choice == "function" else choice
