"""Streaming TTS driver: LLM text chunks -> (text, 24-kHz audio) pieces (spec §5.3).

Owns: the per-reply loop of the official `_generate_mel_spec_audio_streaming` built on the step
functions of `omni.model.tts_loop` (prefill one text chunk, draw 25 frames, decode new frames with
4 frames of left context, 2048-sample crossfade): speaker embedding from the first chunk, per-chunk
text normalisation + re-tokenisation, at most one TTS step per LLM chunk, the end-of-text flush and
the final held-back tail. Does not own: the LLM (the engine feeds `LLMChunk`s lazily, so the LLM
runs in lock-step with the audio), model math, text slot arithmetic (processing.tts_text).

Not implemented: segment rollover at 120 TTS tokens (needs `prefill_audio_ids`, absent from
model/tts.py); a longer reply keeps one segment and its text is truncated at 300 slots.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from ..model import tts_loop as L
from ..processing import tts_text as T


@dataclass
class LLMChunk:
    """One 3-token LLM call as the TTS sees it."""
    text: str                         # decoded text (official `_decode_text`, held-back ids excluded)
    hidden: torch.Tensor | None       # [L, H] last-layer states over the generate prompt (first chunk only)
    cache_len: int                    # LLM cache length once this chunk's text is in the cache


@dataclass
class SpeechPiece:
    text: str                         # LLM text handed out since the previous piece
    wav: torch.Tensor                 # [n] float32 at the vocoder rate (may be empty)
    cache_len: int                    # LLM cache length covering `text`


@dataclass(frozen=True)
class SpeechOptions:
    params: L.SpeechParams = L.SpeechParams()
    low_latency_first_chunk: bool = False   # emit the first decoded audio at once (see _Out.first)
    max_speech_samples: int | None = None   # stop drawing frames once this much audio exists


class _Out:
    """Crossfade bookkeeping: the held-back wav and the text/cache position not yet handed out."""

    def __init__(self, overlap: int, low_latency: bool):
        self.overlap, self.low_latency = overlap, low_latency
        self.prev: torch.Tensor | None = None
        self.prev_emitted = 0          # head of `prev` already handed out (low-latency first chunk)
        self.text, self.cache_len, self.samples = "", 0, 0

    def take(self, wav: torch.Tensor) -> SpeechPiece:
        piece = SpeechPiece(self.text, wav, self.cache_len)
        self.text, self.samples = "", self.samples + wav.shape[-1]
        return piece

    def add(self, wav: torch.Tensor) -> SpeechPiece | None:
        if self.prev is None:
            self.prev = wav
            if not self.low_latency:
                return None   # official: the first chunk waits for the crossfade with the second
            # The crossfade leaves prev[:-overlap] unchanged (its weights normalise to 1 there, up
            # to the rounding of w·x/w, < 1e-7), so emitting that head now gives the official
            # samples, one TTS step (0.53 s of audio) sooner.
            self.prev_emitted = max(wav.shape[-1] - self.overlap, 0)
            return self.take(wav[:self.prev_emitted])
        out, self.prev = L.crossfade(self.prev, wav, self.overlap)
        piece = self.take(out[self.prev_emitted:])
        self.prev_emitted = 0
        return piece

    def tail(self) -> SpeechPiece | None:
        if self.prev is None:   # no audio at all (e.g. an empty reply): hand out pending text only
            return self.take(torch.zeros(0)) if self.text else None
        piece = self.take(self.prev[self.prev_emitted:])
        self.prev = None
        return piece

    @property
    def total_samples(self) -> int:
        return self.samples + (self.prev.shape[-1] - self.prev_emitted if self.prev is not None else 0)


def stream_speech(tts, vocos, tts_tokenizer, chunks: Iterable[LLMChunk], spk_pos: int, sampler,
                  opts: SpeechOptions = SpeechOptions(), trace: dict | None = None) -> Iterator[SpeechPiece]:
    """Drive one reply's TTS segment over `chunks`; the first chunk must carry `hidden`."""
    c, p = tts.cfg, opts.params
    R, step_tokens, n_spk = c.streaming_text_reserved_len, c.streaming_text_chunk_size, c.num_spk_embs
    it = iter(chunks)
    first = next(it, None)
    if first is None:
        return
    assert first.hidden is not None, "the first LLM chunk must carry the prompt hidden states"
    spk = first.hidden[spk_pos][None]                        # [1, H] last layer at <|spk|>
    out = _Out(L.crossfade_samples(p, tts, vocos), opts.low_latency_first_chunk)
    gen_text = _cut(first.text)
    out.text, out.cache_len = gen_text, first.cache_len
    state = tts.new_state()
    prompt = T.prepare_tts_text(tts_tokenizer, gen_text, R, n_spk)
    ids = _ids(prompt, tts)
    chunk_idx, decoded, finished, language = 0, 0, False, T.detect_language(gen_text)

    def emit(codes):
        nonlocal decoded
        if codes.shape[1] <= decoded:       # EOS at the first step of a call: nothing new
            return None
        wav = L.decode_new_audio(tts, vocos, codes, decoded, p, trace)
        decoded = codes.shape[1]
        return out.add(wav)

    def over_budget() -> bool:
        return opts.max_speech_samples is not None and out.total_samples >= opts.max_speech_samples

    for n_loop, chunk in enumerate(it):
        txt = _cut(chunk.text)
        out.text, out.cache_len = out.text + txt, chunk.cache_len
        if n_loop < 2:   # official: the language is settled on the first two chunks
            language = T.detect_language(gen_text + txt)
        gen_text += T.normalize_tts_text(txt, language)
        prompt = T.prepare_tts_text(tts_tokenizer, gen_text, R, n_spk)
        ids = _ids(prompt, tts)
        state.text_mask = T.text_mask(prompt.tokens_len, R, n_spk)
        # Official: one step per LLM chunk at most (an `if`, not a `while`).
        if prompt.tokens_len >= (chunk_idx + 1) * step_tokens:
            b, e = T.text_chunk_bounds(chunk_idx, step_tokens, R, n_spk)
            L.prefill_chunk(tts, state, ids, b, e, spk, trace)
            codes, finished = L.generate_chunk(tts, state, p, sampler, trace)
            chunk_idx += 1
            piece = emit(codes)
            if piece is not None:
                yield piece
            if finished or over_budget():
                break
    if not finished and gen_text and not over_budget():
        b, e = T.final_flush_bounds(chunk_idx, step_tokens, prompt.tokens_len, n_spk)
        state.text_mask = T.text_mask(prompt.tokens_len, R, n_spk)
        L.prefill_chunk(tts, state, ids, b, e, spk, trace)
        while True:   # all text is in: draw until EOS or the frame cap (checked after a call)
            codes, finished = L.generate_chunk(tts, state, p, sampler, trace)
            piece = emit(codes)
            if piece is not None:
                yield piece
            if finished or codes.shape[1] > p.max_frames or over_budget():
                break
    piece = out.tail()
    if piece is not None:
        yield piece


def _cut(text: str) -> str:
    return text.split(T.TTS_EOS)[0]


def _ids(prompt: T.TTSPrompt, tts) -> torch.Tensor:
    return torch.tensor([prompt.input_ids], device=tts.emb_text.weight.device)
