"""One reply's tool calling, as pieces of the reply program (omni.session.engine).

`ToolReply` is the gate on the reply's free text (tool_choice none: `<tool_call>` masked; auto:
`<tool_call>` ends the text, which the speech head then finishes) and `calls`, the program that
writes the calls under the grammar (from that `<tool_call>`, or from the reply's first token when
the choice forces a call) and hands out `CallPiece`s. Tokens the grammar forces are fed without a
draw (many at once); only drawn tokens count against the reply's `max_new_tokens`. The call span
goes into the cache whole (through `</tool_call>`), so the next turn follows it as the template
writes it; it never reaches the TTS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..model.ops import LLMForward, LLMSample
from ..model.pool import SlotCache
from ..sampling import SamplingParams
from . import prompt as P
from .calls import CallParser, merge
from .grammar import StaticMask, grammars, static_mask
from .spec import ToolSpec

if TYPE_CHECKING:
    from ..loader import Omni
    from ..session.state import SessionState
    from ..token_masks import TokenMask


class Gate(Protocol):
    """What the free text of a reply needs from its tools (omni.session.llm.llm_chunks)."""

    mask: TokenMask | None  # on every draw of the text
    stops: frozenset[int]  # tokens that end the text (not fed, not in it)
    opened: int | None  # set to the stop token the text ended at


class ToolReply:
    def __init__(self, m: Omni, st: SessionState, spec: ToolSpec, params: SamplingParams):
        self.m, self.st, self.spec, self.params = m, st, spec, params
        self.vocab = m.net.llm.lm_head.weight.shape[0]
        self.open_id, self.close_id = _token_id(m, P.CALL_OPEN), _token_id(m, P.CALL_CLOSE)
        live = bool(spec.callable())
        # the Gate (omni.session.llm): what the free text may draw and where it stops
        self.mask: TokenMask | None = (
            None if live else StaticMask(static_mask(self.vocab, [self.open_id, self.close_id]))
        )
        self.stops = frozenset({self.open_id}) if live and not spec.forced else frozenset()
        self.opened: int | None = None  # the free text stopped at this `<tool_call>`
        self.cut = False  # the calls stopped short (max tokens or a full context)

    @property
    def forced(self) -> bool:
        return self.spec.forced and bool(self.spec.callable())

    def calls(self, feed: list[int], max_new_tokens: int):
        """Program: the reply's calls, from `feed` (the reply's prefix when forced, else the
        `<tool_call>` the text stopped at, not yet in the cache); outputs `CallPiece`s."""
        m, st = self.m, self.st
        eos = m.ids.im_end
        matcher = grammars(m.tokenizer, self.vocab, [eos]).matcher(self.spec)
        parser = CallParser(lambda ids: _decode(m, ids), self.open_id, self.close_id)
        pending = list(feed)  # generated (or prefix) ids not yet in the cache
        if not self.forced:
            matcher.consume(self.open_id)
            parser.feed(self.open_id)
        drawn, pieces = 0, []
        while True:
            forced = matcher.forced()
            for t in forced:
                matcher.consume(t)
                pieces += parser.feed(t)
            pending += forced
            for piece in merge(pieces):  # one piece per call and step
                yield piece
            pieces = []
            if matcher.stopped:  # the grammar wrote the end: only the reply's end can follow
                break
            if drawn >= max_new_tokens or not _room(st, len(pending) + 1):
                self.cut = parser.open_call
                pending = []
                break
            start = st.cache_len
            out = yield LLMForward(
                st.llm_cache, ids=pending, sample=LLMSample(self.params, tuple(pending), st.generator, matcher)
            )
            st.record("reply", start)
            tok, pending = out.token, []
            if tok == eos:  # after a whole call: the reply ends (the terminator is never fed)
                break
            matcher.consume(tok)
            drawn += 1
            pending = [tok]
            pieces = parser.feed(tok)
        st.llm_generate_completed = not parser.open_call
        if pending and _room(st, len(pending)):  # the call's tail (through </tool_call>) goes in whole
            start = st.cache_len
            yield LLMForward(st.llm_cache, ids=pending)
            st.record("reply", start)


def _token_id(m: Omni, token: str) -> int:
    i = m.tokenizer.convert_tokens_to_ids(token)
    assert isinstance(i, int) and i != m.ids.unk, f"the tokenizer has no {token} token"
    return i


def _room(st: SessionState, n: int) -> bool:
    cache = st.llm_cache
    return not isinstance(cache, SlotCache) or cache.free >= n


def _decode(m: Omni, ids: list[int]) -> str:
    text = m.tokenizer.decode(ids)
    assert isinstance(text, str)
    return text
