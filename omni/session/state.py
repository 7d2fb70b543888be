"""Per-session state of the streaming engine (spec §4.1), owned by one `Session`.

Owns: the LLM KV cache, the Whisper encoder cache, the official turn flags, a record of which
cache positions each prefill / reply occupies (for barge-in rollback and a later sliding window)
the cache positions where each user turn begins (for the sliding window, `drop_oldest_turns`)
and the session's random generator. Does not own: model weights (the shared `Omni` bundle) or any
logic; the engine mutates this object, nothing else does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..model.audio import AudioEncoderCache
from ..model.decoder import KVCache


@dataclass
class Span:
    """Cache positions [start, end) written by one prefill or one reply."""

    kind: str  # "system" | "user" | "assistant" (a prefilled message) | "reply" (generated)
    start: int
    end: int


@dataclass
class ReplyMark:
    """One yielded audio chunk of the current reply: the audio emitted so far and the cache
    length that holds the reply text handed out with it (for `Session.interrupt`)."""

    samples_end: int
    cache_len: int


@dataclass
class SessionState:
    llm_cache: KVCache
    audio_cache: AudioEncoderCache = field(default_factory=AudioEncoderCache)
    started: bool = False  # a first (template) prefill happened: official `is_first` is its negation
    new_user_msg: bool = True  # next user fragment opens a `<|im_start|>user` turn
    llm_generated: bool = False  # an assistant turn was started in this session
    llm_generate_completed: bool = False  # the last assistant turn reached an LLM terminator
    spans: list[Span] = field(default_factory=list)
    turn_starts: list[int] = field(default_factory=list)  # where each user turn's `<|im_start|>user` is
    generator: torch.Generator = field(default_factory=torch.Generator)

    @property
    def cache_len(self) -> int:
        return self.llm_cache.seq_len

    def record(self, kind: str, start: int) -> None:
        """Note that positions [start, cache_len) hold `kind`; extends a touching span of that kind."""
        if self.cache_len <= start:
            return
        if self.spans and self.spans[-1].kind == kind and self.spans[-1].end == start:
            self.spans[-1].end = self.cache_len
        else:
            self.spans.append(Span(kind, start, self.cache_len))

    def drop_oldest_turns(self, budget: int, inv_freq: torch.Tensor) -> int:
        """Drop the fewest oldest complete turns (a user turn plus its reply) that bring the cache
        to <= `budget`, or all but the latest if that is not enough. Returns the positions removed.

        Called only between turns. The system prompt (everything before the first turn, incl. the
        reference audio) and the latest turn always stay; later keys are re-rotated by
        `KVCache.drop`, so positions stay contiguous and the next prefill continues at cache_len.
        """
        starts = self.turn_starts
        if len(starts) < 2 or self.cache_len <= budget:
            return 0
        j = 1
        while j < len(starts) - 1 and self.cache_len - (starts[j] - starts[0]) > budget:
            j += 1
        a, b = starts[0], starts[j]
        self.drop(a, b, inv_freq)
        return b - a

    def drop(self, start: int, end: int, inv_freq: torch.Tensor) -> None:
        """Remove cache positions [start, end) and shift the span / turn records after them."""
        d = end - start
        self.llm_cache.drop(start, end, inv_freq)

        def shift(x: int) -> int:
            return x if x <= start else (start if x < end else x - d)

        kept = []
        for s in self.spans:
            new = Span(s.kind, shift(s.start), shift(s.end))
            if new.end > new.start:
                kept.append(new)
        self.spans = kept
        self.turn_starts = [shift(x) for x in self.turn_starts if not start <= x < end]

    def crop(self, length: int) -> None:
        """Roll the LLM cache back to `length` positions and trim the span record to match."""
        self.llm_cache.crop(length)
        kept = []
        for s in self.spans:
            if s.start < length:
                kept.append(Span(s.kind, s.start, min(s.end, length)))
        self.spans = kept
        self.turn_starts = [x for x in self.turn_starts if x <= length]
