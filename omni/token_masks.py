"""Per-row token masks in a batched draw: a general seam between whoever constrains a session's
next token (a grammar, a banned token) and the sampler, which stays row-wise.

A row's `TokenMask` writes its allowed tokens as bits (int32 [ceil(V/32)], bit t of word t//32
set = token t allowed). `gather` collects the rows' masks once per batched step into one tensor,
on the logits' device: on CUDA from pinned memory with a non-blocking copy, so no host sync is
added (the masks are computed on the CPU while the forward runs); `apply` unpacks it there and
sets the disallowed logits to -inf. A batch without masks costs nothing.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
import torch


class TokenMask(Protocol):
    def fill(self, out: np.ndarray) -> None:
        """Write this row's allowed-token bits into `out` (int32 [ceil(V/32)])."""
        ...


def words(vocab: int) -> int:
    return (vocab + 31) // 32


def gather(masks: Sequence[TokenMask | None], vocab: int, device: torch.device) -> torch.Tensor | None:
    """The rows' masks as an int32 [B, ceil(V/32)] tensor on `device` (all bits set where a row
    has none), or None when no row has one."""
    if all(m is None for m in masks):
        return None
    pin = device.type == "cuda"
    host = torch.full((len(masks), words(vocab)), -1, dtype=torch.int32, pin_memory=pin)
    view = host.numpy()
    for b, m in enumerate(masks):
        if m is not None:
            m.fill(view[b])
    return host.to(device, non_blocking=pin)


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def apply(scores: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """scores [B, V] with every token whose bit is clear in `bits` [B, ceil(V/32)] set to -inf."""
    shifts = _SHIFTS.get(bits.device)
    if shifts is None:
        shifts = _SHIFTS[bits.device] = torch.arange(32, dtype=torch.int32, device=bits.device)
    allowed = ((bits[:, :, None] >> shifts) & 1).bool().reshape(bits.shape[0], -1)[:, : scores.shape[1]]
    return scores.masked_fill(~allowed, float("-inf"))
