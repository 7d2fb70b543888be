"""Offline chat for MiniCPM-V 4.5: messages (text, PIL images, video packs) -> text, whole or streamed.

The official `chat()` path (golden README-v45 §4-5), on the model alone (no batch engine): the
Qwen3 template with the thinking switch, images and packs through the version-4.5 processor (no
BOS), one LLM prefill, then token-by-token decoding. Two quirks of the reference are kept because
they change the ids: the non-stream path masks every prompt token 0 (`!`) as a key and numbers
positions by the mask's cumulative sum; the stream path does neither. `preset` gives the official
`chat()` generation presets. Does not own: sessions (omni.session), the model's math.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .loader import Omni
from .processing import packs
from .processing import v45_prompt as V
from .processing.prompt import bounds
from .sampling import GREEDY, SamplingParams, choose

# The LLM's generation config is built from config.json (bos/eos only): transformers' defaults.
LLM_DEFAULTS = {"do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}


def preset(sampling: bool, thinking: bool, **overrides) -> SamplingParams:
    """The official `chat()` settings: sampling -> temperature 0.7 (fast mode also top_p 0.8,
    top_k 100, repetition penalty 1.03); not sampling -> beam search (3 beams, penalty 1.2).
    `overrides` replace only keys already in the preset, as the official code does."""
    if sampling:
        cfg: dict = {"temperature": 0.7, "do_sample": True}
        if not thinking:
            cfg.update(top_p=0.8, top_k=100, repetition_penalty=1.03)
    else:
        cfg = {"num_beams": 3, "repetition_penalty": 1.2}
    cfg.update({k: v for k, v in overrides.items() if k in cfg})
    if cfg.pop("num_beams", 1) != 1:
        raise ValueError("beam search (the official sampling=False default) is not implemented: pass num_beams=1")
    return SamplingParams(**{**LLM_DEFAULTS, **cfg})


@dataclass
class Prepared:
    prompt: str  # the template's output
    text: str  # after placeholder expansion
    input_ids: torch.Tensor  # [1, L]
    image_bounds: list[tuple[int, int]]
    items: packs.Items | None


def prepare(
    m: Omni,
    msgs: Sequence[dict],
    system_prompt: str = "",
    thinking: bool = False,
    temporal_ids: Sequence[Sequence[int]] | None = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
) -> Prepared:
    if m.family.prompt != "qwen3" or m.family.processor != "packs":
        raise ValueError(f"{m.family.title} is not a MiniCPM-V 4.5 checkpoint: use omni.chat")
    col = V.collect(msgs, system_prompt)
    prompt = V.render(m.tokenizer, col.messages, thinking)
    if temporal_ids is not None and not col.images:
        raise ValueError("temporal ids without video frames")
    items = None
    if col.images:
        items = packs.process(m.image_processor, col.images, temporal_ids, max_slice_nums, use_image_id)
    text = packs.expand(prompt, items.placeholders if items else [])
    ids = m.tokenizer.encode(text, add_special_tokens=False)[: V.MAX_INPUT_TOKENS]
    s = m.ids
    try:
        image_bounds = bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
    except ValueError:
        raise ValueError(f"the prompt is cut at {V.MAX_INPUT_TOKENS} tokens inside an image: fewer frames") from None
    return Prepared(prompt, text, torch.tensor([ids]), image_bounds, items)


@torch.inference_mode()
def embed(m: Omni, p: Prepared) -> torch.Tensor:
    vision = None
    if p.items is not None:
        it = p.items
        vision = m.net.vision_features(it.strips, it.tgt_sizes, it.temporal_ids)[: len(p.image_bounds)]
    return m.net.embed(p.input_ids.to(m.device), p.image_bounds, vision)


@dataclass
class Step:
    token: int
    logits: torch.Tensor  # [V] the logits it was chosen from


@torch.inference_mode()
def decode(
    m: Omni,
    p: Prepared,
    max_new_tokens: int,
    sampling: SamplingParams = GREEDY,
    generator: torch.Generator | None = None,
    pad_mask: bool = True,
) -> Iterator[Step]:
    """Prefill, then one `Step` per new token until a terminator or `max_new_tokens`.
    `pad_mask`: the non-stream path's attention mask (prompt ids 0 masked, positions shifted)."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    llm, dev = m.net.llm, m.device
    ids = p.input_ids[0]
    keep = (ids != 0).to(dev) if pad_mask else torch.ones(len(ids), dtype=torch.bool, device=dev)
    cache = llm.new_cache()
    if bool(keep.all()):
        h = llm.model(embed(m, p), cache=cache)
    else:
        positions = (keep.long().cumsum(0) - 1).masked_fill(~keep, 1)[None]
        mask = torch.ones(len(ids), len(ids), dtype=torch.bool, device=dev).tril() & keep[None]
        mask |= torch.eye(len(ids), dtype=torch.bool, device=dev) & ~mask.any(-1, keepdim=True)  # no empty rows
        h = llm.model(embed(m, p), positions, cache, mask[None, None])
    position, out = int(keep.sum()), []
    logits = llm.lm_head(h[0, -1])
    terminators = V.terminator_ids(m.tokenizer)
    while True:
        # generate() sees inputs_embeds only: the repetition penalty sees the new ids alone.
        tok = choose(logits, torch.tensor(out, dtype=torch.long), sampling, generator)
        out.append(tok)
        yield Step(tok, logits)
        if tok in terminators or len(out) >= max_new_tokens:
            return
        keep = torch.cat([keep, keep.new_ones(1)])
        x = llm.embed(torch.tensor([[tok]], device=dev))
        mask = None if bool(keep.all()) else keep[None, None, None]
        h = llm.model(x, torch.tensor([[position]], device=dev), cache, mask)
        position += 1
        logits = llm.lm_head(h[0, -1])


