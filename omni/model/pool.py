"""Preallocated key/value pools: one tensor per layer holding every session's cache, one slot each.

Owns: `KVPool` ([slots, heads, tokens, head_dim] per layer, allocated once), `SlotCache` (one LLM
slot with the `KVCache` interface: append, crop for barge-in, drop for the sliding window) and
`TTSSlotCache` (one TTS slot with the `TTSCache` interface: fixed text slots, audio appended).
Because every session's keys sit at the same strides, a decode step of many sessions reads them as
one batch (`rows.forward_rows`) with static shapes. Does not own: which session holds which slot
(the batch engine), model math.

A slot never grows: a write past its end raises `ContextFull`, so callers check `free` first.
Slots are zeroed when (re)opened: attention masks padded positions with weight 0, and 0 x NaN
would still poison the sum, so a slot must never hold uninitialised memory.
"""

from __future__ import annotations

import torch

from .decoder import KVCache
from .tts_state import TTSCache


class ContextFull(ValueError):
    """A cache write that does not fit in the session's slot."""


def _append(cache, layer: int, k: torch.Tensor, v: torch.Tensor):
    """Append k, v [1, H, T, Dh] to a slot view; all keys and values of `layer` so far."""
    n, T = cache._len[layer], k.shape[2]
    if n + T > cache.capacity:
        raise ContextFull(f"{n + T} positions do not fit in a {cache.capacity}-position cache slot")
    cache._k[layer][:, :, n : n + T] = k
    cache._v[layer][:, :, n : n + T] = v
    cache._len[layer] = n + T
    return cache._k[layer][:, :, : n + T], cache._v[layer][:, :, : n + T]


class KVPool:
    """Keys and values of `slots` sessions: per layer k, v [slots, heads, tokens, head_dim]."""

    def __init__(self, layers: int, slots: int, heads: int, head_dim: int, tokens: int, dtype: torch.dtype, device):
        shape = (slots, heads, tokens, head_dim)
        # empty, not zeros: on a CPU untouched pages cost nothing; `reset_slot` zeroes what is used.
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.layers, self.slots, self.heads, self.head_dim, self.tokens = layers, slots, heads, head_dim, tokens

    @staticmethod
    def slot_bytes(layers: int, heads: int, head_dim: int, tokens: int, dtype: torch.dtype) -> int:
        return 2 * layers * heads * tokens * head_dim * torch.empty(0, dtype=dtype).element_size()

    def reset_slot(self, slot: int) -> None:
        for t in self.k + self.v:
            t[slot].zero_()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class SlotCache(KVCache):
    """One `KVPool` slot as a `KVCache`: its per-layer buffers are views [1, H, tokens, Dh]."""

    def __init__(self, pool: KVPool, slot: int):
        super().__init__(pool.layers)
        self.pool, self.slot = pool, slot
        self._k = [k[slot : slot + 1] for k in pool.k]
        self._v = [v[slot : slot + 1] for v in pool.v]

    @property
    def capacity(self) -> int:
        return self.pool.tokens

    @property
    def free(self) -> int:
        return self.capacity - self.seq_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        return _append(self, layer, k, v)

    def reset(self) -> "SlotCache":
        self.pool.reset_slot(self.slot)
        self._len = [0] * self.num_layers
        return self

    def nbytes(self) -> int:
        return self.pool.nbytes() // self.pool.slots


class TTSSlotCache(TTSCache):
    """One `KVPool` slot as a `TTSCache`: `text_slots` fixed text positions, then audio frames."""

    def __init__(self, pool: KVPool, slot: int, text_slots: int):
        assert text_slots < pool.tokens, f"{text_slots} text slots in a {pool.tokens}-position slot"
        self.pool, self.slot, self.text_slots = pool, slot, text_slots
        self._k = [k[slot : slot + 1] for k in pool.k]
        self._v = [v[slot : slot + 1] for v in pool.v]
        self._len = [text_slots] * pool.layers

    @property
    def capacity(self) -> int:
        return self.pool.tokens

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        return _append(self, layer, k, v)

    def reset(self) -> "TTSSlotCache":
        """A fresh segment: text slots zero (as a new `TTSCache`), no audio."""
        for t in self._k + self._v:
            t[:, :, : self.text_slots].zero_()
        self._len = [self.text_slots] * self.pool.layers
        return self
