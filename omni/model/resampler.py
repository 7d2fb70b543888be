"""Perceiver resampler (`resampler.*`, spec §2.3): per-slice patch features -> query_num tokens.

Owns: the one-layer cross-attention with learned queries, the 2-D sin-cos key positions and its
cache. Does not own: the vision tower or scattering the tokens into the prompt.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """pos [...] float32 -> [..., dim]: [sin(p·ω_k), cos(p·ω_k)], ω_k = 10000^(-k/(dim/2))."""
    assert dim % 2 == 0, f"sin-cos width {dim} must be even"
    omega = np.arange(dim // 2, dtype=np.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = pos[..., None] * omega
    return np.concatenate([np.sin(out), np.cos(out)], axis=-1)


def sincos_2d(dim: int, height: int, width: int) -> np.ndarray:
    """-> [height, width, dim] float32: first dim/2 channels encode the column index, the last
    dim/2 the row index (the official code calls them h and w the other way round)."""
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=-1)


class Resampler(nn.Module):
    """Learned queries attend over one slice's patches (keys carry 2-D positions, values do not)."""

    pos_embed: torch.Tensor  # [max_h, max_w, embed_dim] buffer (`_set_pos_cache`)

    def __init__(
        self, num_queries: int, embed_dim: int, num_heads: int, kv_dim: int, max_size: tuple[int, int] = (70, 70)
    ):
        super().__init__()
        self.num_queries, self.embed_dim = num_queries, embed_dim
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        # Official: nn.Identity when kv_dim == embed_dim, so there is no kv_proj key then.
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.zeros(embed_dim, embed_dim))
        h, w = max_size
        self.max_size = (h, w)
        self._set_pos_cache(self.max_size)

    def _set_pos_cache(self, size: tuple[int, int], device=None) -> None:
        pos = torch.from_numpy(sincos_2d(self.embed_dim, *size))
        self.register_buffer("pos_embed", pos.to(device) if device else pos, persistent=False)

    def init_buffers(self) -> None:
        """Recompute the sin-cos table after a meta-device build (it is not in the checkpoint)."""
        self._set_pos_cache(self.max_size, self.query.device)

    def _positions(self, h: int, w: int, device) -> torch.Tensor:
        """[h, w, embed_dim] key positions: the table's corner, or, for a slice larger than the
        table (a very tall or wide image), computed for this call only. The official code
        enlarges its table for good instead: one 1:1000 image kept gigabytes per process at
        full size. Same values either way (position (i, j) does not depend on the grid)."""
        if h <= self.max_size[0] and w <= self.max_size[1]:
            return self.pos_embed[:h, :w]
        return torch.from_numpy(sincos_2d(self.embed_dim, h, w)).to(device)

    def forward(self, x: torch.Tensor, tgt_sizes: torch.Tensor) -> torch.Tensor:
        """x [B, N, kv_dim] (patches beyond h·w are padding), tgt_sizes [B, 2] -> [B, Q, embed_dim]."""
        B, N, _ = x.shape
        assert tgt_sizes.shape == (B, 2), f"tgt_sizes {tuple(tgt_sizes.shape)} for batch {B}"
        lengths = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).tolist()
        assert max(lengths) <= N, f"tgt_sizes need {max(lengths)} patches, x has {N}"
        pos = x.new_zeros(B, N, self.embed_dim)
        pad = torch.ones(B, N, dtype=torch.bool, device=x.device)
        for b, (h, w) in enumerate(tgt_sizes.tolist()):
            pos[b, : h * w] = self._positions(h, w, x.device).reshape(h * w, -1).to(x.dtype)
            pad[b, : h * w] = False
        kv = self.ln_kv(self.kv_proj(x))
        q = self.ln_q(self.query)[:, None].expand(-1, B, -1)
        # nn.MultiheadAttention is sequence-first: [L, B, D].
        out, _ = self.attn(q, (kv + pos).transpose(0, 1), kv.transpose(0, 1), key_padding_mask=pad, need_weights=False)
        return self.ln_post(out.transpose(0, 1)) @ self.proj
