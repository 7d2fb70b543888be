"""Model ops: what a session program asks the model to compute, and how one program is driven.

Owns: the op types (plain data: which cache, which inputs, what to return) and the program
protocol. A *program* is a generator that yields ops and receives each op's result, and yields any
other value as an output (a reply piece, an LLM chunk); `drive` and `stream` run one program with
every op executed at once by a given `run`. The batch engine (omni.batch) runs many programs and
executes their pending ops of one kind together instead (omni.model.steps.execute). Session logic
is written once, as programs, and runs alone or batched unchanged. Does not own: the execution
of ops (steps.py), any session state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Generator, Iterator

import torch

if TYPE_CHECKING:
    from ..sampling import SamplingParams
    from ..token_masks import TokenMask
    from .audio import AudioEncoderCache
    from .decoder import KVCache
    from .tts_state import TTSState

Program = Generator[Any, Any, Any]
# Programs keep no side effects in `finally` blocks: a program closed between two ops (barge-in)
# must leave its session exactly as its last completed op did.


class Op:
    """Base of the ops; `kind` groups the ops one batched execution can take together."""

    kind: ClassVar[str]


@dataclass(frozen=True, eq=False)
class LLMSample:
    """Draw the next token from the last position's logits (sampling.choose_rows)."""

    params: SamplingParams
    seen: tuple[int, ...]  # ids the repetition penalty sees
    generator: torch.Generator | None
    mask: TokenMask | None = None  # the tokens this draw may take (omni.token_masks), None: any


@dataclass(eq=False)
class LLMForward(Op):
    """Append `ids` (or `embeds` [T, D]) to `cache` through the LLM -> `LLMOut`."""

    kind: ClassVar[str] = "llm"
    cache: KVCache
    ids: list[int] | None = None
    embeds: torch.Tensor | None = None
    all_hidden: bool = False  # hidden states of every new position, not only the last
    sample: LLMSample | None = None

    @property
    def length(self) -> int:
        if self.ids is not None:
            return len(self.ids)
        assert self.embeds is not None, "an LLMForward needs ids or embeds"
        return self.embeds.shape[0]


@dataclass
class LLMOut:
    hidden: torch.Tensor  # [T, D] (all_hidden) or [D] (the last position)
    token: int | None  # the sampled next token (sample given)


@dataclass(frozen=True, eq=False)
class FramePick:
    """How one TTS step turns its logits into codes (ConditionalChatTTS.pick_frames)."""

    temperatures: tuple[float, ...]
    sampler: Callable[[torch.Tensor], torch.Tensor]  # logits [Q, V] -> ids [Q]: GreedySampler, MultinomialSampler...
    block_eos: bool  # EOS masked (the first steps of a call, or force_no_stop)


@dataclass(eq=False)
class TTSPrefill(Op):
    """Write `embeds` [n, H] into a TTS state's cache: at text slots `slot`.. (causal), or appended
    with the one-row `mask` [past + n] shared by all n positions (segment rollover)."""

    kind: ClassVar[str] = "tts"
    state: TTSState
    embeds: torch.Tensor
    slot: int | None = None
    mask: torch.Tensor | None = None


@dataclass(eq=False)
class TTSFrame(Op):
    """One audio-code step of a TTS state -> the drawn codes [num_vq] on the host (not yet stored)."""

    kind: ClassVar[str] = "tts"
    state: TTSState
    pick: FramePick


@dataclass(eq=False)
class Decode(Op):
    """Codes [1, T, num_vq] -> 24-kHz float32 audio [T * samples per frame] (DVAE, then Vocos)."""

    kind: ClassVar[str] = "decode"
    codes: torch.Tensor


@dataclass(eq=False)
class VisionEncode(Op):
    """Image slices as patch strips + tgt_sizes [n, 2] -> resampled features [n, query_num, H];
    with `temporal_ids` (MiniCPM-V 4.5 video packs: one id list per output, covering the strips in
    order) -> [len(temporal_ids), query_num, H]."""

    kind: ClassVar[str] = "vision"
    strips: list
    tgt_sizes: torch.Tensor
    temporal_ids: list[list[int]] | None = None

    @property
    def outputs(self) -> int:
        return len(self.strips) if self.temporal_ids is None else len(self.temporal_ids)


@dataclass(eq=False)
class AudioEncode(Op):
    """One streaming log-mel chunk [1, 80, T] through the Whisper encoder with a session's encoder
    cache (appended) -> audio embeddings [tokens, H]."""

    kind: ClassVar[str] = "audio"
    mel: torch.Tensor
    cache: AudioEncoderCache


Run = Callable[[Op], Any]


def stream(program: Program, run: Run) -> Iterator:
    """Yield the outputs of `program`, running each op it yields with `run` (under inference_mode)."""
    result = None
    try:
        while True:
            with torch.inference_mode():
                try:
                    item = program.send(result)
                except StopIteration:
                    return
                result = run(item) if isinstance(item, Op) else None
            if not isinstance(item, Op):
                yield item
    finally:
        program.close()


def drive(program: Program, run: Run):
    """Run `program` to its end and return its value; it must yield no outputs."""
    result = None
    with torch.inference_mode():
        while True:
            try:
                item = program.send(result)
            except StopIteration as stop:
                return stop.value
            assert isinstance(item, Op), f"a driven program yielded an output: {type(item).__name__}"
            result = run(item)


def pull(it: Program):
    """Sub-program: advance `it` to its next output (forwarding its ops); None once it is over."""
    result = None
    while True:
        try:
            item = it.send(result)
        except StopIteration:
            return None
        if not isinstance(item, Op):
            return item
        result = yield item
