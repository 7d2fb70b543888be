"""Golden replay of MiniCPM-V 4.5's processor and vision cases (golden README-v45 §4):
`processor` (3 stills), `vision` (tower + resampler, 2-D path), `video` (packs, 3-D path) and
`video_sliced` (packs with slicing and image ids).

Every size, prompt and id comes from the folder: images by the recorded sizes, frames by the
recorded count, packs by the recorded temporal ids. Does not own: the LLM and chat cases
(v45_chat.py).
"""

from __future__ import annotations

import torch
from PIL import Image

from ..processing import packs
from ..processing import v45_prompt as V
from ..processing.prompt import bounds
from ..processing.tokens import MARK_IMAGE
from ..model.vision import pad_strips
from .harness import GoldenDir, Report


def stills(g: GoldenDir, sizes: list) -> list[Image.Image]:
    out = []
    for k, size in enumerate(sizes):
        im = Image.open(g.path / f"image{k}.png").convert("RGB")
        if list(im.size) != list(size):
            raise ValueError(f"image{k}.png is {im.size}, the case says {size}")
        out.append(im)
    return out


def frames(g: GoldenDir, n: int) -> list[Image.Image]:
    return [Image.open(g.path / f"video_frame{i}.png").convert("RGB") for i in range(n)]


def user_prompt(m, n_images: int, question: str) -> str:
    """The template output of one user message: n image markers, then the question (thinking off)."""
    content = "\n".join([MARK_IMAGE] * n_images + [question])
    return V.render(m.tokenizer, [{"role": "user", "content": content}], thinking=False)


def check_processor(g: GoldenDir, m, r: Report, case: str, images, temporal_ids, max_slice_nums, use_image_id):
    """The processor call of a case -> its items and ids, compared; returns (items, ids, bounds)."""
    rec, want = g.cases[case], g.case(case)
    question = rec["prompt_text"].split(MARK_IMAGE)[-1].split("<|im_end|>")[0].lstrip("\n")
    prompt = user_prompt(m, len(images), question)
    r.equal("prompt_text", prompt, rec["prompt_text"])
    items = packs.process(m.image_processor, images, temporal_ids, max_slice_nums, use_image_id)
    text = packs.expand(rec["prompt_text"], items.placeholders)
    r.equal("expanded_prompt_text", text, rec["expanded_prompt_text"])
    ids = m.tokenizer.encode(text, add_special_tokens=False)
    s = m.ids
    ib = bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
    r.equal("input_ids", torch.tensor([ids]), want["input_ids"])
    r.equal("attention_mask", torch.tensor([[i != 0 for i in ids]]), want["attention_mask"])
    r.equal("image_bound", torch.tensor(ib).reshape(-1, 2), want["image_bound"])
    r.equal("num_slices", len(items.strips), rec["num_slices"])
    r.equal("tgt_sizes", items.tgt_sizes, want["tgt_sizes"])
    for i, strip in enumerate(items.strips):
        r.compare(f"pixel_values.{i}", strip, want[f"pixel_values.{i}"])
    r.equal("temporal_ids", items.temporal_ids, rec["temporal_ids"])
    return items, ids, ib


def processor(g: GoldenDir, m, r: Report) -> None:
    rec = g.cases["processor"]
    images = stills(g, rec["image_sizes"])
    check_processor(g, m, r, "processor", images, None, None, None)
    items = packs.process(m.image_processor, images)
    for k, im in enumerate(images):
        grid = m.image_processor.grid(im.size)
        r.equal(f"image{k}.grid", list(grid or []), list(rec[f"image{k}.grid"] or []))
        r.equal(f"image{k}.placeholder", items.placeholders[k], rec[f"image{k}.placeholder"])
        n = len(m.image_processor.slices(im))
        r.equal(f"image{k}.num_slices", n, rec[f"image{k}.num_slices"])


def _tower(g: GoldenDir, m, r: Report, case: str, items: packs.Items, ids, ib, temporal_ids) -> None:
    """The padded batch through the tower, the resampler, and the scatter into the prompt."""
    want = g.case(case)
    pixel_values, mask = pad_strips(items.strips)
    r.compare("vpm_input.pixel_values", pixel_values, want["vpm_input.pixel_values"])
    r.equal("vpm_input.patch_attention_mask", mask, want["vpm_input.patch_attention_mask"])
    net = m.net
    with torch.inference_mode():
        r.compare(
            "vpm_embeddings_output", net.vpm.embeddings(pixel_values, items.tgt_sizes), want["vpm_embeddings_output"]
        )
        from ..model.vision import encode_slices

        hidden = encode_slices(net.vpm, items.strips, items.tgt_sizes, m.config.vision_batch_size)
        r.compare("vpm_output.last_hidden_state", hidden, want["vpm_output.last_hidden_state"])
        out = net.resampler(hidden, items.tgt_sizes, temporal_ids)
        r.compare("resampler_output", out, want["resampler_output"])
        emb = net.embed(torch.tensor([ids]), ib, out)
        r.compare("inputs_embeds", emb, want["inputs_embeds"])
        if "temporal_pos_embed_rows" in want:
            flat = [t for group in g.cases[case]["temporal_ids"] for t in group]
            rows = net.resampler.temporal_rows(flat, torch.float32, "cpu")
            r.compare("temporal_pos_embed_rows", rows, want["temporal_pos_embed_rows"])
        if temporal_ids is None and g.cases[case].get("same_with_processor_temporal_ids_minus1"):
            again = net.resampler(hidden, items.tgt_sizes, items.temporal_ids)
            r.equal("same_with_processor_temporal_ids_minus1", bool(torch.equal(again, out)), True)


def vision(g: GoldenDir, m, r: Report) -> None:
    rec = g.cases["processor"]
    images = stills(g, rec["image_sizes"])
    r.case_name = "vision"
    items, ids, ib = check_processor(g, m, Report(), "processor", images, None, None, None)
    _tower(g, m, r, "vision", items, ids, ib, None)


def video(g: GoldenDir, m, r: Report) -> None:
    rec = g.cases["video"]
    ids_in = rec["temporal_ids_in"]
    vid = frames(g, sum(len(p) for p in ids_in))
    items, ids, ib = check_processor(g, m, r, "video", vid, ids_in, 1, False)
    r.equal("num_packs", len(items.temporal_ids), rec["num_packs"])
    _tower(g, m, r, "video", items, ids, ib, items.temporal_ids)


def video_sliced(g: GoldenDir, m, r: Report) -> None:
    rec = g.cases["video_sliced"]
    ids_in = rec["temporal_ids_in"]
    vid = frames(g, sum(len(p) for p in ids_in))
    items, ids, ib = check_processor(g, m, r, "video_sliced", vid, ids_in, None, None)
    r.equal("grid", list(m.image_processor.grid(vid[0].size) or []), list(rec["grid"] or []))
    _tower(g, m, r, "video_sliced", items, ids, ib, items.temporal_ids)
