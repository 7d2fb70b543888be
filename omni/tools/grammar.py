"""Grammar-constrained calls with llguidance: every call a reply writes parses and matches its
tool's JSON schema.

Owns: checking a tool's schema (`schema_error`, for the gateway), the Lark grammar of a reply's
calls in the model's own format (`<tool_call>` and `</tool_call>` as tokens, the JSON laid out as
the template's `tojson`: ", " and ": ", no newlines), the llguidance tokenizer of a model (built
once, ~1 s on the 151k vocabulary), compiled grammars (cached per tool spec) and `CallMatcher`, one
reply's matcher, which is the row's token mask in a batched draw (omni.token_masks.TokenMask).

Why llguidance: no dependencies (xgrammar pulls torch, transformers and triton), ~1 ms to compile
a schema (tools arrive per session at run time), and special tokens in its grammars. Measured once
against xgrammar 0.2.9 on the 151k vocabulary (random walks, this 2-core CPU): compile 1.1 vs
23-27 ms; masks with unbounded strings median/mean 10/23 vs 48/45 µs, with maxLength-bounded
strings 51/162 vs 6/13 µs (llguidance's precomputed slices cover unbounded strings only).
bench/tools.py measures llguidance as the engine uses it.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import llguidance as llg
import numpy as np

from . import prompt as P
from .spec import Tool, ToolSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The template's tojson layout; `x-guidance` options are read by llguidance, never shown to the model.
LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_CALLS = 8  # calls in one reply at most (parallel_tool_calls)
_CACHE_SIZE = 64  # compiled grammars kept per tokenizer (a few per session's tool lists)


def schema_error(schema: Any) -> str | None:
    """Why llguidance cannot constrain arguments to `schema` (a parsed JSON object), or None."""
    if not isinstance(schema, dict):
        return "the schema must be a JSON object"
    if schema.get("type", "object") != "object":
        return "a function's arguments are a JSON object: the schema's type must be 'object'"
    try:
        grammar = llg.LLMatcher.grammar_from_json_schema({**schema, "x-guidance": LAYOUT})
    except (ValueError, TypeError) as e:
        return str(e)
    return llg.LLMatcher.validate_grammar(grammar) or None


_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_ONE = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "unevaluatedProperties")


def closed(schema: Any) -> Any:
    """`schema` with `additionalProperties: false` wherever an object lists its properties and
    says nothing of others: a call never invents arguments (OpenAI's strict mode asks the same).
    Every instance still validates against the client's schema."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for k in _MAPS:
        if isinstance(out.get(k), dict):
            out[k] = {name: closed(v) for name, v in out[k].items()}
    for k in _LISTS:
        if isinstance(out.get(k), list):
            out[k] = [closed(v) for v in out[k]]
    for k in _ONE:
        if isinstance(out.get(k), dict):
            out[k] = closed(out[k])
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def _lit(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a Lark string literal


def lark(spec: ToolSpec) -> str:
    """The grammar of a reply's calls, from its `<tool_call>` on: one call, or with `parallel`
    up to MAX_CALLS separated by "\\n" (the template's layout), each of a callable tool."""
    tools = spec.callable()
    assert tools, "a grammar needs a callable tool"
    more = f' ("\\n" call){{0,{MAX_CALLS - 1}}}' if spec.parallel and spec.choice != "function" else ""
    lines = ["%llguidance {}", f"start: call{more}", "call: " + " | ".join(f"call_{i}" for i in range(len(tools)))]
    for i, t in enumerate(tools):
        head = _lit(P.NAME_PREFIX + t.name + P.ARGS_PREFIX)
        lines.append(f"call_{i}: <tool_call> {head} args_{i} {_lit(P.CALL_SUFFIX)} </tool_call>")
        lines.append(f"args_{i}: %json {json.dumps({**closed(t.schema()), 'x-guidance': LAYOUT})}")
    return "\n".join(lines) + "\n"


class Grammars:
    """A model's llguidance tokenizer and its compiled call grammars (thread-safe: an engine
    thread per lane may share a bundle)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, vocab: int, eos: list[int]):
        from llguidance.hf import from_tokenizer

        self.vocab = vocab
        self.tok = from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)  # type: ignore[arg-type]
        self._compiled: OrderedDict[ToolSpec, llg.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()

    def matcher(self, spec: ToolSpec) -> CallMatcher:
        """A fresh matcher for one reply's calls (a copy of the compiled grammar's start)."""
        with self._lock:
            m = self._compiled.get(spec)
            if m is None:
                m = llg.LLMatcher(self.tok, lark(spec), log_level=0)
                if m.is_error():
                    raise ValueError(f"the tools' grammar does not compile: {m.get_error()}")
                self._compiled[spec] = m
                while len(self._compiled) > _CACHE_SIZE:
                    self._compiled.popitem(last=False)
            self._compiled.move_to_end(spec)
            return CallMatcher(m.deep_copy(), self.vocab)


_GRAMMARS: dict[int, tuple[object, Grammars]] = {}
_GRAMMARS_LOCK = threading.Lock()


def grammars(tokenizer: PreTrainedTokenizerBase, vocab: int, eos: list[int]) -> Grammars:
    """The `Grammars` of a tokenizer (built on first use, then shared by every session)."""
    with _GRAMMARS_LOCK:
        hit = _GRAMMARS.get(id(tokenizer))
        if hit is None or hit[0] is not tokenizer:
            hit = (tokenizer, Grammars(tokenizer, vocab, eos))
            _GRAMMARS[id(tokenizer)] = hit
        return hit[1]


class CallMatcher:
    """One reply's calls under the grammar: the row mask of each draw, the tokens it took."""

    def __init__(self, m: llg.LLMatcher, vocab: int):
        self.m, self.vocab = m, vocab

    def fill(self, out: np.ndarray) -> None:
        """The allowed next tokens as bits (int32 [ceil(vocab/32)], bit set = allowed)."""
        self.m.unsafe_compute_mask_ptr(out.ctypes.data, out.nbytes)

    def consume(self, token: int) -> None:
        if not self.m.consume_token(token):
            raise RuntimeError(f"token {token} broke the tool-call grammar: {self.m.get_error()}")

    def forced(self) -> list[int]:
        """Tokens the grammar allows no alternative to (fed without drawing)."""
        return self.m.compute_ff_tokens()

    @property
    def stopped(self) -> bool:
        """Nothing more can follow (only the end of the reply)."""
        return self.m.is_stopped()


def static_mask(vocab: int, banned: list[int]) -> np.ndarray:
    """A mask allowing every token but `banned` (tool_choice none: no `<tool_call>`)."""
    bits = np.full((vocab + 31) // 32, 0xFFFFFFFF, dtype=np.uint32)
    for t in banned:
        bits[t // 32] &= ~np.uint32(1 << (t % 32))
    return bits.view(np.int32)


class StaticMask:
    def __init__(self, bits: np.ndarray):
        self.bits = bits

    def fill(self, out: np.ndarray) -> None:
        out[:] = self.bits


__all__ = ["CallMatcher", "Grammars", "StaticMask", "Tool", "grammars", "lark", "schema_error", "static_mask"]
