"""MiniCPM-V 4.5's image processor call: still images and video packs -> vision items and text.

Owns: the official `MiniCPMVImageProcessor` / `MiniCPMVProcessor` behaviour of version 4.5 with
`temporal_ids` (golden README-v45 §5): the frames of a pack share one placeholder (the first
frame's; the others get none and the text before them is `.strip()`ped), a pack's pixel items are
ordered slice-major (for each slice index, that slice of every frame), and each (pack, slice index)
is one resampler output carrying the pack's time ids. Still images are groups of one with id -1.
Does not own: slicing and placeholder strings (omni.processing.image), prompt templates
(v45_prompt), which frames form a pack (omni.processing.video).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from .image import ImageProcessor, normalize, to_strip
from .tokens import MARK_IMAGE

MAX_PACK = 6  # the resampler was trained on packs of at most 6 frames (MAX_NUM_PACKING)


@dataclass
class Items:
    """Vision items of one request, in the order the tower and the resampler take them."""

    strips: list[torch.Tensor]  # (3, P, P*N_i) per item
    tgt_sizes: torch.Tensor  # [n_items, 2] (patch rows, cols)
    placeholders: list[str]  # one per image/frame, "" for a frame after the first of its pack
    temporal_ids: list[list[int]]  # one id list per resampler output (covering the items in order)


def process(
    ip: ImageProcessor,
    images: Sequence[Image.Image],
    temporal_ids: Sequence[Sequence[int]] | None = None,
    max_slice_nums: int | None = None,
    use_image_id: bool | None = None,
) -> Items:
    """`images` (stills, or frames whose packs `temporal_ids` gives: one list of frame time ids
    per pack, covering the frames in order) -> `Items`."""
    if temporal_ids is None:
        packs = [[-1] for _ in images]
    else:
        packs = [[int(t) for t in ids] for ids in temporal_ids]
        if any(not ids for ids in packs) or sum(len(ids) for ids in packs) != len(images):
            raise ValueError(f"temporal ids {packs} do not cover the {len(images)} frames in order")
    use_id = ip.cfg.use_image_id if use_image_id is None else bool(use_image_id)
    P = ip.cfg.patch_size
    strips, sizes, texts, groups = [], [], [], []
    first = 0
    for ids in packs:
        frames = [im.convert("RGB") for im in images[first : first + len(ids)]]
        if len({f.size for f in frames}) != 1:
            raise ValueError(f"the frames of a pack must have one size, got {sorted({f.size for f in frames})}")
        pieces = [ip.slices(f, max_slice_nums) for f in frames]
        for s in range(len(pieces[0])):  # slice-major: slice s of every frame of the pack
            for frame_pieces in pieces:
                x = torch.from_numpy(normalize(frame_pieces[s], ip.cfg.norm_mean, ip.cfg.norm_std))
                strips.append(to_strip(x, P))
                sizes.append((x.shape[1] // P, x.shape[2] // P))
            groups.append(list(ids))
        # The placeholder of a pack is its first frame's; the image id counts every frame.
        texts.append(ip.placeholder(frames[0].size, first, max_slice_nums, use_id))
        texts += [""] * (len(ids) - 1)
        first += len(ids)
    tgt_sizes = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
    return Items(strips, tgt_sizes, texts, groups)


def expand(text: str, placeholders: Sequence[str]) -> str:
    """Replace the k-th image marker by placeholders[k]; before an empty one (a packed frame) the
    text chunk is stripped, as the official processor does (the "\\n" between frames vanish)."""
    chunks = text.split(MARK_IMAGE)
    if len(chunks) - 1 != len(placeholders):
        raise ValueError(f"{len(chunks) - 1} {MARK_IMAGE} markers but {len(placeholders)} images")
    out = [chunk.strip() if ph == "" else chunk for chunk, ph in zip(chunks, placeholders)]
    return "".join(c + ph for c, ph in zip(out, placeholders)) + chunks[-1]
