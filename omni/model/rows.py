"""Packed forward of many sessions' new positions through one `DecoderModel` (LLM or TTS backbone).

Owns: `Row` (one session's new positions: where they go in its cache and what they attend to) and
`forward_rows`, the ragged batch forward: every linear layer runs once over all rows' positions
packed as [N, D]; attention runs per row over its own cache, except rows that add one position to
a slot of a shared `KVPool` (decode steps), which run as one batched attention over the pool:
keys gathered [B, H, L, Dh] (L = longest row), padded positions masked. A step of decode rows only
is `decode_forward`, on device tensors of static shape (`Decode`), which omni.model.graphs
captures as a CUDA graph. Does not own: caches,
sampling, what a row means (the step executors in omni.model.steps).

A single row takes the per-row path, which is exactly the math of `DecoderModel.forward`; the
batched path differs from it only by float rounding (different GEMM and attention blocking).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, TypeGuard, cast

import torch
import torch.nn.functional as F

from .decoder import MLP, Attention, DecoderLayer, DecoderModel, KVCache, apply_rope, causal_mask, rope_cos_sin

if TYPE_CHECKING:
    from .pool import KVPool
    from .tts_state import TTSCache


@dataclass
class Row:
    """One session's `n` new positions start..start+n-1 (rotary positions and cache indices)."""

    cache: KVCache | TTSCache  # or their pool slots (pool.py), which enable the batched decode path
    n: int
    start: int
    append: bool = True  # False: write into fixed text slots [start, start+n) (TTS prefill)
    mask: torch.Tensor | None = None  # None: causal; else bool [start+n], one row for all n queries


@dataclass
class Decode:
    """One-position rows of sessions in one `KVPool`, as tensors: the batched decode step. Shapes
    depend only on (B, L), so a CUDA graph can capture `decode_forward` (omni.model.graphs)."""

    pool: KVPool
    slots: torch.Tensor  # [B] long
    positions: torch.Tensor  # [B] long: where each row's new key goes (its rotary position too)
    mask: torch.Tensor  # bool [B, 1, 1, L]: the keys each row attends to
    first_slot: int | None = None  # eager only: slots are first_slot.. in order, read the pool as a view


class PoolSlot(Protocol):
    """A cache that is one slot of a `KVPool`: pool.SlotCache, pool.TTSSlotCache."""

    pool: KVPool
    slot: int


DecodeStep = Callable[[torch.Tensor, "list[Row]"], torch.Tensor]


