"""Speech loops over ConditionalChatTTS: the offline `_generate_mel_spec` path (spec §5.1, §5.3).

Owns: the small step programs a TTS loop is made of (prefill one text chunk, generate one chunk
of frames, decode new frames to audio with left context; see omni.model.ops for programs), the
crossfade of two pieces and `synthesize`, the official offline loop built from them and run at
once. The streaming loop (omni.session.speech) reuses the same programs, alone or batched.
Does not own: model math (tts.py, dvae.py, vocos.py), text layout (processing.tts_text), the
session (it creates a `TTSState` per call and drops it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..processing import tts_text as T
from .ops import Decode, TTSPrefill, drive
from .steps import Executor
from .tts import ConditionalChatTTS, MultinomialSampler, TTSState
from .vocos import Vocos


@dataclass(frozen=True)
class SpeechParams:
    """Official constants of the MiniCPM-o 2.6 TTS loops (hard-coded there, not in config.json)."""

    frames_per_step: int = 25  # output_chunk_size: 25 frames = 0.533 s
    temperatures: tuple[float, ...] = (0.1, 0.3, 0.1, 0.3)
    min_new_frames: int = 10  # EOS masked this many steps per generate call
    max_frames: int = 2048  # tts_max_new_tokens
    decode_context_frames: int = 4  # streaming: DVAE left context (code frames)
    force_no_stop: bool = False  # official debug flag: never draw the EOS code


Trace = dict  # name -> tensor / int / bool, plus "call_order": list[str]; names as in the golden files


def _record(trace: Trace | None, kind: str, **values) -> None:
    if trace is None:
        return
    counts = trace.setdefault("_counts", {})
    i = counts.get(kind, 0)
    counts[kind] = i + 1
    trace.setdefault("call_order", []).append(f"{kind}.{i}")
    for k, v in values.items():
        trace[f"{kind}.{i}.{k}"] = v.detach().cpu() if isinstance(v, torch.Tensor) else v


def prefill_chunk(
    tts: ConditionalChatTTS,
    state: TTSState,
    prompt_ids: torch.Tensor,
    begin: int,
    end: int,
    spk_hidden: torch.Tensor | None,
    trace: Trace | None = None,
):
    """Program: prefill slots [begin, end) of the prompt [1, condition_length]; no-op when empty."""
    if end <= begin:
        return
    ids = prompt_ids[:, begin:end]
    spk = spk_hidden if begin == 0 else None
    yield TTSPrefill(state, tts.text_embeddings(ids, spk), begin)
    extra = {"spk": spk_hidden} if begin == 0 else {}
    _record(trace, "prefill_text", input_ids=ids.int(), position_ids=torch.arange(begin, end)[None].int(), **extra)


def generate_chunk(tts: ConditionalChatTTS, state: TTSState, params: SpeechParams, sampler, trace: Trace | None = None):
    """Program: up to `frames_per_step` new frames; returns (all codes of the segment [1, n, Q], finished)."""
    input_len = state.input_len
    codes, finished = yield from tts.generate_steps(
        state, params.frames_per_step, params.temperatures, sampler, params.min_new_frames, params.force_no_stop
    )
    _record(
        trace,
        "tts_generate",
        new_ids=codes.int(),
        text_mask=state.text_mask,
        finished=finished,
        input_len=input_len,
        max_new_token=params.frames_per_step,
    )
    return codes, finished


def decode_audio(codes: torch.Tensor, trace: Trace | None = None):
    """Program: codes [1, T, Q] -> wav float32 [T * 2 * hop] (DVAE then Vocos, both fp32)."""
    mel, wav = yield Decode(codes)
    _record(trace, "decode_codes", codes=codes.int())
    _record(trace, "vocos", mel=mel, wav=wav)
    return wav


def decode_new_audio(codes: torch.Tensor, decoded_frames: int, params: SpeechParams, trace: Trace | None = None):
    """Program: decode codes[decoded_frames - context:] so the DVAE convs see left context."""
    start = max(decoded_frames - params.decode_context_frames, 0)
    return (yield from decode_audio(codes[:, start:], trace))


def crossfade_samples(params: SpeechParams, tts: ConditionalChatTTS, vocos: Vocos) -> int:
    """2048 = context frames x mel frames per code x hop: the overlap the context re-synthesises."""
    return params.decode_context_frames * tts.dvae.dims.mel_frames_per_code * vocos.dims.hop_length


def crossfade(prev: torch.Tensor, new: torch.Tensor, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Official `_linear_overlap_add2_wav`: triangular weights over max(len) + overlap points.

    Returns (the part to emit, as long as `prev`; the held-back remainder of `new`).
    """
    n0, n1 = prev.shape[-1], new.shape[-1]
    t = torch.linspace(0, 1, max(n0, n1) + overlap + 2, dtype=prev.dtype, device=prev.device)[1:-1]
    weight = 0.5 - (t - 0.5).abs()
    out = prev.new_zeros(n0 + n1 - overlap)
    norm = prev.new_zeros(n0 + n1 - overlap)
    out[:n0] += weight[-n0:] * prev
    norm[:n0] += weight[-n0:]
    out[n0 - overlap :] += weight[:n1] * new
    norm[n0 - overlap :] += weight[:n1]
    assert norm.min() > 0
    out = out / norm
    return out[:n0], out[n0:]


def synthesize(
    tts: ConditionalChatTTS,
    vocos: Vocos,
    tts_tokenizer,
    spk_hidden: torch.Tensor,
    text: str,
    sampler=None,
    params: SpeechParams = SpeechParams(),
    trace: bool = True,
) -> tuple[np.ndarray, Trace | None]:
    """Offline speech for one answer (official `_generate_mel_spec` + `decode_mel_to_audio`).

    spk_hidden [1, llm_dim]: last-layer LLM state at `<|spk|>`. `text` is the decoded answer as the
    official code receives it (special tokens kept; cut after <|tts_bos|> and at <|tts_eos|>).
    Returns (wav float32 at vocos.dims.sample_rate_hz, trace or None).
    """
    c = tts.cfg
    sampler = sampler or MultinomialSampler()
    tr: Trace | None = {} if trace else None
    prompt = T.prepare_tts_text(
        tts_tokenizer, T.answer_to_tts_text(text), c.streaming_text_reserved_len, c.num_spk_embs
    )
    ids = torch.tensor([prompt.input_ids], device=tts.emb_text.weight.device)
    state = tts.new_state(T.text_mask(prompt.tokens_len, c.streaming_text_reserved_len, c.num_spk_embs))
    run = Executor(tts=tts, vocos=vocos).one
    finished = False
    # Each round reveals one text chunk, then draws one chunk of frames (31 rounds at most).
    for k in range(T.offline_chunk_count(c.streaming_text_reserved_len, c.streaming_text_chunk_size, c.num_spk_embs)):
        b, e = T.text_chunk_bounds(k, c.streaming_text_chunk_size, c.streaming_text_reserved_len, c.num_spk_embs)
        drive(prefill_chunk(tts, state, ids, b, e, spk_hidden, tr), run)
        codes, finished = drive(generate_chunk(tts, state, params, sampler, tr), run)
        if finished:
            break
    while not finished:  # the text is all in: draw until EOS or the length cap (checked after a call)
        codes, finished = drive(generate_chunk(tts, state, params, sampler, tr), run)
        if codes.shape[1] > params.max_frames:
            break
    wav = drive(decode_audio(state.codes, tr), run)
    if tr is not None:
        tr.pop("_counts", None)
        tr["wav"] = wav.detach().cpu()
    return wav.detach().cpu().numpy().astype(np.float32), tr
