"""What a reply is asked to do with tools: plain, frozen, picklable values (they cross to model
processes inside `GenerateOptions`).

`Tool` is one function (its JSON schema kept as the client's JSON text, so key order and the
prompt's rendering are stable); `ToolSpec` is a reply's tool list and `tool_choice`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CHOICES = ("auto", "none", "required", "function")
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