@dataclass
class ChatResult:
    text: str
    ids: list[int]
    step_logits: torch.Tensor | None = None  # [steps, V] when asked for
    prepared: Prepared | None = field(default=None, repr=False)


def chat(
    m: Omni,
    msgs: Sequence[dict],
    max_new_tokens: int = 512,
    sampling: SamplingParams = GREEDY,
    seed: int | None = None,
    thinking: bool = False,
    system_prompt: str = "",
    temporal_ids: Sequence[Sequence[int]] | None = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
    keep_logits: bool = False,
) -> ChatResult:
    """Answer `msgs` ({"role", "content": [str | PIL.Image]}); video frames come with their packs'
    `temporal_ids` (omni.processing.video), usually with max_slice_nums=1, use_image_id=False."""
    p = prepare(m, msgs, system_prompt, thinking, temporal_ids, max_slice_nums, use_image_id)
    steps = list(decode(m, p, max_new_tokens, sampling, _generator(m, seed)))
    ids = [s.token for s in steps]
    logits = torch.stack([s.logits for s in steps]) if keep_logits else None
    return ChatResult(V.answer(m.tokenizer, ids, thinking), ids, logits, p)


def stream(
    m: Omni,
    msgs: Sequence[dict],
    max_new_tokens: int = 512,
    sampling: SamplingParams = GREEDY,
    seed: int | None = None,
    thinking: bool = False,
    system_prompt: str = "",
    temporal_ids: Sequence[Sequence[int]] | None = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
    ids_out: list[int] | None = None,
) -> Iterator[str]:
    """The official `chat(stream=True)` deltas, empty ones included: `<think>\\n` one character at
    a time (thinking), the streamer's release of the (empty) prompt, then one per token and the
    rest at the end. `ids_out` collects the generated ids."""
    p = prepare(m, msgs, system_prompt, thinking, temporal_ids, max_slice_nums, use_image_id)
    yield from (V.THINK_OPEN if thinking else "")
    deltas = V.TextDeltas(m.tokenizer)
    yield deltas.push([])
    for s in decode(m, p, max_new_tokens, sampling, _generator(m, seed), pad_mask=False):
        if ids_out is not None:
            ids_out.append(s.token)
        yield deltas.push([s.token])
    yield deltas.end()


def _generator(m: Omni, seed: int | None) -> torch.Generator | None:
    return torch.Generator(device=m.device).manual_seed(seed) if seed is not None else None
