"""Golden replay of the `audio` case: log-mel, offline embeddings, placeholders, streaming encoder.

Owns: the mapping from `audio.safetensors` / `cases.json → audio` entries to our functions
(golden README §4). Does not own: any model math or tolerance policy beyond the harness defaults.

Encoder stages are fed the reference's own mel so a failure points at one stage; one extra row
runs the whole path from the waveform.
"""

from __future__ import annotations

import numpy as np
import torch

from omni.golden.harness import GoldenDir, Report
from omni.model.audio import (
    AudioEncoderCache,
    MultiModalProjector,
    WhisperEncoder,
    audio_embeddings,
    audio_embeddings_streaming,
    avg_pool_time,
    offline_hidden,
)
from omni.processing.audio import SAMPLE_RATE_HZ, attention_chunk_frames, audio_placeholder, log_mel

CHUNK_LENGTH_S = 1.0  # the `chunked.*` reference call (chat/generate default); `full.*` used -1
STREAM_PIECE_S = 1  # the streaming reference cut the speech into 1-s pieces


def _check_mel(speech: np.ndarray, want: dict, report: Report) -> None:
    # Same torch STFT as the reference: measured bit-identical on tiny-a; default atol 1e-4 still
    # leaves room for another FFT backend (log-mel values are O(1)).
    mel = log_mel(speech)
    report.compare("mel", torch.from_numpy(mel)[None], want["mel"])
    report.equal("mel_lens", [mel.shape[1]], want["mel_lens"].tolist())


def _check_offline(apm, projector, pool_step: int, want: dict, report: Report) -> None:
    mel, lens = want["mel"], want["mel_lens"].long()
    for name, chunk_frames in (("chunked", attention_chunk_frames(CHUNK_LENGTH_S)), ("full", None)):
        projected = projector(offline_hidden(apm, mel, lens, chunk_frames))
        report.compare(f"{name}.projected", projected, want[f"{name}.projected"])
        report.compare(f"{name}.pooled", avg_pool_time(projected, pool_step).transpose(1, 2), want[f"{name}.pooled"])
        embeds = audio_embeddings(apm, projector, mel, lens, chunk_frames, pool_step)
        report.compare(f"{name}.embeds", embeds[0], want[f"{name}.embeds"])
    report.compare("full.encoder_last_hidden_state_unmasked", apm(mel), want["full.encoder_last_hidden_state_unmasked"])


def _check_end_to_end(speech: np.ndarray, apm, projector, pool_step: int, want: dict, report: Report) -> None:
    mel = torch.from_numpy(log_mel(speech))[None]
    lens = torch.tensor([mel.shape[2]])
    chunk_frames = attention_chunk_frames(CHUNK_LENGTH_S)
    embeds = audio_embeddings(apm, projector, mel, lens, chunk_frames, pool_step)
    report.compare("chunked.embeds_from_wav", embeds[0], want["chunked.embeds"])


def _check_placeholders(speech: np.ndarray, cases: dict, report: Report) -> None:
    report.equal("placeholder_chunked", audio_placeholder(len(speech), chunk_input=True), cases["placeholder_chunked"])
    report.equal(
        "placeholder_unchunked", audio_placeholder(len(speech), chunk_input=False), cases["placeholder_unchunked"]
    )


def _check_streaming(
    speech: np.ndarray, apm, projector, pool_step: int, want: dict, cases: dict, report: Report
) -> None:
    piece = STREAM_PIECE_S * SAMPLE_RATE_HZ
    pieces = [speech[i : i + piece] for i in range(0, len(speech), piece)]
    report.equal("stream_num_chunks", len(pieces), cases["stream_num_chunks"])
    cache = AudioEncoderCache()
    for k, samples in enumerate(pieces[: cases["stream_num_chunks"]]):
        report.compare(f"stream.{k}.mel", torch.from_numpy(log_mel(samples))[None], want[f"stream.{k}.mel"])
        report.equal(f"stream.{k}.placeholder", audio_placeholder(len(samples)), cases[f"stream.{k}.placeholder"])
        embeds = audio_embeddings_streaming(apm, projector, want[f"stream.{k}.mel"], cache, pool_step)
        report.compare(f"stream.{k}.embeds", embeds, want[f"stream.{k}.embeds"])
        report.equal(f"stream.{k}.cache_len", cache.length, cases[f"stream.{k}.cache_len"])


def check(g: GoldenDir, apm: WhisperEncoder, projector: MultiModalProjector, pool_step: int, report: Report) -> None:
    """Replay `audio` of golden folder `g` with float32 modules; rows go to `report`."""
    report.case_name = "audio"
    want, cases = g.case("audio"), g.cases["audio"]
    speech = g.case("inputs")["speech_16k"].numpy()
    with torch.inference_mode():
        _check_mel(speech, want, report)
        _check_placeholders(speech, cases, report)
        _check_offline(apm, projector, pool_step, want, report)
        _check_end_to_end(speech, apm, projector, pool_step, want, report)
        _check_streaming(speech, apm, projector, pool_step, want, cases, report)
