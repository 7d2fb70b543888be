"""What a reply is asked to do with tools: plain, frozen, picklable values (they cross to model
processes inside `GenerateOptions`).

`Tool` is one function (its JSON schema kept as the client's JSON text, so key order and the
prompt's rendering are stable); `ToolSpec` is a reply's tool list and `tool_choice`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHOICES = ("auto", "none", "required", "function")
NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
NO_PARAMETERS = '{"type": "object", "properties": {}, "additionalProperties": false}'


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    parameters: str | None = None  # a JSON Schema object as JSON text; None: the client sent none

    def schema(self) -> dict[str, Any]:
        """The arguments' schema (a function without `parameters` takes none, as OpenAI's does)."""
        return json.loads(self.parameters if self.parameters is not None else NO_PARAMETERS)

    def chat_shape(self) -> dict[str, Any]:
        """The nested chat-completions shape the official template lists in `<tools>`."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            fn["description"] = self.description
        if self.parameters is not None:
            fn["parameters"] = json.loads(self.parameters)
        return {"type": "function", "function": fn}


@dataclass(frozen=True)
class ToolSpec:
    """A reply's tools: `choice` auto (the model may call), none (it may not), required (it calls
    at least one, first thing) or function (it calls `name`, once, first thing)."""

    tools: tuple[Tool, ...]
    choice: str = "auto"
    name: str | None = None  # choice == "function"
    parallel: bool = True  # more than one call in a reply

    def __post_init__(self) -> None:
        assert self.choice in CHOICES, self.choice
        assert (self.choice == "function") == (self.name is not None), (self.choice, self.name)

    @property
    def forced(self) -> bool:
        """The reply is calls only, from its first token (required, or a named function)."""
        return self.choice in ("required", "function")

    def callable(self) -> tuple[Tool, ...]:
        if self.choice == "none":
            return ()
        if self.choice == "function":
            return tuple(t for t in self.tools if t.name == self.name)
        return self.tools


def load_tools(path: str | Path) -> tuple[Tool, ...]:
    """Function tools from a JSON file: a list of tools (realtime `{"type": "function", "name",
    "description", "parameters"}` or the chat shape `{"type": "function", "function": {...}}`),
    or an object with such a `tools` list. Raises ValueError naming what is wrong."""
    from .grammar import schema_error

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tools file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"tools file {str(path)!r} is not JSON ({e})") from None
    items = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError(f"tools file {str(path)!r}: expected a non-empty list of function tools")
    tools: list[Tool] = []
    for i, t in enumerate(items):
        fn = t.get("function", t) if isinstance(t, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(fn, dict) or not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"tools file: tool {i} needs a name of 1-64 of a-z, A-Z, 0-9, _ and -")
        params = fn.get("parameters")
        if params is not None and (why := schema_error(params)):
            raise ValueError(f"tools file: tool {name!r} has a schema that cannot be used: {why}")
        if name in {x.name for x in tools}:
            raise ValueError(f"tools file: duplicate tool name {name!r}")
        desc = fn.get("description")
        tools.append(
            Tool(name, desc if isinstance(desc, str) else None, None if params is None else json.dumps(params))
        )
    return tuple(tools)


def choice_of(tools: tuple[Tool, ...], choice: str, parallel: bool = True) -> ToolSpec:
    """A ToolSpec from a command line's choice: auto, none, required, or a tool's name."""
    if choice in ("auto", "none", "required"):
        return ToolSpec(tools, choice, None, parallel)
    if choice not in {t.name for t in tools}:
        raise ValueError(f"tool choice {choice!r} is neither auto, none, required nor one of the tools")
    return ToolSpec(tools, "function", choice, parallel)
