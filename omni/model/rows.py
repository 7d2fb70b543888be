"""Packed forward of many sessions' new positions through one `DecoderModel` (LLM or TTS backbone).

Owns: `Row` (one session's new positions: where they go in its cache and what they attend to) and
`forward_rows`, the ragged batch forward: every linear layer runs once over all rows' positions
packed as [N, D]; attention runs per row over its own cache, except rows that add one position to
a slot of a shared `KVPool` (decode steps), which run as one batched attention over the pool:
keys gathered [B, H, L, Dh] (L = longest row), padded positions masked. Does not own: caches,
sampling, what a row means (the step executors in omni.model.steps).

A single row takes the per-row path, which is exactly the math of `DecoderModel.forward`; the
batched path differs from it only by float rounding (different GEMM and attention blocking).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .decoder import Attention, DecoderModel, apply_rope, causal_mask, rope_cos_sin


@dataclass
class Row:
    """One session's `n` new positions start..start+n-1 (rotary positions and cache indices)."""
    cache: object                      # KVCache-like; a pool slot enables the batched decode path
    n: int
    start: int
    append: bool = True                # False: write into fixed text slots [start, start+n) (TTS prefill)
    mask: torch.Tensor | None = None   # None: causal; else bool [start+n], one row for all n queries


@dataclass
class _Decode:
    """The rows that add one position to a shared pool slot, batched: indices into the packed x."""
    rows: list[Row]
    idx: torch.Tensor | None           # [B] positions of these rows in x; None: all of x, in order
    slots: torch.Tensor                # [B]
    starts: torch.Tensor               # [B]
    mask: torch.Tensor                 # bool [B, 1, 1, L]
    length: int                        # L
    first_slot: int | None             # slots are first_slot.. in order: the pool is read as a view


def _is_decode(row: Row) -> bool:
    return row.n == 1 and row.append and hasattr(row.cache, "pool")


def _plan_decode(rows: list[Row], offsets: list[int], device) -> _Decode | None:
    picked = [(i, r) for i, r in enumerate(rows) if _is_decode(r)]
    if len(picked) < 2 or len({id(r.cache.pool) for _, r in picked}) != 1:
        return None
    L = max(r.start for _, r in picked) + 1
    mask = torch.zeros(len(picked), L, dtype=torch.bool)
    for b, (_, r) in enumerate(picked):
        if r.mask is None:
            mask[b, :r.start + 1] = True
        else:
            mask[b, :r.start + 1] = r.mask.cpu()
    t = lambda xs: torch.tensor(xs, device=device)
    slots = [r.cache.slot for _, r in picked]
    contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
    return _Decode([r for _, r in picked], None if len(picked) == len(rows) else t([offsets[i] for i, _ in picked]),
                   t(slots), t([r.start for _, r in picked]), mask.to(device)[:, None, None], L,
                   slots[0] if contiguous else None)


def forward_rows(model: DecoderModel, x: torch.Tensor, rows: list[Row]) -> torch.Tensor:
    """x [N, D] (rows' new positions, concatenated in order) -> final hidden after `norm` [N, D].

    Writes every row's keys/values into its cache (appended, or at its text slots).
    """
    N, D = x.shape
    assert sum(r.n for r in rows) == N, f"{N} positions for rows of {[r.n for r in rows]}"
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + r.n)
    positions = torch.cat([torch.arange(r.start, r.start + r.n) for r in rows]).to(x.device)
    cos, sin = rope_cos_sin(positions[None], model.inv_freq, x.dtype)        # [1, 1, N, Dh]
    cos, sin = cos[0, 0][:, None], sin[0, 0][:, None]                       # [N, 1, Dh]
    decode = _plan_decode(rows, offsets, x.device)
    single = [(r, slice(offsets[i], offsets[i + 1])) for i, r in enumerate(rows)
              if decode is None or not _is_decode(r)]
    h = x
    for li, layer in enumerate(model.layers):
        a = _attention(layer.self_attn, layer.input_layernorm(h), cos, sin, li, decode, single)
        h = h + a
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.norm(h)


def _attention(a: Attention, h: torch.Tensor, cos, sin, li: int, decode: _Decode | None, single) -> torch.Tensor:
    N = h.shape[0]
    q = apply_rope(a.q_proj(h).view(N, a.heads, a.head_dim), cos, sin)
    k = apply_rope(a.k_proj(h).view(N, a.kv_heads, a.head_dim), cos, sin)
    v = a.v_proj(h).view(N, a.kv_heads, a.head_dim)
    gqa = a.kv_heads != a.heads
    out = q.new_empty(N, a.heads, a.head_dim) if decode is None or decode.idx is not None else None
    if decode is not None:
        d = decode
        pool = d.rows[0].cache.pool
        K, V = pool.k[li], pool.v[li]                                       # [S, Hkv, T, Dh]
        pick = (lambda t: t) if d.idx is None else (lambda t: t[d.idx])
        K[d.slots, :, d.starts] = pick(k)
        V[d.slots, :, d.starts] = pick(v)
        if d.first_slot is not None:
            s0, s1 = d.first_slot, d.first_slot + len(d.rows)
            kk, vv = K[s0:s1, :, :d.length], V[s0:s1, :, :d.length]         # [B, Hkv, L, Dh] views
        else:
            kk, vv = K[d.slots, :, :d.length], V[d.slots, :, :d.length]     # gathered copies
        o = F.scaled_dot_product_attention(pick(q)[:, :, None], kk, vv, attn_mask=d.mask, enable_gqa=gqa)[:, :, 0]
        if d.idx is None:
            out = o
        else:
            out[d.idx] = o
        for r in d.rows:
            r.cache._len[li] = r.start + 1
    for r, s in single:
        kr, vr = k[s].transpose(0, 1)[None], v[s].transpose(0, 1)[None]    # [1, Hkv, n, Dh]
        cache = r.cache if r.append else r.cache.at_slot(r.start)
        kr, vr = cache.update(li, kr, vr)
        mask = causal_mask(r.n, r.start, h.device) if r.mask is None else r.mask.to(h.device)[None, None, None]
        o = F.scaled_dot_product_attention(q[s].transpose(0, 1)[None], kr, vr, attn_mask=mask, enable_gqa=gqa)
        out[s] = o[0].transpose(0, 1)
    return a.o_proj(out.reshape(N, -1))
