"""Whisper audio encoder (`apm.`) with a caller-owned KV cache, the projector, and audio embeddings.

Owns: the encoder math with the official attribute names (spec §2.2/§2.3), `AudioEncoderCache`
(the per-session streaming state, spec §4.3), `MultiModalProjector` (`audio_projection_layer.`),
the offline chunk-causal mask and the two embedding paths (offline `get_audio_embedding` and
streaming `get_audio_embedding_streaming` of the official code). Does not own: log-mel features,
placeholders (omni.processing.audio), the scatter into LLM embeddings, when to reset the cache.

Attention is the eager math the reference ran (q scaled before the matmul, additive mask, softmax
in the input dtype), not SDPA, so parity does not depend on kernel choice.
"""

from __future__ import annotations

import logging
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from omni.config import AudioConfig, OmniConfig
from .decoder import KVCache
from omni.processing.audio import post_conv_frames, pooled_tokens

log = logging.getLogger(__name__)


class AudioEncoderCache(KVCache):
    """Per-layer self-attention keys/values of the frames encoded so far, [1, H, length, Dh] each,
    grown in place like the LLM's cache (a unit no longer copies the whole turn's cache).

    Owned by the session and passed into `WhisperEncoder.forward`; `length` (post-conv frames) is
    also the positional offset of the next chunk.
    """

    def __init__(self) -> None:
        super().__init__(0)  # layers are learnt from the first chunk

    @property
    def length(self) -> int:
        return self.seq_len

    def clear(self) -> None:
        """Empty (a new turn); the buffers stay for the next one."""
        self.crop(0)


class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        assert dim % heads == 0, f"d_model {dim} not divisible by {heads} heads"
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)  # Whisper: keys carry no bias
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, caches: list[AudioEncoderCache] | None, layer: int
    ) -> torch.Tensor:
        """x [B, T, D], mask additive [B, 1, T, S] or None -> [B, T, D] (S = cached + T).

        caches: one per batch row (each row attends to its own cached frames), or None."""
        B, T, D = x.shape
        q = self._split(self.q_proj(x) * self.scaling)
        k, v = self._split(self.k_proj(x)), self._split(self.v_proj(x))
        if caches is None:
            scores = q @ k.transpose(2, 3)
            if mask is not None:
                scores = scores + mask
            out = scores.softmax(dim=-1) @ v
        else:
            assert len(caches) == B and mask is None, f"{len(caches)} caches for batch {B}"
            rows = []
            for b, cache in enumerate(caches):
                kb, vb = cache.update(layer, k[b : b + 1], v[b : b + 1])
                rows.append((q[b : b + 1] @ kb.transpose(2, 3)).softmax(dim=-1) @ vb)
            out = torch.cat(rows, 0) if B > 1 else rows[0]
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class WhisperEncoderLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then x + fc2(gelu(fc1(LN(x))))."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        assert cfg.activation_function == "gelu", f"unsupported activation {cfg.activation_function}"
        self.self_attn = WhisperAttention(cfg.d_model, cfg.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.d_model)
        self.fc1 = nn.Linear(cfg.d_model, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, cfg.d_model)
        self.final_layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x, mask, cache, layer):
        x = x + self.self_attn(self.self_attn_layer_norm(x), mask, cache, layer)
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(nn.Module):
    """`apm.`: conv front-end, stored positional table, pre-LN layers, final LayerNorm."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.cfg = cfg
        self.max_source_positions = cfg.max_source_positions
        self.conv1 = nn.Conv1d(cfg.num_mel_bins, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.embed_positions = nn.Embedding(cfg.max_source_positions, cfg.d_model)
        self.layers = nn.ModuleList(WhisperEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model)

    def positions(self, offset: int, n: int) -> torch.Tensor:
        """Rows offset…offset+n of the table -> [n, D]; past the end the last row repeats
        (official streaming behaviour; the cache reset rule keeps it from happening)."""
        table = self.embed_positions.weight
        if offset + n > table.shape[0]:
            log.warning(
                "audio positions %d..%d exceed the %d-row table: repeating the last row",
                offset,
                offset + n,
                table.shape[0],
            )
        idx = torch.arange(offset, offset + n, device=table.device).clamp(max=table.shape[0] - 1)
        return table[idx]

    def forward(
        self,
        mel: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: AudioEncoderCache | list[AudioEncoderCache] | None = None,
    ) -> torch.Tensor:
        """mel [B, 80, T] -> last hidden state [B, ceil(T/2), D] (after layer_norm).

        attention_mask: [B, 1, T', T'] additive (0 / -inf) or bool (True = may attend), over the
        post-conv frames; only without a cache. cache (one, or one per batch row): this chunk's
        frames are appended to it, take positions from `cache.length` on, and attend to every
        cached frame and the whole chunk with no mask. The convolutions see this chunk only (zero
        padding at its edges).
        """
        B, C, T = mel.shape
        assert C == self.cfg.num_mel_bins, f"expected {self.cfg.num_mel_bins} mel bins, got {C}"
        assert cache is None or attention_mask is None, "a mask is only defined without a cache"
        caches = [cache] if isinstance(cache, AudioEncoderCache) else cache
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, T', D]
        if caches is None:
            x = x + self.positions(0, x.shape[1])
        else:
            x = x + torch.stack([self.positions(c.length, x.shape[1]) for c in caches])
        mask = attention_mask
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_fill(~mask, float("-inf"))
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, caches, i)
        return self.layer_norm(x)


class MultiModalProjector(nn.Module):
    """`audio_projection_layer.`: linear1 -> ReLU -> linear2."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(in_dim, out_dim)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_dim] -> [..., out_dim]."""
        return self.linear2(self.relu(self.linear1(x)))


