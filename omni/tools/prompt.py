"""The strings of MiniCPM-o 2.6's official chat template (the Qwen2.5 template in its
tokenizer_config.json) for tools: the `# Tools` section of the system turn, a call as the model
writes it, and a tool result as the template feeds it back. tests/test_tools_prompt.py renders
the official template with jinja and checks these against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..processing.prompt import plain_text
from .spec import Tool

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"  # single tokens of the vocabulary
SECTION_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
SECTION_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)
# What the model writes between <tool_call> and the arguments, and after them, for one call.
NAME_PREFIX = '\n{"name": "'
ARGS_PREFIX = '", "arguments": '
CALL_SUFFIX = "}\n"


def tools_json(tools: Sequence[Tool]) -> str:
    """One line per tool, as the template's `tool | tojson` (transformers' tojson: json.dumps,
    key order kept, non-ASCII as is), without the model's media tokens (they would mark media that
    is not there; none holds a quote or a backslash, so the JSON stays whole)."""
    return "".join("\n" + plain_text(json.dumps(t.chat_shape(), ensure_ascii=False)) for t in tools)


def tools_section(tools: Sequence[Tool]) -> str:
    """The `# Tools` section the template appends to the system message ("\\n\\n" first)."""
    return "\n\n" + SECTION_HEAD + tools_json(tools) + SECTION_TAIL


def tools_turn_text(tools: Sequence[Tool]) -> str:
    """A later system turn's content that lists the tools in force (they changed mid-session)."""
    return SECTION_HEAD + tools_json(tools) + SECTION_TAIL


def call_text(name: str, arguments: str) -> str:
    """One call as the template renders an assistant `tool_calls` entry ("\\n" first): the
    arguments re-serialized as `tojson` does (a realtime item carries them as a JSON string)."""
    args = json.dumps(json.loads(arguments), ensure_ascii=False)
    return f"\n{CALL_OPEN}{NAME_PREFIX}{name}{ARGS_PREFIX}{args}{CALL_SUFFIX}{CALL_CLOSE}"


def response_text(output: str) -> str:
    """One tool result inside a user turn (consecutive results follow each other, "\\n" between)."""
    return f"<tool_response>\n{output}\n</tool_response>"
