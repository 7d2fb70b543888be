"""Audio path: length arithmetic, placeholders, masks, the streaming encoder, golden replay.

Pure tests first, then a small random encoder (streaming properties), then the golden folder
(`OMNI_GOLDEN_DIR`, default tests/assets/golden/tiny-a).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omni.config import AudioConfig, OmniConfig
from omni.golden import audio as golden_audio
from omni.golden.harness import GoldenDir, Report, format_row
from omni.model.audio import (
    AudioEncoderCache,
    MultiModalProjector,
    WhisperEncoder,
    audio_embeddings,
    audio_embeddings_streaming,
    audio_modules_from_state,
    chunk_causal_mask,
)
from omni.processing import audio as pa

REPO = Path(__file__).resolve().parents[1]
POOL = 2


# ---- length arithmetic and placeholders (pure) ----


@pytest.mark.parametrize(
    "samples, mel, conv, tokens",
    [
        (16000, 100, 50, 25),  # 1 s
        (2560, 16, 8, 4),  # 0.16 s
        (2567, 17, 9, 4),  # tiny-a's last streaming piece
        (32000, 200, 100, 50),
        (40000, 250, 125, 62),  # 2.5 s: odd post-conv count, pooling drops the last frame
        (50567, 317, 159, 79),  # tiny-a's speech
        (160, 1, 1, 0),
        (161, 2, 1, 0),
        (480000, 3000, 1500, 750),  # 30 s fills the positional table
    ],
)
def test_length_table(samples, mel, conv, tokens):
    assert pa.mel_frames(samples) == mel
    assert pa.post_conv_frames(mel) == conv
    assert pa.pooled_tokens(conv) == tokens
    assert pa.audio_tokens(samples) == tokens


def test_derived_rates():
    assert (pa.MEL_FRAMES_PER_S, pa.POST_CONV_FRAMES_PER_S, pa.TOKENS_PER_S) == (100, 50, 25)
    assert pa.chunk_tokens(1.0) == pa.TOKENS_PER_S
    assert pa.attention_chunk_frames(1.0) == pa.POST_CONV_FRAMES_PER_S


def _groups(placeholder: str) -> list[int]:
    groups = re.findall(r"<\|audio_start\|>((?:<unk>)*)<\|audio_end\|>", placeholder)
    assert "".join(f"<|audio_start|>{g}<|audio_end|>" for g in groups) == placeholder
    return [g.count("<unk>") for g in groups]


@pytest.mark.parametrize(
    "samples, chunked, unchunked",
    [
        (16000, [25], [25]),
        (2560, [4], [4]),
        (40000, [25, 25, 12], [62]),
        (50567, [25, 25, 25, 4], [79]),
        (48000, [25, 25, 25], [75]),
    ],
)
def test_placeholder_groups(samples, chunked, unchunked):
    assert _groups(pa.audio_placeholder(samples, chunk_input=True)) == chunked
    assert _groups(pa.audio_placeholder(samples, chunk_input=False)) == unchunked


def test_log_mel_lengths_and_long_clip():
    rng = np.random.default_rng(0)
    assert pa.log_mel(rng.standard_normal(2567).astype(np.float32) * 0.1).shape == (80, 17)
    clip = rng.standard_normal(31 * pa.SAMPLE_RATE_HZ).astype(np.float32) * 0.1
    pieces = pa.log_mel_pieces(clip)
    assert [p.shape[1] for p in pieces] == [3000, 100]
    np.testing.assert_array_equal(pieces[1], pa.log_mel(clip[pa.MAX_CLIP_SAMPLES :]))  # own "max − 8"
    assert pa.log_mel(clip).shape == (80, pa.mel_frames(len(clip)))


def test_chunk_causal_mask():
    m = chunk_causal_mask(5, 2, torch.tensor([5, 3]))
    assert m.shape == (2, 1, 5, 5) and m.dtype == torch.bool
    want = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    assert torch.equal(m[0, 0], want)
    assert torch.equal(m[1, 0], want & torch.tensor([1, 1, 1, 0, 0]).bool())  # keys >= 3 hidden
    with pytest.raises(AssertionError):
        chunk_causal_mask(5, 1.0, torch.tensor([5]))  # seconds passed where frames are due
    full = chunk_causal_mask(4, None, torch.tensor([3]))
    assert torch.equal(full[0, 0], torch.tensor([[1, 1, 1, 0]] * 4).bool())


# ---- streaming encoder on a small random model ----


def _random_modules(max_positions: int = 1500, seed: int = 0):
    torch.manual_seed(seed)
    cfg = AudioConfig(
        d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128, max_source_positions=max_positions
    )
    apm, proj = WhisperEncoder(cfg).eval(), MultiModalProjector(cfg.encoder_ffn_dim // 4, 48).eval()
    with torch.no_grad():
        apm.embed_positions.weight.normal_(0, 0.5)
    return apm, proj


def _stream(apm, proj, mel: torch.Tensor, chunk_mel_frames: int, cache: AudioEncoderCache):
    return [
        audio_embeddings_streaming(apm, proj, mel[:, :, i : i + chunk_mel_frames], cache, POOL)
        for i in range(0, mel.shape[2], chunk_mel_frames)
    ]


@torch.inference_mode()
def test_streaming_one_step_shapes():
    apm, proj = _random_modules()
    cache = AudioEncoderCache()
    out = audio_embeddings_streaming(apm, proj, torch.randn(1, 80, pa.MEL_FRAMES_PER_S), cache, POOL)
    assert out.shape == (pa.TOKENS_PER_S, 48)
    assert cache.length == pa.POST_CONV_FRAMES_PER_S and cache.num_layers == 2
    assert cache.layer(0)[0].shape == cache.layer(1)[1].shape == (1, 4, pa.POST_CONV_FRAMES_PER_S, 8)


@torch.inference_mode()
def test_streaming_single_chunk_equals_offline():
    # One whole 1-s chunk on an empty cache: same conv input, same positions, one attention block.
    apm, proj = _random_modules()
    mel = torch.randn(1, 80, pa.MEL_FRAMES_PER_S)
    got = audio_embeddings_streaming(apm, proj, mel, AudioEncoderCache(), POOL)
    lens = torch.tensor([mel.shape[2]])
    for chunk_frames in (pa.POST_CONV_FRAMES_PER_S, None):
        want = audio_embeddings(apm, proj, mel, lens, chunk_frames, POOL)[0]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@torch.inference_mode()
def test_streaming_chunks_equal_offline_chunk_causal():
    """Streaming 1-s chunks == offline 1-s chunk-causal attention on one shared mel.

    They differ only where the convolutions cross a chunk edge (streaming zero-pads each chunk;
    per-chunk mel normalisation is excluded by sharing one mel). Zeroing conv1's bias and the mel
    frames 98..101 around every 100-frame edge makes conv1 output exactly 0 there, which is what
    the streaming zero padding supplies, so every post-conv frame agrees and what remains is the
    attention/cache/position logic, compared over a partial last chunk too (317 frames).
    """
    apm, proj = _random_modules()
    with torch.no_grad():
        apm.conv1.bias.zero_()
    step = pa.MEL_FRAMES_PER_S
    mel = torch.randn(1, 80, 317)
    for edge in range(step, mel.shape[2], step):
        mel[:, :, edge - 2 : edge + 2] = 0
    streamed = torch.cat(_stream(apm, proj, mel, step, AudioEncoderCache()))
    offline = audio_embeddings(apm, proj, mel, torch.tensor([317]), pa.POST_CONV_FRAMES_PER_S, POOL)[0]
    assert streamed.shape == offline.shape == (pa.audio_tokens(317 * pa.HOP_SAMPLES), 48)
    torch.testing.assert_close(streamed, offline, atol=1e-5, rtol=1e-5)
    full = audio_embeddings(apm, proj, mel, torch.tensor([317]), None, POOL)[0]
    assert (streamed - full).abs().max() > 1e-3  # the construction does exercise the chunk mask


@torch.inference_mode()
def test_streaming_earlier_output_never_changes():
    apm, proj = _random_modules()
    mel = torch.randn(1, 80, 300)
    cache = AudioEncoderCache()
    first = audio_embeddings_streaming(apm, proj, mel[:, :, :100], cache, POOL)
    first_copy = first.clone()
    k_old = [cache.layer(i)[0].clone() for i in range(cache.num_layers)]
    v_old = [cache.layer(i)[1].clone() for i in range(cache.num_layers)]
    audio_embeddings_streaming(apm, proj, mel[:, :, 100:200], cache, POOL)
    audio_embeddings_streaming(apm, proj, mel[:, :, 200:], cache, POOL)
    assert torch.equal(first, first_copy)
    n = k_old[0].shape[2]
    for layer in range(len(k_old)):
        assert torch.equal(cache.layer(layer)[0][:, :, :n], k_old[layer])
        assert torch.equal(cache.layer(layer)[1][:, :, :n], v_old[layer])
    # A stream that stopped after chunk 0 returned the same rows.
    again = _stream(apm, proj, mel[:, :, :100], 100, AudioEncoderCache())[0]
    assert torch.equal(again, first)


@pytest.mark.parametrize("max_positions", [120, 150])
@torch.inference_mode()
def test_streaming_cache_reset_at_max_positions(max_positions):
    # 1-s chunks add 50 frames: 50, 100, then 100 + 50 >= limit drops the cache before chunk 2.
    apm, proj = _random_modules(max_positions)
    mel = torch.randn(1, 80, 300)
    cache = AudioEncoderCache()
    outs = _stream(apm, proj, mel, 100, cache)
    assert cache.length == 50
    fresh = audio_embeddings_streaming(apm, proj, mel[:, :, 200:], AudioEncoderCache(), POOL)
    torch.testing.assert_close(outs[2], fresh, atol=0, rtol=0)


@torch.inference_mode()
def test_offline_batch_padding_quirk():
    # Official get_audio_embedding compares post-conv indices with *mel* lengths: a 120-frame item
    # padded to 200 mel frames (100 post-conv) has no key masked, so it sees its zero padding.
    apm, proj = _random_modules()
    mel = torch.randn(2, 80, 200)
    mel[1, :, 120:] = 0
    out = audio_embeddings(apm, proj, mel, torch.tensor([200, 120]), pa.POST_CONV_FRAMES_PER_S, POOL)
    assert [o.shape[0] for o in out] == [50, pa.pooled_tokens(pa.post_conv_frames(120))]
    alone = audio_embeddings(apm, proj, mel[1:], torch.tensor([200]), pa.POST_CONV_FRAMES_PER_S, POOL)[0]
    torch.testing.assert_close(out[1], alone[: out[1].shape[0]], atol=1e-5, rtol=1e-5)


def test_bool_and_additive_masks_agree():
    apm, _ = _random_modules()
    mel = torch.randn(2, 80, 120)
    mask = chunk_causal_mask(60, 20, torch.tensor([60, 45]))
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    with torch.inference_mode():
        torch.testing.assert_close(apm(mel, attention_mask=mask), apm(mel, attention_mask=additive), atol=0, rtol=0)


def test_positions_past_table_repeat_last_row():
    apm, _ = _random_modules(max_positions=10)
    rows = apm.positions(8, 4)
    table = apm.embed_positions.weight
    assert torch.equal(rows, torch.stack([table[8], table[9], table[9], table[9]]))


# ---- golden replay ----


def _golden_dir() -> GoldenDir:
    env = os.environ.get("OMNI_GOLDEN_DIR")
    path = Path(env) if env else REPO / "tests/assets/golden/tiny-a"
    if not env and not (path / "cases.json").is_file():
        pytest.fail(f"no golden folder at {path}; set OMNI_GOLDEN_DIR")
    return GoldenDir(path)


def test_golden_audio():
    g = _golden_dir()
    cfg = OmniConfig.from_file(g.path / "config.json")
    state = load_file(str(g.checkpoint_dir() / "model.safetensors"))
    apm, proj = audio_modules_from_state(cfg, state)
    report = Report()
    golden_audio.check(g, apm, proj, cfg.audio_pool_step, report)
    failed = [format_row(r) for r in report.rows if not r.passed]
    assert report.passed, "\n".join(failed)


@pytest.mark.parametrize("n", [1, 159, 161, 16000, 16001, 28492, 479999, 480000, 480001])
def test_log_mel_short_padding_equals_the_official_30s_padding(n):
    """We pad a clip with a short zero tail instead of to 30 s; the kept frames must not change."""
    from omni.config import PreprocessorConfig
    from omni.processing import audio as A

    cfg = PreprocessorConfig()
    x = (np.random.default_rng(n).standard_normal(n) * 0.2).astype(np.float32)
    x[-50:] *= 30  # a loud end: the "max - 8" floor must match
    ref = []
    for piece in A.split_clip(x, 480000):
        o = A.feature_extractor(cfg)(
            [piece], sampling_rate=16000, padding="max_length", return_attention_mask=True, return_tensors="np"
        )
        ref.append(o["input_features"][0][:, : int(o["attention_mask"].sum())])
    np.testing.assert_allclose(A.log_mel(x, cfg), np.concatenate(ref, 1), atol=1e-6, rtol=0)
