"""NaViT SigLIP vision tower (`vpm.*`, spec §2.2, §3.1) and the batching around it.

Owns: the tower (patch embedding of a patch-major strip, bucketed position ids from tgt_sizes,
pre-LN encoder with eager attention, post LayerNorm), padding strips into a batch and running the
tower in chunks of `vision_batch_size`. Does not own: image slicing (omni.processing.image) or the
resampler (omni.model.resampler).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omni.config import VisionConfig


def position_ids(tgt_sizes: torch.Tensor, num_per_side: int, max_patches: int) -> torch.Tensor:
    """tgt_sizes [B, 2] (rows, cols) -> [B, max_patches] long ids into the num_per_side² table.

    A slice of h×w patches maps its fractional coordinates i/h, j/w onto the fixed grid by
    bucketising (NaViT); padded patches keep id 0. The grid must come from tgt_sizes: the strip
    layout makes the mask 1×N, so it carries no 2-D shape.
    """
    B, _ = tgt_sizes.shape
    boundaries = torch.arange(1 / num_per_side, 1.0, 1 / num_per_side)
    ids = torch.zeros(B, max_patches, dtype=torch.long)
    for b, (h, w) in enumerate(tgt_sizes.tolist()):
        # The reference's step is 1 / int32 tensor, i.e. a float32 value; keep it bit-identical
        # because coordinates can sit exactly on a bucket boundary.
        rows = torch.arange(0, 1 - 1e-6, float(np.float32(1.0 / h)))
        cols = torch.arange(0, 1 - 1e-6, float(np.float32(1.0 / w)))
        bh = torch.bucketize(rows, boundaries, right=True)
        bw = torch.bucketize(cols, boundaries, right=True)
        ids[b, : h * w] = (bh[:, None] * num_per_side + bw).flatten()
    return ids


class SiglipVisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.num_per_side = cfg.num_patches_per_side
        self.patch_embedding = nn.Conv2d(cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(self.num_per_side**2, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
        """[B, 3, P, P·N] -> [B, N, D]."""
        B, _, P, L = pixel_values.shape
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        ids = position_ids(tgt_sizes.cpu(), self.num_per_side, L // P).to(x.device)
        return x + self.position_embedding(ids)


class SiglipAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        D = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.head_dim = D // self.num_heads
        self.q_proj, self.k_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.v_proj, self.out_proj = nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x [B, N, D], mask additive [B, 1, N, N] or None -> [B, N, D]."""
        B, N, D = x.shape
        q, k, v = (
            p(x).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
            for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        scores = (q @ k.transpose(2, 3)) * self.head_dim**-0.5
        if mask is not None:
            scores = scores + mask
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return self.out_proj((probs @ v).transpose(1, 2).reshape(B, N, D))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        assert cfg.hidden_act == "gelu_pytorch_tanh", f"unsupported hidden_act {cfg.hidden_act}"
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(num_layers))


class SiglipVisionTransformer(nn.Module):
    """`vpm`: strips + patch mask + tgt_sizes -> per-patch features after post_layernorm."""

    def __init__(self, cfg: VisionConfig, drop_last_layer: bool = False):
        super().__init__()
        # Official `drop_vision_last_layer` deletes the last encoder layer (and its weights).
        n = cfg.num_hidden_layers - (1 if drop_last_layer else 0)
        self.embeddings = SiglipVisionEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg, n)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(
        self, pixel_values: torch.Tensor, patch_attention_mask: torch.Tensor, tgt_sizes: torch.Tensor
    ) -> torch.Tensor:
        """pixel_values [B, 3, P, P·N], patch_attention_mask [B, 1, N] bool, tgt_sizes [B, 2]
        -> [B, N, D]. Padded rows are computed too (they only see valid keys)."""
        B, _, P, L = pixel_values.shape
        N = L // P
        assert patch_attention_mask.shape == (B, 1, N), f"mask {tuple(patch_attention_mask.shape)}"
        assert tgt_sizes.shape == (B, 2), f"tgt_sizes {tuple(tgt_sizes.shape)}"
        x = self.embeddings(pixel_values, tgt_sizes)
        valid = patch_attention_mask.reshape(B, N).bool()
        mask = None
        if not bool(valid.all()):
            # Key-only additive mask of dtype-min, as transformers' _prepare_4d_attention_mask.
            mask = torch.zeros(B, 1, N, N, dtype=x.dtype, device=x.device)
            mask.masked_fill_(~valid[:, None, None, :], torch.finfo(x.dtype).min)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.post_layernorm(x)


def pad_strips(strips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """strips (3, P, P·N_i) -> pixel_values [B, 3, P, P·N_max] (zeros on the right) and
    patch_attention_mask [B, 1, N_max] bool (True for real patches)."""
    assert strips, "no strips to pad"
    C, P, _ = strips[0].shape
    n = [s.shape[2] // P for s in strips]
    n_max = max(n)
    pixel_values = strips[0].new_zeros(len(strips), C, P, n_max * P)
    mask = torch.zeros(len(strips), 1, n_max, dtype=torch.bool)
    for i, s in enumerate(strips):
        assert s.shape[:2] == (C, P), f"strip {i} has shape {tuple(s.shape)}"
        pixel_values[i, :, :, : s.shape[2]] = s
        mask[i, 0, : n[i]] = True
    return pixel_values, mask.to(pixel_values.device)


def encode_slices(
    vpm: SiglipVisionTransformer, strips: list[torch.Tensor], tgt_sizes: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """All slices -> [n, N_max, D]. Like the official get_vllm_embedding, the whole list is padded
    to one N_max first and then run in chunks of at most `batch_size` slices."""
    assert len(strips) == tgt_sizes.shape[0], f"{len(strips)} strips vs {tgt_sizes.shape[0]} sizes"
    pixel_values, mask = pad_strips(strips)
    dtype = next(vpm.parameters()).dtype
    pixel_values = pixel_values.to(dtype)
    out = [
        vpm(pixel_values[i : i + batch_size], mask[i : i + batch_size], tgt_sizes[i : i + batch_size])
        for i in range(0, len(strips), batch_size)
    ]
    return torch.cat(out, dim=0)
