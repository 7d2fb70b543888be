"""LLM token choice: the official `generate` logits pipeline with transformers' own processors.

Order (as `generate` applies it): repetition penalty over the ids the call sees, then for sampling
temperature -> top-k -> top-p -> softmax -> multinomial; greedy takes the arg-max after the penalty.
The draw itself is ours: each session samples with its own `torch.Generator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import RepetitionPenaltyLogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from . import token_masks


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
    ids = seen_ids.to(logits.device).long()[None]
    # transformers types input_ids as the legacy torch.LongTensor class, which no Tensor is
    return RepetitionPenaltyLogitsProcessor(penalty)(ids, logits[None])[0]  # pyright: ignore[reportArgumentType]


def top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float, min_keep: int = 1) -> torch.Tensor:
    """logits [..., V]: mask (to -inf) all but the top_k, then all outside the top_p nucleus."""
    x = logits.reshape(-1, logits.shape[-1])
    # The warpers ignore input_ids (typed LongTensor by transformers), so None is passed.
    if top_k and top_k > 0:
        x = TopKLogitsWarper(top_k, min_tokens_to_keep=min_keep)(None, x)  # pyright: ignore[reportArgumentType]
    if top_p < 1.0:
        x = TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep)(None, x)  # pyright: ignore[reportArgumentType]
    return x.reshape(logits.shape)


def choose(
    logits: torch.Tensor, seen_ids: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """logits [V] (any dtype) -> next token id."""
    return choose_rows(logits[None], [seen_ids.tolist()], [params], [generator])[0]


def choose_rows(
    logits: torch.Tensor,
    seen: list,
    params: list[SamplingParams],
    generators: list,
    allowed: token_masks.RowMasks | None = None,
) -> list[int]:
    """logits [B, V] -> one next token id per row, each row with its own penalty window, params
    and generator. Every stage is row-wise (mask, penalty, temperature, top-k, top-p, softmax), so
    a row's token does not depend on the other rows: batched sessions draw what they would alone.
    `allowed`: the rows' token masks (omni.token_masks.gather), disallowed tokens never drawn
    (set to -inf in place: float32 `logits` are changed)."""
    B, V = logits.shape
    scores = logits.float()
    if allowed is not None:
        token_masks.apply_(scores, allowed)
    for b in range(B):
        if params[b].repetition_penalty != 1.0 and len(seen[b]):
            scores[b] = repetition_penalty(
                scores[b], torch.as_tensor(seen[b], dtype=torch.long), params[b].repetition_penalty
            )
    out: list = [None] * B
    greedy = [b for b in range(B) if not params[b].do_sample]
    if greedy:
        for b, tok in zip(greedy, scores[greedy].argmax(-1).tolist()):
            out[b] = tok
    groups: dict[tuple, list[int]] = {}
    for b in range(B):
        if params[b].do_sample:
            p = params[b]
            groups.setdefault((p.temperature, p.top_k, p.top_p), []).append(b)
    drawn, draws = [], []
    for (temperature, top_k, top_p), rows in groups.items():
        for j, (probs, ids) in enumerate(_candidates(scores[rows] / temperature, top_k, top_p)):
            b = rows[j]
            drawn.append(b)
            pick = torch.multinomial(probs, 1, generator=generators[b])
            draws.append(pick if ids is None else ids[pick])
    if draws:  # one transfer to the host for every draw
        for b, tok in zip(drawn, torch.cat(draws).tolist()):
            out[b] = tok
    return out


TIE_MARGIN = 16  # candidates past top_k, so values tied with the k-th are kept as TopKLogitsWarper does


def _candidates(scores: torch.Tensor, top_k: int, top_p: float) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """scores [R, V] -> per row (probs [C], vocabulary ids [C], or None when C == V).

    The distribution of softmax(top_k_top_p(scores)) over the whole vocabulary, computed on the
    top_k candidates only: sorting 152k logits per token for top-p cost 6 ms a row on a CPU. The
    draw is torch.multinomial over the candidates (in vocabulary order), so a seed gives other
    tokens than a draw over the whole row would; each row's path depends on that row alone (a row
    whose k-th value ties past the margin takes the whole-vocabulary path), so a batched row draws
    what it draws alone."""
    R, V = scores.shape
    if not top_k or top_k <= 0 or top_k + TIE_MARGIN >= V:
        return [(p, None) for p in top_k_top_p(scores, top_k, top_p).softmax(-1)]
    vals, ids = scores.topk(top_k + TIE_MARGIN, dim=-1)  # descending
    # TopKLogitsWarper: >= the k-th value; a masked (-inf) token has no weight either way, so a row
    # with fewer than top_k allowed tokens keeps them all here without the whole-vocabulary path
    keep = (vals >= vals[:, top_k - 1 : top_k]) & (vals > float("-inf"))
    ids, order = ids.sort(dim=-1)  # back to vocabulary order
    probs = top_k_top_p(torch.where(keep, vals, float("-inf")).gather(-1, order), 0, top_p).softmax(-1)
    out: list[tuple[torch.Tensor, torch.Tensor | None]] = list(zip(probs, ids))
    for r in keep[:, -1].nonzero()[:, 0].tolist():  # ties beyond the margin: rare
        out[r] = (top_k_top_p(scores[r : r + 1], top_k, top_p).softmax(-1)[0], None)
    return out
