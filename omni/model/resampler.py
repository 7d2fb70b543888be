"""Perceiver resampler (`resampler.*`, spec §2.3): per-slice patch features -> query_num tokens.

Owns: the one-layer cross-attention with learned queries, the 2-D sin-cos key positions and its
cache, and MiniCPM-V 4.5's batched 3-D path (`temporal_ids`): a 1-D sin-cos of each frame's time
id (0.1-s steps) added to its keys, the frames of one pack concatenated along the key axis, so a
pack of 1-6 frames gives query_num tokens. Does not own: the vision tower or scattering the tokens
into the prompt.
"""

from __future__ import annotations

from typing import Sequence

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

    def _grid(self, h: int, w: int, device) -> torch.Tensor:
        """[h, w, embed_dim] key positions: the table's corner, or, for a slice larger than the
        table (a very tall or wide image), computed for this call only. The official code
        enlarges its table for good instead: one 1:1000 image kept gigabytes per process at
        full size. Same values either way (position (i, j) does not depend on the grid)."""
        if h <= self.max_size[0] and w <= self.max_size[1]:
            return self.pos_embed[:h, :w]
        return torch.from_numpy(sincos_2d(self.embed_dim, h, w)).to(device)

    def temporal_rows(self, ids: Sequence[int], dtype: torch.dtype, device) -> torch.Tensor:
        """[len(ids), embed_dim]: row t of the official float32 temporal table (the 1-D sin-cos
        of t), zeros for id -1 (a still image). Computed per id, not as the 72 000-row table."""
        rows = sincos_1d(self.embed_dim, np.asarray(ids, dtype=np.float32))
        rows[np.asarray(ids) < 0] = 0.0
        return torch.from_numpy(rows).to(device=device, dtype=dtype)

    def _positions(self, x: torch.Tensor, tgt_sizes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 2-D sin-cos key positions [B, N, D] (zero on padding) and the padding mask [B, N]."""
        B, N, _ = x.shape
        assert tgt_sizes.shape == (B, 2), f"tgt_sizes {tuple(tgt_sizes.shape)} for batch {B}"
        lengths = (tgt_sizes[:, 0] * tgt_sizes[:, 1]).tolist()
        assert max(lengths) <= N, f"tgt_sizes need {max(lengths)} patches, x has {N}"
        pos = x.new_zeros(B, N, self.embed_dim)
        pad = torch.ones(B, N, dtype=torch.bool, device=x.device)
        for b, (h, w) in enumerate(tgt_sizes.tolist()):
            pos[b, : h * w] = self._grid(h, w, x.device).reshape(h * w, -1).to(x.dtype)
            pad[b, : h * w] = False
        return pos, pad

    def forward(
        self, x: torch.Tensor, tgt_sizes: torch.Tensor, temporal_ids: Sequence[Sequence[int]] | None = None
    ) -> torch.Tensor:
        """x [B, N, kv_dim] (patches beyond h·w are padding), tgt_sizes [B, 2] -> [B, Q, embed_dim].

        `temporal_ids` (V-4.5, the official batched path): one id list per output covering the items
        in order (B ids in all) -> [len(temporal_ids), Q, embed_dim]; the items of one list attend
        as one key sequence, each padded to N (padding masked)."""
        if temporal_ids is not None:
            return self._packed(x, tgt_sizes, temporal_ids)
        B = x.shape[0]
        pos, pad = self._positions(x, tgt_sizes)
        kv = self.ln_kv(self.kv_proj(x))
        q = self.ln_q(self.query)[:, None].expand(-1, B, -1)
        # nn.MultiheadAttention is sequence-first: [L, B, D].
        out, _ = self.attn(q, (kv + pos).transpose(0, 1), kv.transpose(0, 1), key_padding_mask=pad, need_weights=False)
        return self.ln_post(out.transpose(0, 1)) @ self.proj

    def _packed(self, x: torch.Tensor, tgt_sizes: torch.Tensor, temporal_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        B, N, _ = x.shape
        flat = [int(t) for ids in temporal_ids for t in ids]
        if len(flat) != B or any(not ids for ids in temporal_ids):
            raise ValueError(f"temporal ids {[list(i) for i in temporal_ids]} do not cover {B} vision items")
        D = self.embed_dim
        pos, pad = self._positions(x, tgt_sizes)
        kv = self.ln_kv(self.kv_proj(x))
        keys = kv + (pos + self.temporal_rows(flat, x.dtype, x.device)[:, None])
        G, L = len(temporal_ids), max(len(ids) for ids in temporal_ids) * N
        k, v = x.new_zeros(G, L, D), x.new_zeros(G, L, D)
        mask = torch.ones(G, L, dtype=torch.bool, device=x.device)
        start = 0
        for g, ids in enumerate(temporal_ids):  # a pack's frames, frame after frame along the keys
            n = len(ids)
            k[g, : n * N] = keys[start : start + n].reshape(n * N, D)
            v[g, : n * N] = kv[start : start + n].reshape(n * N, D)
            mask[g, : n * N] = pad[start : start + n].reshape(n * N)
            start += n
        q = self.ln_q(self.query)[:, None].expand(-1, G, -1)
        out, _ = self.attn(q, k.transpose(0, 1), v.transpose(0, 1), key_padding_mask=mask, need_weights=False)
        return self.ln_post(out.transpose(0, 1)) @ self.proj
