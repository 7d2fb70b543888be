"""Golden replay of the `vision` case (golden README §4 `vision.safetensors`).

Owns: re-running the reference's image processor call on the folder's images and the padded
vision-tower + resampler batch, and recording every comparison in a Report. Does not own: the
prompt side of the case (input_ids, image_bound, inputs_embeds), which needs the tokenizer and LLM.
"""

from __future__ import annotations

import torch
from PIL import Image

from omni.config import OmniConfig
from omni.golden.harness import GoldenDir, Report
from omni.model.resampler import Resampler
from omni.model.vision import SiglipVisionTransformer, encode_slices, pad_strips
from omni.processing.image import ImageProcessor


def _load_images(g: GoldenDir, rec: dict) -> list[Image.Image]:
    """image{k}.png for every recorded image size, checked against the recorded (w, h)."""
    images = []
    for k, size in enumerate(rec["image_sizes"]):
        image = Image.open(g.path / f"image{k}.png")
        image.load()
        assert list(image.size) == list(size), f"image{k}.png is {image.size}, case says {size}"
        images.append(image)
    return images


def check(
    g: GoldenDir, vpm: SiglipVisionTransformer, resampler: Resampler, image_processor: ImageProcessor, report: Report
) -> None:
    """Replay: image_processor(images, max_slice_nums=None) with use_image_id=True, then the
    padded batch through vpm (in vision_batch_size chunks) and the resampler."""
    report.case_name = "vision"
    rec, t = g.cases["vision"], g.case("vision")
    cfg = OmniConfig.from_file(g.path / "config.json")
    images = _load_images(g, rec)

    strips, tgt_sizes, texts = image_processor.process(images, max_slice_nums=None, use_image_id=True)
    report.equal("num_slices", len(strips), rec["num_slices"])
    for i, s in enumerate(strips):
        report.compare(f"pixel_values.{i}", s, t[f"pixel_values.{i}"])
    report.equal("tgt_sizes", tgt_sizes, t["tgt_sizes"])
    for k, image in enumerate(images):
        grid = image_processor.grid(image.size)
        # An unsliced image has no grid; compare it as [] on both sides (Report.equal needs a value).
        report.equal(f"image{k}.grid", list(grid or []), list(rec[f"image{k}.grid"] or []))
        report.equal(f"image{k}.placeholder", texts[k], rec[f"image{k}.placeholder"])

    pixel_values, mask = pad_strips(strips)
    report.compare("vpm_input.pixel_values", pixel_values, t["vpm_input.pixel_values"])
    report.equal("vpm_input.patch_attention_mask", mask, t["vpm_input.patch_attention_mask"])

    with torch.inference_mode():
        hidden = encode_slices(vpm, strips, tgt_sizes, cfg.vision_batch_size)
        out = resampler(hidden, tgt_sizes)
    report.compare("vpm_output.last_hidden_state", hidden, t["vpm_output.last_hidden_state"])
    report.compare("resampler_output", out, t["resampler_output"])
