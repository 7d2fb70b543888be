"""Per-session state of the streaming engine (spec §4.1), owned by one `Session`.

Owns: the LLM KV cache, the Whisper encoder cache, the official turn flags, a record of which
cache positions each prefill / reply occupies (for barge-in rollback and a later sliding window)
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
    kind: str        # "system" | "user" | "assistant" (a prefilled message) | "reply" (generated)
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
    started: bool = False                  # a first (template) prefill happened: official `is_first` is its negation
    new_user_msg: bool = True              # next user fragment opens a `<|im_start|>user` turn
    llm_generated: bool = False            # an assistant turn was started in this session
    llm_generate_completed: bool = False   # the last assistant turn reached an LLM terminator
    spans: list[Span] = field(default_factory=list)
    reply_marks: list[ReplyMark] = field(default_factory=list)
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

    def crop(self, length: int) -> None:
        """Roll the LLM cache back to `length` positions and trim the span record to match."""
        self.llm_cache.crop(length)
        kept = []
        for s in self.spans:
            if s.start < length:
                kept.append(Span(s.kind, s.start, min(s.end, length)))
        self.spans = kept
