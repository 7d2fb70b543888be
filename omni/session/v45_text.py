"""A MiniCPM-V 4.5 session's context as text: exact incremental tokenisation, the template's forms
of an earlier assistant turn, and a reply's text streamed token by token.

Owns: `Tail`, the context's text since its last added token (`<|im_end|>`, `<image>`, `</think>`...)
with the ids of it in the cache. The tokenizer splits on added tokens first, so what precedes the
last one never re-tokenises; the text after it can (`"?"` then `"\\n"` is one token, `"?\\n"`), so a
new piece is tokenised together with the tail and the cache is cropped back to where the ids agree.
The context then always holds the ids of the whole conversation's text tokenised at once, as
`chat()` would give them. Also `render_run` (how the Qwen3 template renders the messages after
the last user turn: as history, or before the generation prompt) and `ReplyText`
(a reply's text, held back only inside an incomplete UTF-8 character). Does not own: the cache
(the session crops it), vision, the prompt strings of a turn (v45.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence, cast

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

REPLACEMENT_CHAR = "\ufffd"  # the decode of an incomplete UTF-8 sequence: held back for the next token
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@lru_cache(maxsize=8)
def _added(tokenizer: PreTrainedTokenizerBase) -> tuple[re.Pattern, frozenset[int]]:
    """The tokenizer's added tokens as a regex (longest first, as its splitter matches) and ids."""
    added = cast("dict[str, int]", tokenizer.added_tokens_encoder)  # {token: id}
    pattern = re.compile("|".join(re.escape(t) for t in sorted(added, key=len, reverse=True)))
    return pattern, frozenset(added.values())


@dataclass
class Plan:
    """Appending `text`: keep `keep` ids of the tail, then feed `ids`."""

    text: str  # the tail's text + the new text
    keep: int
    ids: list[int]
    all_ids: list[int] = field(repr=False)


@dataclass
class Tail:
    """The context's text after its last added token, and the ids of it the cache holds from `start`.

    The cached ids need not be the tokenisation of `text` (a failed feed leaves fewer): `plan`
    compares with what is cached, so the next piece repairs it."""

    text: str = ""
    ids: list[int] = field(default_factory=list)
    start: int = 0

    def plan(self, tokenizer: PreTrainedTokenizerBase, text: str) -> Plan:
        full = self.text + text
        ids = tokenizer.encode(full, add_special_tokens=False)
        keep = 0
        while keep < min(len(ids), len(self.ids)) and ids[keep] == self.ids[keep]:
            keep += 1
        return Plan(full, keep, ids[keep:], ids)

    def cropped(self, keep: int) -> None:
        """The cache now holds only `keep` ids of the tail."""
        self.ids = self.ids[:keep]

    def commit(self, tokenizer: PreTrainedTokenizerBase, plan: Plan) -> None:
        """`plan` was fed: the tail is now what follows its last added token."""
        pattern, added_ids = _added(tokenizer)
        last_id = max((i for i, t in enumerate(plan.all_ids) if t in added_ids), default=-1)
        marks = list(pattern.finditer(plan.text))
        if last_id < 0:
            self.text, self.ids = plan.text, list(plan.all_ids)
            return
        assert marks, "added-token ids without their text"
        self.text = plan.text[marks[-1].end() :]
        self.start += last_id + 1
        self.ids = list(plan.all_ids[last_id + 1 :])

    def copy(self) -> "Tail":
        return replace(self, ids=list(self.ids))

    def shift(self, a: int, b: int) -> None:
        """Positions [a, b) left the cache (the sliding window): ours after them move down."""
        self.start = moved(self.start, a, b)


def moved(x: int, a: int, b: int) -> int:
    """Where cache position `x` is once [a, b) is dropped."""
    return x if x <= a else (a if x < b else x - (b - a))


def render_run(entries: list[tuple[str, str]], before_reply: bool) -> str:
    """What the Qwen3 template writes for messages after the last user turn: system messages as
    they are; an assistant message as its text after the last `</think>` (left-stripped of
    newlines), except before a reply (no user turn follows): then the last one, and any with
    reasoning, keep a think block."""
    out = []
    for i, (role, content) in enumerate(entries):
        if role == "system":
            out.append(f"<|im_start|>system\n{content}<|im_end|>\n")
            continue
        reasoning = ""
        if THINK_CLOSE in content:
            before, content = content.split(THINK_CLOSE)[0], content.split(THINK_CLOSE)[-1].lstrip("\n")
            reasoning = before.rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
        if before_reply and (i == len(entries) - 1 or reasoning):
            content = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n{content.lstrip(chr(10))}"
        out.append(f"<|im_start|>assistant\n{content}<|im_end|>\n")
    return "".join(out)


class ReplyText:
    """A reply's text, one delta per token: everything decodable so far (an incomplete UTF-8
    character waits for its next byte). The deltas join to the official stream's text."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._held: list[int] = []

    def push(self, ids: Sequence[int]) -> str:
        self._held.extend(int(i) for i in ids)
        text = self._decode()
        if text.endswith(REPLACEMENT_CHAR):
            return ""
        self._held = []
        return text

    def end(self) -> str:
        text = self._decode() if self._held else ""
        self._held = []
        return text

    def _decode(self) -> str:
        text = self.tokenizer.decode(self._held)
        assert isinstance(text, str)
        return text
