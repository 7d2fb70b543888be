"""Streaming TTS driver: LLM text chunks -> (text, 24-kHz audio) pieces (spec §5.3).

Owns: the per-reply loop of the official `_generate_mel_spec_audio_streaming` built on the step
functions of `omni.model.tts_loop` (prefill one text chunk, draw 25 frames, decode new frames with
4 frames of left context, 2048-sample crossfade): speaker embedding from the first chunk, per-chunk
text normalisation + re-tokenisation, at most one TTS step per LLM chunk, the end-of-text flush and
the final held-back tail, and segment rollover: once a segment holds 120 TTS tokens and an LLM
chunk ends a sentence, the segment is flushed and a fresh TTS state continues from the last 5 text
ids and 50 code frames of the old one (`_carry_over`). Does not own: the LLM (the engine feeds
`LLMChunk`s lazily, so the LLM runs in lock-step with the audio), model math, text slot
arithmetic (processing.tts_text).

Everything here is a program (omni.model.ops): it yields model ops and `SpeechPiece` outputs, so
the same loop runs alone or with many sessions' ops batched by omni.batch.

Deliberate deviations from the official rollover (both lose speech there): a new segment whose
first LLM chunk is empty does not end the reply, and text left over when the LLM ends right at a
rollover is still spoken (the official skips the flush because its prompt was never rebuilt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from transformers import PreTrainedTokenizerBase

from ..model import tts_loop as L
from ..model.ops import Program, pull
from ..model.tts import ConditionalChatTTS
from ..model.tts_state import TTSState
from ..model.vocos import Vocos
from ..processing import tts_text as T

Sampler = Callable[[torch.Tensor], torch.Tensor]  # logits [Q, V] -> ids [Q] (ops.FramePick)
NewState = Callable[[torch.Tensor | None], TTSState]  # text mask -> a fresh segment state


@dataclass
class LLMChunk:
    """One 3-token LLM call as the TTS sees it."""

    text: str  # decoded text (official `_decode_text`, held-back ids excluded)
    hidden: torch.Tensor | None  # [L, H] last-layer states over the generate prompt (first chunk only)
    cache_len: int  # LLM cache length once this chunk's text is in the cache


@dataclass
class SpeechPiece:
    text: str  # LLM text handed out since the previous piece
    wav: torch.Tensor  # [n] float32 at the vocoder rate (may be empty)
    cache_len: int  # LLM cache length covering `text`


@dataclass(frozen=True)
class SpeechOptions:
    params: L.SpeechParams = L.SpeechParams()
    low_latency: bool = False  # hand out decoded audio at once, holding back only the overlap (_Out)
    max_speech_samples: int | None = None  # stop drawing frames once this much audio exists


class _Out:
    """Crossfade bookkeeping: the held-back wav and the text/cache position not yet handed out."""

    def __init__(self, overlap: int, low_latency: bool):
        self.overlap, self.low_latency = overlap, low_latency
        self.prev: torch.Tensor | None = None
        self.prev_emitted = 0  # head of `prev` already handed out (low latency)
        self.text, self.cache_len, self.samples = "", 0, 0

    def take(self, wav: torch.Tensor) -> SpeechPiece:
        piece = SpeechPiece(self.text, wav, self.cache_len)
        self.text, self.samples = "", self.samples + wav.shape[-1]
        return piece

    def add(self, wav: torch.Tensor) -> SpeechPiece | None:
        if self.prev is None:
            self.prev = wav
            if not self.low_latency:
                return None  # official: the first chunk waits for the crossfade with the second
            return self._take_settled(torch.zeros(0, dtype=wav.dtype))
        out, self.prev = L.crossfade(self.prev, wav, self.overlap)
        if not self.low_latency:  # official: hand out the previous chunk, hold all of this one
            return self.take(out)
        return self._take_settled(out[self.prev_emitted :])

    def _take_settled(self, head: torch.Tensor) -> SpeechPiece:
        """Low latency: hand out `head` plus everything of `prev` the next crossfade leaves alone.

        The crossfade only reweights the last `overlap` samples of `prev` (elsewhere its weights
        normalise to 1, up to the rounding of w·x/w, < 1e-7), so prev[:-overlap] are already the
        official samples: handing them out now puts each decoded chunk on the wire one TTS step
        (0.53 s of audio) sooner than the official, which holds a whole chunk back.
        """
        assert self.prev is not None, "called once `add` has set prev"
        self.prev_emitted = max(self.prev.shape[-1] - self.overlap, 0)
        return self.take(torch.cat([head, self.prev[: self.prev_emitted]]))

    def tail(self) -> SpeechPiece | None:
        if self.prev is None:  # no audio at all (e.g. an empty reply): hand out pending text only
            return self.take(torch.zeros(0)) if self.text else None
        piece = self.take(self.prev[self.prev_emitted :])
        self.prev, self.prev_emitted = None, 0
        return piece

    @property
    def total_samples(self) -> int:
        return self.samples + (self.prev.shape[-1] - self.prev_emitted if self.prev is not None else 0)


@dataclass
class _Segment:
    """One TTS segment: its own TTSState and text prompt (official: one recursion level)."""

    state: TTSState
    gen_text: str  # normalised text of this segment (carried text first)
    raw: str  # un-normalised text, for the language check
    decoded: int = 0  # frames already turned into audio
    chunk_idx: int = 0  # text chunks prefilled
    received: bool = False  # an LLM chunk arrived in this segment
    finished: bool = False  # the TTS drew EOS
    carried: bool = False  # started by a rollover (text and frames carried over)
    left: str = ""  # text after the old segment's last sentence end


def stream_speech(
    tts: ConditionalChatTTS,
    vocos: Vocos,
    tts_tokenizer: PreTrainedTokenizerBase,
    chunks: Program,
    spk_pos: int,
    sampler: Sampler,
    new_state: NewState,
    opts: SpeechOptions = SpeechOptions(),
    trace: dict | None = None,
):
    """Program: one reply's TTS over the LLM chunk program `chunks` (with segment rollover),
    outputting `SpeechPiece`s; the first chunk must carry `hidden`. `new_state(text_mask)` gives a
    fresh `TTSState` (a new cache alone, the session's reset pool slot in a batch engine)."""
    p = opts.params
    first = yield from pull(chunks)
    if first is None:
        return
    assert first.hidden is not None, "the first LLM chunk must carry the prompt hidden states"
    spk = first.hidden[spk_pos][None]  # [1, H] last layer at <|spk|>
    out = _Out(L.crossfade_samples(p, tts, vocos), opts.low_latency)
    text = _cut(first.text)
    out.text, out.cache_len = text, first.cache_len
    seg = _Segment(new_state(None), text, text)
    ctx = _Ctx(tts, tts_tokenizer, spk, sampler, opts, trace, out, new_state)
    while seg is not None:
        seg = yield from _run_segment(ctx, seg, chunks)


@dataclass
class _Ctx:
    tts: ConditionalChatTTS
    tokenizer: PreTrainedTokenizerBase
    spk: torch.Tensor
    sampler: Sampler
    opts: SpeechOptions
    trace: dict | None
    out: _Out
    new_state: NewState

    def prompt(self, gen_text: str) -> T.TTSPrompt:
        c = self.tts.cfg
        return T.prepare_tts_text(self.tokenizer, gen_text, c.streaming_text_reserved_len, c.num_spk_embs)

    def over_budget(self) -> bool:
        m = self.opts.max_speech_samples
        return m is not None and self.out.total_samples >= m


def _run_segment(ctx: _Ctx, seg: _Segment, chunks: Program):
    """Program: run `seg` until the LLM ends, the TTS draws EOS or a rollover; returns the next
    segment or None."""
    tts, p, out = ctx.tts, ctx.opts.params, ctx.out
    c = tts.cfg
    R, step_tokens, n_spk = c.streaming_text_reserved_len, c.streaming_text_chunk_size, c.num_spk_embs
    state, prompt = seg.state, ctx.prompt(seg.gen_text)
    text_left: str | None = None

    def step(codes):  # program: decode the frames not yet decoded; a piece, or nothing
        if codes.shape[1] <= seg.decoded:  # EOS at the first step of a call: nothing new
            return None
        wav = yield from L.decode_new_audio(codes, seg.decoded, p, ctx.trace)
        seg.decoded = codes.shape[1]
        return out.add(wav)

    n_loop = 0
    while (chunk := (yield from pull(chunks))) is not None:
        seg.received = True
        txt = _cut(chunk.text)
        out.text, out.cache_len = out.text + txt, chunk.cache_len
        if n_loop < 2:  # official: the language is settled on the first two chunks of a segment
            language = T.detect_language(seg.raw + txt)
        n_loop += 1
        seg.raw += txt
        seg.gen_text += T.normalize_tts_text(txt, language)
        prompt = ctx.prompt(seg.gen_text)
        end_char = T.sentence_end(txt) if prompt.tokens_len >= T.rollover_threshold(R) else ""
        if end_char:  # segment rollover: this segment ends after the last sentence end
            seg.gen_text, text_left = T.split_at_sentence_end(seg.gen_text, end_char)
            prompt = ctx.prompt(seg.gen_text)
            break
        state.text_mask = T.text_mask(prompt.tokens_len, R, n_spk)
        piece = None
        # Official: one step per LLM chunk at most (an `if`, not a `while`).
        if prompt.tokens_len >= (seg.chunk_idx + 1) * step_tokens:
            b, e = T.text_chunk_bounds(seg.chunk_idx, step_tokens, R, n_spk)
            yield from L.prefill_chunk(tts, state, _ids(prompt, tts), b, e, ctx.spk, ctx.trace)
            codes, seg.finished = yield from L.generate_chunk(tts, state, p, ctx.sampler, ctx.trace)
            seg.chunk_idx += 1
            piece = yield from step(codes)
        if piece is not None:
            yield piece
        if seg.finished or ctx.over_budget():
            break
    stop = seg.finished or ctx.over_budget()
    # A carried segment always holds the old segment's last words: flush only when new text came.
    has_text = bool(seg.gen_text) and (not seg.carried or seg.received or bool(seg.left))
    if not stop and has_text:
        b, e = T.final_flush_bounds(seg.chunk_idx, step_tokens, prompt.tokens_len, n_spk, R)
        state.text_mask = T.text_mask(prompt.tokens_len, R, n_spk)
        if e > b:  # all 300 slots may already be in (a truncated text)
            yield from L.prefill_chunk(tts, state, _ids(prompt, tts), b, e, ctx.spk, ctx.trace)
        while True:  # all text is in: draw until EOS or the frame cap (checked after a call)
            codes, seg.finished = yield from L.generate_chunk(tts, state, p, ctx.sampler, ctx.trace)
            piece = yield from step(codes)
            if piece is not None:
                yield piece
            if seg.finished or ctx.over_budget():
                break
            if codes.shape[1] > p.max_frames:
                stop = True
                break
    piece = out.tail()
    if piece is not None:
        yield piece
    if text_left is None or stop or ctx.over_budget():
        return None
    return (yield from _carry_over(ctx, seg, prompt, text_left))


# Official rollover constants (`tid_len`, `aid_len`): what a new segment keeps of the old one.
CARRY_TEXT_TOKENS = 5
CARRY_FRAMES = 50


def _carry_over(ctx: _Ctx, old: _Segment, prompt: T.TTSPrompt, text_left: str):
    """Program: a fresh segment primed with the old one's last 5 text ids and last 50 frames (spec §5.3)."""
    tts, c = ctx.tts, ctx.tts.cfg
    n_spk = c.num_spk_embs
    start = T.text_start_len(n_spk)
    text_ids = prompt.input_ids[start + prompt.tokens_len - CARRY_TEXT_TOKENS : start + prompt.tokens_len]
    frames = old.state.codes[:, -CARRY_FRAMES:]
    if frames.shape[1] == 0:  # nothing drawn (cannot happen after a flush): start from scratch
        return _Segment(ctx.new_state(None), text_left, text_left, carried=True, left=text_left)
    state = ctx.new_state(T.text_mask(len(text_ids), c.streaming_text_reserved_len, n_spk))
    head = prompt.input_ids[:start]  # [Stts][spk_emb]
    ids = torch.tensor([head + text_ids], device=tts.emb_text.weight.device)
    yield from L.prefill_chunk(tts, state, ids, 0, ids.shape[1], ctx.spk, ctx.trace)
    yield tts.audio_prefill(state, frames)
    state.frames = frames
    kept = ctx.tokenizer.decode(text_ids)
    assert isinstance(kept, str), "one list of ids decodes to one string"
    carried = kept + text_left
    # chunk_idx = 5 // 10 = 0: the next text prefill rewrites [Stts][spk_emb] + the first 10 tokens.
    return _Segment(
        state,
        carried,
        carried,
        decoded=frames.shape[1],
        chunk_idx=CARRY_TEXT_TOKENS // c.streaming_text_chunk_size,
        carried=True,
        left=text_left,
    )


def _cut(text: str) -> str:
    return text.split(T.TTS_EOS)[0]


def _ids(prompt: T.TTSPrompt, tts: ConditionalChatTTS) -> torch.Tensor:
    return torch.tensor([prompt.input_ids], device=tts.emb_text.weight.device)
