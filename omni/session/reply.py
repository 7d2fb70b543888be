"""A session's reply: what it is asked for and what barge-in needs to know about it.

Owns: `GenerateOptions` (the knobs of one `streaming_generate`), `ReplyRecord` (where the reply's
prefix ends in the cache, the audio handed out so far and the cache length behind each piece, so
`Session.interrupt` can keep exactly the played text) and the wrappers the reply program is built
from (`after_first_op`, `until_done`). Does not own: the reply program itself (engine.py), the
LLM and TTS loops (llm.py, speech.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..model.ops import Op, Program
from ..sampling import SamplingParams
from ..tools.spec import ToolSpec
from .state import ReplyMark


@dataclass(frozen=True)
class GenerateOptions:
    sampling: SamplingParams = SamplingParams()  # official streaming default (sampling=True)
    max_new_tokens: int = 512  # checked after each 3-token call (may overshoot by 2)
    max_speech_s: float | None = None  # random tiny weights never draw the TTS EOS
    low_latency: bool = False  # hand out each decoded chunk at once (holds back the 2048-sample overlap only)
    generate_audio: bool = True
    force_no_stop: bool = False  # official debug flag: the TTS never ends a reply itself
    tools: ToolSpec | None = None  # function calling (omni.tools); None: none, and no mask


@dataclass
class ReplyRecord:
    prefix_end: int  # cache length once the prefix is in
    prefix_len: int = 0  # its prefix's tokens: the reply starts at prefix_end - prefix_len
    flags_before: tuple = ()  # (new_user_msg, llm_generated, llm_generate_completed) before it
    samples: int = 0  # audio handed out so far
    marks: list[ReplyMark] = field(default_factory=list)

    def played_cache_len(self, played_samples: int) -> int:
        """Cache length that holds the prefix and the reply text whose audio was fully played."""
        keep = self.prefix_end
        for mark in self.marks:
            if mark.samples_end <= played_samples:
                keep = max(keep, mark.cache_len)
        return keep

    def shift(self, dropped: int) -> None:
        """The sliding window dropped `dropped` positions before the reply."""
        self.prefix_end -= dropped
        self.marks = [ReplyMark(k.samples_end, k.cache_len - dropped) for k in self.marks]


def after_first_op(program: Program, begin: Callable[[], None]):
    """`program`, calling `begin()` when the result of its first op comes back (the op ran)."""
    result, first = None, True
    while True:
        try:
            item = program.send(result)
        except StopIteration as stop:
            return stop.value
        result = yield item
        if first and isinstance(item, Op):
            first = False
            begin()


def until_done(program: Program, done: list[bool]):
    """`program`, noting in `done` that it ran out (the LLM stopped) rather than was left unfinished."""
    result = yield from program
    done.append(True)
    return result
