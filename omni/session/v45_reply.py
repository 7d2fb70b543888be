"""A MiniCPM-V 4.5 session's reply: its options, its record, and the token loop that streams it.

Owns: `ReplyOptions` (thinking on or off, the sampling of the official `chat()` presets, the token
cap; an o-2.6 `GenerateOptions` is taken when it asks for text only), `V45Reply` (where the reply
sits in the cache, the text it produced, the state before it for `forget`) and `decode` (the
program: one `LLMForward` per token, as `chat(stream=True)`: no pad mask, the repetition penalty
over the reply's ids, stop at `<|im_end|>` / `<|endoftext|>` or the cap). Does not own: the
prompt around the reply and what becomes of it afterwards (v45.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..chat_v45 import preset
from ..family import UnsupportedInput
from ..model.ops import LLMForward, LLMOut, LLMSample
from ..processing import v45_prompt as V
from ..sampling import SamplingParams
from .reply import GenerateOptions
from .state import SessionState
from .v45_text import ReplyText, moved

NO_AUDIO = np.zeros(0, np.float32)  # reply pieces are (text, audio) for every family: none here
THINK_PREFIX = "<think>\n"  # the generation prompt's end with thinking on (v45_prompt.THINK_OPEN)
FAST_PREFIX = "<think>\n\n</think>\n\n"  # ... with thinking off


@dataclass(frozen=True)
class ReplyOptions:
    """One reply of a V-4.5 session. `sampling` None: the official `chat()` preset for `thinking`
    (sampling on: temperature 0.7, top_p 0.8, top_k 100, penalty 1.03 without thinking; temperature
    0.7 with it); `omni.sampling.GREEDY` gives the official greedy ids."""

    thinking: bool = False
    sampling: SamplingParams | None = None
    max_new_tokens: int = 512

    @property
    def params(self) -> SamplingParams:
        return self.sampling if self.sampling is not None else preset(True, self.thinking)

    @classmethod
    def of(cls, o, title: str) -> "ReplyOptions":
        """`o` as V-4.5 options: a `ReplyOptions`, or o-2.6's `GenerateOptions` asking for text only."""
        if isinstance(o, ReplyOptions):
            return o
        if not isinstance(o, GenerateOptions):
            raise TypeError(f"reply options must be ReplyOptions, got {type(o).__name__}")
        if o.generate_audio:
            raise UnsupportedInput(f"{title} has no speech output: ask for a text-only reply")
        if o.tools is not None:
            raise UnsupportedInput(f"function calling is not available for {title} sessions")
        return cls(False, o.sampling, o.max_new_tokens)


@dataclass
class V45Reply:
    """The latest reply, until new input follows it (then it joins the session's run of messages
    after the last user turn, omni.session.v45_turns.Run)."""

    undo: tuple  # (cache length, turn, tail, clip, run) before its prefix: what `forget` restores
    prompt_tokens: int = 0  # the context before its first sample (usage)
    text: list[str] = field(default_factory=list)  # every delta produced, in order
    ids: list[int] = field(default_factory=list)  # every id drawn, the terminator included

    def shift(self, a: int, b: int) -> None:
        n, turn, tail, clip, run = self.undo
        for holder in (turn, tail, run):
            if holder is not None:
                holder.shift(a, b)
        self.undo = (moved(n, a, b), turn, tail, clip, run)


def decode(
    m,
    st: SessionState,
    first: LLMOut,
    params: SamplingParams,
    max_new_tokens: int,
    reply: V45Reply,
):
    """Program: the reply's tokens after the prefix forward `first` drew the first one; outputs
    (text delta, no audio). Returns the end reason: "eos" or "max_tokens"."""
    terminators = V.terminator_ids(m.tokenizer)
    text = ReplyText(m.tokenizer)
    generated = reply.ids
    tok = first.token
    assert tok is not None, "the prefix forward draws the first token"
    end = "max_tokens"
    while True:
        generated.append(tok)
        if tok in terminators:
            end = "eos"
            break
        delta = text.push([tok])
        if delta:
            reply.text.append(delta)
            yield delta, NO_AUDIO
        if len(generated) >= max_new_tokens:
            break
        start = st.cache_len
        # generate() sees inputs_embeds only: the repetition penalty sees the reply's ids alone
        out = yield LLMForward(st.llm_cache, ids=[tok], sample=LLMSample(params, tuple(generated), st.generator))
        st.record("reply", start)
        tok = out.token
        assert tok is not None, "a decode step draws a token"
    rest = text.end()
    if rest:
        reply.text.append(rest)
        yield rest, NO_AUDIO
    return end
