"""Audio front-end: 16-kHz waveform -> Whisper log-mel, length arithmetic, LLM placeholder strings.

Owns: the official feature path (transformers' `WhisperFeatureExtractor` called the way the official
`MiniCPMOProcessor.audio_feature_extract` calls it, spec §3.2), the pure length functions
(samples -> mel frames -> post-conv frames -> LLM tokens) and the `<|audio_start|>…<|audio_end|>`
placeholder text. Does not own: the encoder (omni.model.audio), tokenisation, prompt layout.

Every rate is derived: 16 kHz / hop 160 = 100 mel frames/s; conv2 stride 2 -> 50 frames/s;
average pool 2 -> 25 tokens/s.
"""

from __future__ import annotations

import functools

import numpy as np
from transformers import WhisperFeatureExtractor

from omni.config import PreprocessorConfig

_PRE = PreprocessorConfig()
SAMPLE_RATE_HZ: int = _PRE.sampling_rate
HOP_SAMPLES: int = _PRE.hop_length
CONV_STRIDE: int = 2  # Whisper conv2 (conv1 has stride 1)
POOL_STEP: int = 2  # audio_pool_step; the official processor hard-codes 2 (spec §8.3)
MAX_CLIP_S: int = _PRE.chunk_length  # the extractor pads to (and the processor splits at) 30 s
MAX_CLIP_SAMPLES: int = MAX_CLIP_S * SAMPLE_RATE_HZ

MEL_FRAMES_PER_S: int = SAMPLE_RATE_HZ // HOP_SAMPLES  # 100


def mel_frames(num_samples: int, hop_samples: int = HOP_SAMPLES) -> int:
    """Frames the processor keeps: ceil(n / hop) (the STFT's last frame is dropped)."""
    return -(-num_samples // hop_samples)


def post_conv_frames(num_mel_frames: int) -> int:
    """Frames after conv2 (k=3, pad=1, stride 2): ceil(T_mel / 2)."""
    return (num_mel_frames - 1) // CONV_STRIDE + 1


def pooled_tokens(num_post_conv_frames: int, pool_step: int = POOL_STEP) -> int:
    """LLM tokens kept after AvgPool1d(pool_step): floor((L - step) / step) + 1."""
    return (num_post_conv_frames - pool_step) // pool_step + 1


def audio_tokens(num_samples: int, pool_step: int = POOL_STEP) -> int:
    """Samples -> LLM tokens (25 for 1 s at the official rates)."""
    return pooled_tokens(post_conv_frames(mel_frames(num_samples)), pool_step)


POST_CONV_FRAMES_PER_S: int = post_conv_frames(MEL_FRAMES_PER_S)  # 50
TOKENS_PER_S: int = pooled_tokens(POST_CONV_FRAMES_PER_S)  # 25

AUDIO_START = "<|audio_start|>"
AUDIO_END = "<|audio_end|>"


def attention_chunk_frames(chunk_length_s: float) -> int:
    """Post-conv frames per offline attention chunk; official: int(chunk_length * 50)."""
    return int(chunk_length_s * POST_CONV_FRAMES_PER_S)


def chunk_tokens(chunk_length_s: float = 1.0, pool_step: int = POOL_STEP) -> int:
    """Tokens in one placeholder group; official: int(chunk_length * 100) fbank frames."""
    return pooled_tokens(post_conv_frames(int(chunk_length_s * MEL_FRAMES_PER_S)), pool_step)


def audio_placeholder(
    num_samples: int,
    chunk_input: bool = True,
    chunk_length_s: float = 1.0,
    pool_step: int = POOL_STEP,
    unk: str = _PRE.unk,
) -> str:
    """Placeholder text for one clip of `num_samples` at 16 kHz (spec §3.2).

    chunk_input: one `<|audio_start|>` + `<unk>`×25 + `<|audio_end|>` group per second, the last
    group holding the remainder; otherwise one group with every token.
    """
    total = audio_tokens(num_samples, pool_step)
    if not chunk_input:
        return AUDIO_START + unk * total + AUDIO_END
    per_group = chunk_tokens(chunk_length_s, pool_step)
    groups = []
    for start in range(0, total, per_group):
        groups.append(AUDIO_START + unk * min(per_group, total - start) + AUDIO_END)
    return "".join(groups)


@functools.lru_cache(maxsize=4)
def feature_extractor(cfg: PreprocessorConfig = _PRE) -> WhisperFeatureExtractor:
    """One shared extractor per preprocessor config (building it computes the mel filterbank)."""
    return WhisperFeatureExtractor(
        feature_size=cfg.feature_size,
        sampling_rate=cfg.sampling_rate,
        hop_length=cfg.hop_length,
        chunk_length=cfg.chunk_length,
        n_fft=cfg.n_fft,
    )


def split_clip(audio_16k: np.ndarray, max_samples: int = MAX_CLIP_SAMPLES) -> list[np.ndarray]:
    """Official long-clip rule: consecutive 30-s pieces, the last one shorter."""
    if len(audio_16k) <= max_samples:
        return [audio_16k]
    return [audio_16k[i : i + max_samples] for i in range(0, len(audio_16k), max_samples)]


def log_mel_pieces(audio_16k: np.ndarray, cfg: PreprocessorConfig = _PRE) -> list[np.ndarray]:
    """[N] float32 -> one [80, ceil(n_i/160)] log-mel per ≤30-s piece (the official batch items).

    Each piece has its own "max − 8" floor and sees zeros after its end, as in the official
    processor (padding="max_length" to 30 s, then cut to the clip's frames). We pad only
    `_zero_tail` samples instead of to 30 s: every frame past that tail is an all-zero window
    whose log-mel is exactly log10(1e-10), never the maximum, so the kept frames and the floor
    are the same numbers at a fraction of the cost (a 1-s unit: ~1 ms instead of ~15 ms).
    """
    assert audio_16k.ndim == 1, f"mono waveform expected, got shape {audio_16k.shape}"
    full = cfg.chunk_length * cfg.sampling_rate
    pieces = [np.asarray(p, dtype=np.float32) for p in split_clip(audio_16k, full)]
    mels = []
    for piece in pieces:
        n = len(piece)
        padded = np.zeros(min(full, _ceil_to(n + _zero_tail(cfg), cfg.hop_length)), np.float32)
        padded[:n] = piece
        feat = feature_extractor(cfg)(
            [padded], sampling_rate=cfg.sampling_rate, padding="longest", return_tensors="np"
        )["input_features"][0]
        mels.append(np.ascontiguousarray(feat[:, : mel_frames(n, cfg.hop_length)], dtype=np.float32))
    return mels


def _zero_tail(cfg: PreprocessorConfig) -> int:
    """Zeros after a clip so that every window touching audio is computed and the dropped last
    STFT frame (and its reflect padding) is all zeros, as it is at the end of the 30-s buffer."""
    return 2 * cfg.n_fft


def _ceil_to(n: int, step: int) -> int:
    return -(-n // step) * step


def log_mel(audio_16k: np.ndarray, cfg: PreprocessorConfig = _PRE) -> np.ndarray:
    """[N] float32 at 16 kHz -> [80, ceil(N/160)] log-mel, identical to the official processor.

    Clips over 30 s: the 30-s pieces (each normalised on its own) are concatenated along time;
    30 s is a whole number of hops, so the total is still ceil(N/160). The encoder must see such a
    clip as separate ≤3000-frame items (`log_mel_pieces`), as the official batch does.
    """
    return np.concatenate(log_mel_pieces(audio_16k, cfg), axis=1)
