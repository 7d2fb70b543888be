"""A reply's calls as they are generated: token ids -> each call's name, then its arguments in
pieces (`CallPiece`, what a reply hands out next to its text and audio).

The grammar fixes the layout (`<tool_call>`, `\\n{"name": "NAME", "arguments": ARGS}\\n`,
`</tool_call>`), so the name is known once its closing quote is out and the arguments are the JSON
value that follows, whose end a bracket count finds. Text still open at the end (an incomplete
UTF-8 sequence) is held back, so a piece never changes once handed out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from . import prompt as P

REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class CallPiece:
    """Part of a reply's call number `index`: `name` is known from the first piece on; `delta` is
    new argument text; `done` says the arguments are whole (its `</tool_call>` was written)."""

    index: int
    name: str
    delta: str
    done: bool = False


def merge(pieces: list[CallPiece]) -> list[CallPiece]:
    """Consecutive pieces of one call as one (their deltas joined)."""
    out: list[CallPiece] = []
    for p in pieces:
        if out and out[-1].index == p.index and not out[-1].done:
            last = out[-1]
            out[-1] = CallPiece(p.index, p.name, last.delta + p.delta, p.done)
        else:
            out.append(p)
    return out


def json_end(text: str) -> int | None:
    """Where the JSON object at the start of `text` ends (exclusive), or None if it is open."""
    depth, in_str, esc = 0, False, False
    for i, ch in enumerate(text):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


@dataclass
class _Call:
    index: int
    ids: list[int] = field(default_factory=list)
    name: str | None = None
    sent: int = 0  # argument characters handed out


class CallParser:
    """Feed it every generated token of the calls (from a `<tool_call>` on); it returns the
    pieces each token completes. `decode`: ids -> text (the model's own decoding)."""

    def __init__(self, decode: Callable[[list[int]], str], open_id: int, close_id: int):
        self.decode, self.open_id, self.close_id = decode, open_id, close_id
        self.calls: list[_Call] = []
        self.current: _Call | None = None

    def feed(self, token: int) -> list[CallPiece]:
        if token == self.open_id:
            self.current = _Call(len(self.calls))
            self.calls.append(self.current)
            return []
        c = self.current
        if c is None:
            return []  # between calls ("\n") or after them
        if token == self.close_id:
            self.current = None
            return self._pieces(c, done=True)
        c.ids.append(token)
        return self._pieces(c, done=False)

    @property
    def open_call(self) -> bool:
        """A call has started and its `</tool_call>` has not come."""
        return self.current is not None

    def _pieces(self, c: _Call, done: bool) -> list[CallPiece]:
        text = self.decode(c.ids)
        if not text.startswith(P.NAME_PREFIX):
            return []
        cut = text.find(P.ARGS_PREFIX, len(P.NAME_PREFIX))
        if cut < 0:
            return []
        first = c.name is None
        c.name = text[len(P.NAME_PREFIX) : cut]
        args = text[cut + len(P.ARGS_PREFIX) :]
        end = json_end(args)
        if end is not None:
            args = args[:end]
        else:
            args = args.rstrip(REPLACEMENT_CHAR)
        delta, c.sent = args[c.sent :], max(c.sent, len(args))
        if delta or first or done:
            return [CallPiece(c.index, c.name, delta, done)]
        return []
