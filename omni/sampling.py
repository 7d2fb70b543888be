"""LLM token choice: the transformers 4.44 logits pipeline re-done in a few lines.

Order (as `generate` applies it): repetition penalty over the ids the call sees, then for sampling
temperature -> top-k -> top-p -> softmax -> multinomial; greedy takes the arg-max after the penalty.
Hand-written because the official pipeline classes (`LogitsWarper`) are gone from transformers 5.x
and we need a per-session `torch.Generator`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    do_sample: bool = True
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 100
    repetition_penalty: float = 1.05


GREEDY = SamplingParams(do_sample=False, repetition_penalty=1.0)


def repetition_penalty(logits: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits [V]; each id in seen_ids: negative scores x penalty, positive / penalty."""
    if penalty == 1.0 or seen_ids.numel() == 0:
        return logits
    logits = logits.clone()
    ids = seen_ids.to(logits.device).long().unique()
    score = logits[ids]
    logits[ids] = torch.where(score < 0, score * penalty, score / penalty)
    return logits


def top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float, min_keep: int = 1) -> torch.Tensor:
    """Mask (to -inf) all but the top_k logits, then all outside the top_p nucleus (ascending cumsum)."""
    logits = logits.clone()
    if top_k and top_k > 0:
        k = min(max(top_k, min_keep), logits.shape[-1])
        kth = torch.topk(logits, k).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum <= (1 - top_p)
        remove[..., -min_keep:] = False
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def choose(logits: torch.Tensor, seen_ids: torch.Tensor, params: SamplingParams,
           generator: torch.Generator | None) -> int:
    """logits [V] (any dtype) -> next token id."""
    scores = repetition_penalty(logits.float(), seen_ids, params.repetition_penalty)
    if not params.do_sample:
        return int(scores.argmax())
    scores = top_k_top_p(scores / params.temperature, params.top_k, params.top_p)
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