def chunk_causal_mask(num_frames: int, frames_per_chunk: int | None, lengths: torch.Tensor) -> torch.Tensor:
    """Bool mask [B, 1, T', T'], True = may attend (lengths [B], T' = num_frames).

    A frame sees every frame of its own chunk and of all earlier chunks (frames_per_chunk None:
    every frame), and never a key at index >= lengths[b].
    """
    (B,) = lengths.shape
    assert frames_per_chunk is None or (isinstance(frames_per_chunk, numbers.Integral) and frames_per_chunk > 0), (
        f"frames_per_chunk must be a positive int of post-conv frames (attention_chunk_frames(s)), "
        f"got {frames_per_chunk!r}"
    )
    idx = torch.arange(num_frames, device=lengths.device)
    allowed = torch.ones(num_frames, num_frames, dtype=torch.bool, device=lengths.device)
    if frames_per_chunk is not None:
        chunk_end = (idx // frames_per_chunk + 1) * frames_per_chunk  # exclusive, per query row
        allowed = idx[None, :] < chunk_end[:, None]
    key_valid = idx[None, :] < lengths[:, None]  # [B, T']
    return (allowed[None] & key_valid[:, None, :])[:, None]


def avg_pool_time(x: torch.Tensor, pool_step: int) -> torch.Tensor:
    """x [B, T, D] -> [B, floor(T/step), D]: AvgPool1d(step, step) over time, channels-first as
    the official code runs it."""
    B, T, D = x.shape
    return F.avg_pool1d(x.transpose(1, 2), pool_step, pool_step).transpose(1, 2)


def offline_hidden(
    apm: WhisperEncoder, mel: torch.Tensor, mel_lens: torch.Tensor, chunk_frames: int | None
) -> torch.Tensor:
    """mel [B, 80, T] (zero-padded batch), mel_lens [B] -> last hidden [B, ceil(T/2), D]."""
    B, _, T = mel.shape
    # Official quirk (get_audio_embedding): the padding mask compares post-conv frame indices with
    # the *mel-frame* lengths, so it masks only frames >= mel_len, i.e. almost nothing.
    mask = chunk_causal_mask(post_conv_frames(T), chunk_frames, mel_lens.to(mel.device))
    return apm(mel, attention_mask=mask)


def audio_embeddings(
    apm: WhisperEncoder,
    projector: MultiModalProjector,
    mel: torch.Tensor,
    mel_lens: torch.Tensor,
    chunk_frames: int | None,
    pool_step: int,
) -> list[torch.Tensor]:
    """Offline path: mel [B, 80, T], mel_lens [B] -> B tensors [tokens_b, hidden].

    chunk_frames: post-conv frames per attention chunk (`attention_chunk_frames(1.0)` = 50) or None
    for full attention.
    The projection runs before the pooling (order matters, spec §2.3).
    """
    B, _, T = mel.shape
    pooled = avg_pool_time(projector(offline_hidden(apm, mel, mel_lens, chunk_frames)), pool_step)
    keep = [pooled_tokens(post_conv_frames(int(n)), pool_step) for n in mel_lens]
    return [pooled[b, : keep[b]] for b in range(B)]


def audio_embeddings_streaming(
    apm: WhisperEncoder, projector: MultiModalProjector, mel: torch.Tensor, cache: AudioEncoderCache, pool_step: int
) -> torch.Tensor:
    """One streaming chunk: mel [1, 80, T] -> [tokens, hidden]; appends to `cache` in place.

    The cache is dropped first when cache.length + ceil(T/2) >= max_source_positions (spec §4.3).
    """
    B, _, T = mel.shape
    assert B == 1, f"streaming encoder takes one chunk of one stream, got batch {B}"
    return audio_embeddings_streaming_rows(apm, projector, mel, [cache], pool_step)[0]


def audio_embeddings_streaming_rows(
    apm: WhisperEncoder,
    projector: MultiModalProjector,
    mels: torch.Tensor,
    caches: list[AudioEncoderCache],
    pool_step: int,
) -> list[torch.Tensor]:
    """Equal-length chunks of B streams: mels [B, 80, T], one cache each -> B tensors [tokens, hidden]."""
    B, _, T = mels.shape
    assert len(caches) == B, f"{len(caches)} caches for {B} chunks"
    frames = post_conv_frames(T)
    for cache in caches:
        if cache.length and cache.length + frames >= apm.max_source_positions:
            log.warning(
                "audio cache %d + %d frames reaches %d positions: dropping the cache",
                cache.length,
                frames,
                apm.max_source_positions,
            )
            cache.clear()
    pooled = avg_pool_time(projector(apm(mels, cache=caches)), pool_step)
    n = pooled_tokens(frames, pool_step)
    return [pooled[b, :n] for b in range(B)]


def audio_modules_from_state(
    cfg: OmniConfig, state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32
) -> tuple[WhisperEncoder, MultiModalProjector]:
    """Build `apm` and `audio_projection_layer` from a full state dict, strictly (missing or
    unexpected keys under either prefix raise)."""
    apm = WhisperEncoder(cfg.audio)
    projector = MultiModalProjector(cfg.audio_encoder_out_dim, cfg.hidden_size)
    for prefix, module in (("apm.", apm), ("audio_projection_layer.", projector)):
        sub = {k[len(prefix) :]: v.to(dtype) for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict(sub, strict=True)
        module.to(dtype).eval()
    return apm, projector