def linear(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`m(x)` for x [M, in]; on a CPU in float32 with 2..64 rows as W @ x.T: MKL's skinny sgemm is
    1.3-1.5x faster that way round (M=16: 148 vs 220 ms for the full-size LM head, 17 vs 23 ms for
    an MLP projection). Alone (M=1), on a GPU and for a quantized linear it is the module's own call."""
    if (
        not isinstance(m, torch.nn.Linear)
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or not 2 <= x.shape[0] <= 64
    ):
        return m(x)
    y = (m.weight @ x.T).T.contiguous()
    return y if m.bias is None else y + m.bias


def _in_pool(cache: object) -> TypeGuard[PoolSlot]:
    return hasattr(cache, "pool")


def is_decode(row: Row) -> bool:
    return row.n == 1 and row.append and _in_pool(row.cache)


def pool_slot(row: Row) -> PoolSlot:
    """The pool slot a decode row (`is_decode`) writes to."""
    cache = row.cache
    assert row.n == 1 and row.append and _in_pool(cache), "not a decode row"
    return cache


def decode_plan(rows: list[Row], device, length: int | None = None) -> Decode:
    """The `Decode` of one-position rows on one pool; `length`: keys read (default the longest row)."""
    caches = [pool_slot(r) for r in rows]
    assert len({id(c.pool) for c in caches}) == 1
    L = length or max(r.start for r in rows) + 1
    # callers check room
    assert all(r.start < c.pool.tokens for r, c in zip(rows, caches)), "a decode row past its pool slot"
    mask = torch.zeros(len(rows), L, dtype=torch.bool)
    for b, r in enumerate(rows):
        mask[b, : r.start + 1] = True if r.mask is None else r.mask.cpu()
    slots = [c.slot for c in caches]
    contiguous = slots == list(range(slots[0], slots[0] + len(slots)))
    t = lambda xs: torch.tensor(xs, device=device)  # noqa: E731
    return Decode(
        caches[0].pool,
        t(slots),
        t([r.start for r in rows]),
        mask.to(device)[:, None, None],
        slots[0] if contiguous else None,
    )


def pool_attention(a: Attention, li: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: Decode) -> torch.Tensor:
    """q [B, H, Dh], k, v [B, Hkv, Dh]: write k, v at each row's slot and position, attend over the
    first L positions of each row's slot (gathered [B, Hkv, L, Dh], padding masked) -> [B, H, Dh]."""
    K, V = d.pool.k[li], d.pool.v[li]  # [S, Hkv, T, Dh]
    K[d.slots, :, d.positions] = k
    V[d.slots, :, d.positions] = v
    L = d.mask.shape[-1]
    if d.first_slot is not None:
        s0, s1 = d.first_slot, d.first_slot + q.shape[0]
        kk, vv = K[s0:s1, :, :L], V[s0:s1, :, :L]  # views
    else:
        kk, vv = K[d.slots, :, :L], V[d.slots, :, :L]  # gathered copies
    return F.scaled_dot_product_attention(q[:, :, None], kk, vv, attn_mask=d.mask, enable_gqa=a.kv_heads != a.heads)[
        :, :, 0
    ]


def decode_forward(model: DecoderModel, x: torch.Tensor, d: Decode) -> torch.Tensor:
    """x [B, D] one new position per row -> final hidden [B, D]; keys/values land in the pool.
    Device tensors only, no host sync: the step a CUDA graph captures."""
    B = x.shape[0]
    cos, sin = rope_cos_sin(d.positions[None], model.inv_freq, x.dtype)
    cos, sin = cos[0, 0][:, None], sin[0, 0][:, None]  # [B, 1, Dh]
    h = x
    for li, layer in enumerate(_layers(model)):
        a = layer.self_attn
        y = layer.input_layernorm(h)
        q, k = a.norm_qk(
            linear(a.q_proj, y).view(B, a.heads, a.head_dim), linear(a.k_proj, y).view(B, a.kv_heads, a.head_dim)
        )
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        v = linear(a.v_proj, y).view(B, a.kv_heads, a.head_dim)
        h = h + linear(a.o_proj, pool_attention(a, li, q, k, v, d).reshape(B, -1))
        h = h + _mlp(layer.mlp, layer.post_attention_layernorm(h))
    return model.norm(h)


def forward_rows(
    model: DecoderModel, x: torch.Tensor, rows: list[Row], decode_step: DecodeStep | None = None
) -> torch.Tensor:
    """x [N, D] (rows' new positions, concatenated in order) -> final hidden after `norm` [N, D].

    Writes every row's keys/values into its cache (appended, or at its text slots). Two or more
    one-position rows on one pool are batched; when every row is one, `decode_step(x, rows)` runs
    the step instead of `decode_forward` if given (CUDA graphs; also for a single row).
    """
    N, D = x.shape
    assert sum(r.n for r in rows) == N, f"{N} positions for rows of {[r.n for r in rows]}"
    decoding = [i for i, r in enumerate(rows) if is_decode(r)]
    pools = {id(pool_slot(rows[i]).pool) for i in decoding}
    batched = decoding if len(decoding) >= 2 and len(pools) == 1 else []
    if len(decoding) == len(rows) and len(pools) == 1 and (batched or decode_step is not None):
        h = decode_step(x, rows) if decode_step is not None else decode_forward(model, x, decode_plan(rows, x.device))
        for r in rows:
            r.cache._len = [r.start + 1] * len(r.cache._len)
        return h
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + r.n)
    positions = torch.cat([torch.arange(r.start, r.start + r.n) for r in rows]).to(x.device)
    cos, sin = rope_cos_sin(positions[None], model.inv_freq, x.dtype)  # [1, 1, N, Dh]
    cos, sin = cos[0, 0][:, None], sin[0, 0][:, None]  # [N, 1, Dh]
    d = decode_plan([rows[i] for i in batched], x.device) if batched else None
    idx = torch.tensor([offsets[i] for i in batched], device=x.device) if batched else None
    single = [(r, slice(offsets[i], offsets[i + 1])) for i, r in enumerate(rows) if i not in set(batched)]
    h = x
    for li, layer in enumerate(_layers(model)):
        h = h + _attention(layer.self_attn, layer.input_layernorm(h), cos, sin, li, d, idx, single)
        h = h + _mlp(layer.mlp, layer.post_attention_layernorm(h))
    for i in batched:
        rows[i].cache._len = [rows[i].start + 1] * len(rows[i].cache._len)
    return model.norm(h)


def _layers(model: DecoderModel) -> Iterable[DecoderLayer]:
    return cast("Iterable[DecoderLayer]", model.layers)  # nn.ModuleList's stubs type its items as Module


def _attention(
    a: Attention, h: torch.Tensor, cos, sin, li: int, d: Decode | None, idx, single: list[tuple[Row, slice]]
) -> torch.Tensor:
    N = h.shape[0]
    q, k = a.norm_qk(
        linear(a.q_proj, h).view(N, a.heads, a.head_dim), linear(a.k_proj, h).view(N, a.kv_heads, a.head_dim)
    )
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    v = linear(a.v_proj, h).view(N, a.kv_heads, a.head_dim)
    gqa = a.kv_heads != a.heads
    out = q.new_empty(N, a.heads, a.head_dim)
    if d is not None:
        out[idx] = pool_attention(a, li, q[idx], k[idx], v[idx], d)
    for r, s in single:
        kr, vr = k[s].transpose(0, 1)[None], v[s].transpose(0, 1)[None]  # [1, Hkv, n, Dh]
        if r.append:
            cache = r.cache
        else:  # only TTS text prefills write at fixed slots
            assert not isinstance(r.cache, KVCache), "a row at fixed slots needs a TTSCache"
            cache = r.cache.at_slot(r.start)
        kr, vr = cache.update(li, kr, vr)
        mask = causal_mask(r.n, r.start, h.device) if r.mask is None else r.mask.to(h.device)[None, None, None]
        o = F.scaled_dot_product_attention(q[s].transpose(0, 1)[None], kr, vr, attn_mask=mask, enable_gqa=gqa)
        out[s] = o[0].transpose(0, 1)
    return linear(a.o_proj, out.reshape(N, -1))


def _mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    return linear(mlp.down_proj, F.silu(linear(mlp.gate_proj, x)) * linear(mlp.up_proj, x))
