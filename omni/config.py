"""Model configuration: frozen dataclasses read from the official `config.json` field names.

Owns: parsing a checkpoint's config.json (and preprocessor_config.json) into typed, immutable
objects with the official class defaults (spec §1). Does not own: weights, tokenizers, server
settings (those live in streaming/ and TOML).

Unknown keys in config.json are kept out of the dataclasses but never an error: the official file
carries many fields (Whisper decoder sizes, generation leftovers) that inference does not read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


def _pick(cls, raw: dict[str, Any], **overrides):
    """Build dataclass `cls` from the keys of `raw` that name its fields."""
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in raw.items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)


@dataclass(frozen=True)
class VisionConfig:
    """NaViT SigLIP tower (spec §1.2)."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    image_size: int = 980
    patch_size: int = 14
    num_channels: int = 3
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6

    @property
    def num_patches_per_side(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class AudioConfig:
    """Whisper-medium-style encoder (spec §1.3)."""

    d_model: int = 1024
    encoder_layers: int = 24
    encoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    num_mel_bins: int = 80
    max_source_positions: int = 1500
    activation_function: str = "gelu"


@dataclass(frozen=True)
class TTSConfig:
    """ConditionalChatTTS (spec §1.4); Llama backbone fields not in config.json stay Llama defaults."""

    llm_dim: int = 2560
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_attention_heads: int = 12
    num_hidden_layers: int = 20
    max_position_embeddings: int = 4096
    num_audio_tokens: int = 626
    num_text_tokens: int = 21178
    num_mel_bins: int = 100
    num_vq: int = 4
    use_speaker_embedding: bool = True
    use_llm_hidden_state: bool = False
    spk_emb_token_id: int = 21143
    num_spk_embs: int = 1
    audio_bos_token_id: int = 21132
    text_eos_token_id: int = 21133
    use_text: bool = True
    streaming: bool = True
    streaming_text_chunk_size: int = 10
    streaming_text_reserved_len: int = 300
    streaming_audio_chunk_size: int = 50
    attn_implementation: str = "sdpa"
    use_mlp: bool = True
    top_p: float = 0.7
    top_k: int = 20
    repetition_penalty: float = 1.0
    # Llama defaults of the backbone (not read from config.json by the official code).
    llama_vocab_size: int = 32000
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def eos_code(self) -> int:
        return self.num_audio_tokens - 1


@dataclass(frozen=True)
class SliceConfig:
    """Image slicing; the class default when absent is max_slice_nums=1 (spec §1.1)."""

    max_slice_nums: int = 1
    patch_size: int = 14
    scale_resolution: int = 448


@dataclass(frozen=True)
class OmniConfig:
    """Top level = LLM hyper-parameters + multimodal fields (spec §1.1). One class for every family
    (omni.family reads `model_type` and `version` to pick one): MiniCPM-V 4.5's Qwen3 adds
    `head_dim` (explicit; kept as `explicit_head_dim`), `attention_bias` and `batch_3d_resampler`."""

    model_type: str = "minicpmo"
    version: float = 2.6
    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    vocab_size: int = 151700
    max_position_embeddings: int = 32768
    rope_theta: float = 1000000.0
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    bos_token_id: int = 151643
    eos_token_id: int = 151645
    query_num: int = 64
    image_size: int = 448
    patch_size: int = 14
    drop_vision_last_layer: bool = False
    vision_batch_size: int = 16
    use_image_id: bool = True
    batch_3d_resampler: bool = False  # V-4.5: frames of a pack concatenated along the key axis
    attention_bias: bool | None = None  # Qwen3 field; None (Qwen2 configs lack it): the family decides
    explicit_head_dim: int | None = None  # config.json `head_dim` (Qwen3); None: hidden_size // heads
    audio_pool_step: int = 2
    audio_chunk_length: float = 1.0
    chunk_input: bool = True
    init_vision: bool = True
    init_audio: bool = True
    init_tts: bool = True
    vision: VisionConfig = field(default_factory=VisionConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    slice: SliceConfig = field(default_factory=SliceConfig)

    @property
    def head_dim(self) -> int:
        # Qwen3 gives it explicitly (128 with hidden 4096 / 32 heads, but not derived); Qwen2 derives it.
        return self.explicit_head_dim or self.hidden_size // self.num_attention_heads

    @property
    def resampler_heads(self) -> int:
        # Official: num_heads = embed_dim // 128 (spec §2.1); tiny configs keep hidden % 128 == 0.
        return self.hidden_size // 128

    @property
    def audio_encoder_out_dim(self) -> int:
        # Quirk kept: the projector input width is encoder_ffn_dim // 4, not d_model (spec §1.3).
        return self.audio.encoder_ffn_dim // 4

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "OmniConfig":
        vision = _pick(VisionConfig, raw.get("vision_config", {}))
        audio_raw = dict(raw.get("audio_config", {}))
        audio = _pick(AudioConfig, audio_raw)
        tts = _pick(TTSConfig, raw.get("tts_config", {}))
        slice_cfg = _pick(SliceConfig, raw.get("slice_config", {}))
        extra = {"explicit_head_dim": raw["head_dim"]} if raw.get("head_dim") else {}
        if "version" in raw:
            extra["version"] = float(raw["version"])
        cfg = _pick(cls, raw, vision=vision, audio=audio, tts=tts, slice=slice_cfg, **extra)
        if cfg.audio.encoder_ffn_dim != 4 * cfg.audio.d_model:
            raise ValueError(
                f"audio_config.encoder_ffn_dim ({cfg.audio.encoder_ffn_dim}) must be 4 x d_model "
                f"({cfg.audio.d_model}): the projector input width is encoder_ffn_dim // 4"
            )
        if cfg.hidden_size % 128:
            raise ValueError(f"hidden_size {cfg.hidden_size} must be a multiple of 128 (resampler heads)")
        return cfg

    @classmethod
    def from_file(cls, path: str | Path) -> "OmniConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **kw) -> "OmniConfig":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class PreprocessorConfig:
    """preprocessor_config.json: image processor + Whisper feature extractor settings (spec §1.5)."""

    max_slice_nums: int = 9
    scale_resolution: int = 448
    patch_size: int = 14
    use_image_id: bool = True
    image_feature_size: int = 64
    slice_mode: bool = True
    norm_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    norm_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    im_start: str = "<image>"
    im_end: str = "</image>"
    slice_start: str = "<slice>"
    slice_end: str = "</slice>"
    unk: str = "<unk>"
    im_id_start: str = "<image_id>"
    im_id_end: str = "</image_id>"
    feature_size: int = 80
    sampling_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 400
    chunk_length: int = 30

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "PreprocessorConfig":
        raw = dict(raw)
        for k in ("norm_mean", "norm_std"):
            if k in raw:
                raw[k] = tuple(raw[k])
        return _pick(cls, raw)

    @classmethod
    def from_file(cls, path: str | Path) -> "PreprocessorConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
