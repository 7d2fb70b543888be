"""Vision path: pure slicing/layout functions first, then the tiny-model golden replay."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from omni.config import OmniConfig, PreprocessorConfig, VisionConfig
from omni.golden.harness import GoldenDir, Report, format_row
from omni.model.resampler import Resampler, sincos_2d
from omni.model.vision import SiglipVisionTransformer, encode_slices, pad_strips, position_ids
from omni.processing.image import (
    ImageProcessor,
    ensure_divide,
    find_best_resize,
    from_strip,
    get_refine_size,
    get_sliced_grid,
    image_placeholder,
    slice_image,
    to_strip,
)

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(os.environ.get("OMNI_GOLDEN_DIR", REPO / "tests/assets/golden/tiny-a"))


@pytest.mark.parametrize(
    "length,patch,want",
    [(0, 14, 14), (6, 14, 14), (21, 14, 28), (22, 14, 28), (448, 14, 448), (150, 3, 150), (100, 3, 99)],
)
def test_ensure_divide(length, patch, want):
    assert ensure_divide(length, patch) == want


@pytest.mark.parametrize(
    "size,upscale,want",
    [
        ((1344, 1344), False, (448, 448)),  # larger than S²: scaled down to S² area
        ((300, 200), False, (294, 196)),  # small, no upscale: only rounded to patch multiples
        ((300, 200), True, (546, 364)),  # h = int(448/√1.5) = 365, w = int(365·1.5) = 547
    ],
)
def test_find_best_resize(size, upscale, want):
    assert find_best_resize(size, 448, 14, allow_upscale=upscale) == want


@pytest.mark.parametrize(
    "size,max_slices,want",
    [
        ((1344, 1344), 9, (3, 3)),
        ((448, 448), 9, None),  # area ≤ S²: not sliced
        ((300, 200), 9, None),
        ((1344, 1344), 1, None),  # max_slice_nums=1 never slices
        ((600, 600), 9, (1, 2)),  # multiple 2: [1,2] and [2,1] tie, the first (fewer cols) wins
        ((2000, 300), 9, (4, 1)),  # multiple 3, candidates 2..4: widest grid is closest in log ratio
        ((300, 2000), 9, (1, 4)),
        ((1344, 896), 9, (3, 2)),  # multiple 6, exact ratio 1.5
    ],
)
def test_get_sliced_grid(size, max_slices, want):
    assert get_sliced_grid(size, max_slices, 448) == want


def test_get_refine_size():
    assert get_refine_size((1344, 1344), (3, 3), 448, 14) == (1344, 1344)
    assert get_refine_size((1344, 896), (3, 2), 448, 14) == (1344, 896)


def test_1344_square_gives_640_tokens():
    cfg = PreprocessorConfig(max_slice_nums=9, scale_resolution=448, patch_size=14, image_feature_size=64)
    text = ImageProcessor(cfg).placeholder((1344, 1344), use_image_id=False)
    assert text.count("<unk>") == 640
    assert text.count("<slice>") == 9 and text.count("\n") == 2


def test_slice_image_crops_row_major():
    rng = np.random.default_rng(0)
    # 168² at S=56: 3×3 grid of 56² cells, the refined image keeps the size.
    image = Image.fromarray(rng.integers(0, 256, (168, 168, 3), dtype=np.uint8))
    pieces, grid = slice_image(image, 9, 56, 14)
    assert grid == (3, 3) and len(pieces) == 10
    assert pieces[0].size == (56, 56)
    src = np.asarray(image.resize((168, 168), resample=Image.Resampling.BICUBIC))
    for k, crop in enumerate(pieces[1:]):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(np.asarray(crop), src[r * 56 : (r + 1) * 56, c * 56 : (c + 1) * 56])


def test_unsliced_image_is_upscaled():
    pieces, grid = slice_image(Image.new("RGB", (30, 20)), 9, 56, 14)
    assert grid is None and [p.size for p in pieces] == [find_best_resize((30, 20), 56, 14, True)]


def test_placeholder_strings():
    one = "<image>" + "<unk>" * 2 + "</image>"
    cell = "<slice>" + "<unk>" * 2 + "</slice>"
    assert image_placeholder(2, None, None) == one
    assert image_placeholder(2, None, 3) == "<image_id>3</image_id>" + one
    assert image_placeholder(2, (3, 2), 0) == ("<image_id>0</image_id>" + one + cell * 3 + "\n" + cell * 3)
    assert image_placeholder(2, (1, 2), None) == one + cell + "\n" + cell


def test_strip_layout_round_trip():
    P, hp, wp = 4, 2, 3
    image = torch.arange(3 * hp * P * wp * P, dtype=torch.float32).reshape(3, hp * P, wp * P)
    strip = to_strip(image, P)
    assert strip.shape == (3, P, P * hp * wp)
    for n in range(hp * wp):
        r, q = divmod(n, wp)
        assert torch.equal(strip[:, :, n * P : (n + 1) * P], image[:, r * P : (r + 1) * P, q * P : (q + 1) * P])
    assert torch.equal(from_strip(strip, (hp, wp)), image)


def test_processor_tgt_sizes_match_strips():
    cfg = PreprocessorConfig(scale_resolution=56, image_feature_size=4)
    strips, tgt, texts = ImageProcessor(cfg).process([Image.new("RGB", (150, 100))], use_image_id=False)
    assert len(strips) == 7 and tgt.shape == (7, 2) and tgt.dtype == torch.long
    for s, (h, w) in zip(strips, tgt.tolist()):
        assert s.shape == (3, 14, 14 * h * w)
    assert texts[0].startswith("<image>") and texts[0].count("<slice>") == 6
    one, _, _ = ImageProcessor(cfg).process([Image.new("RGB", (150, 100))], max_slice_nums=1)
    assert len(one) == 1


def test_position_id_bucketing():
    ids = position_ids(torch.tensor([[2, 2], [10, 10], [1, 3]]), 10, 100)
    assert ids[0, :4].tolist() == [0, 5, 50, 55] and ids[0, 4:].eq(0).all()
    assert torch.equal(ids[1], torch.arange(100))  # full grid: identity
    assert ids[2, :3].tolist() == [0, 3, 6] and ids[2, 3:].eq(0).all()  # 1/3 → bucket 3, 2/3 → 6


def test_pad_strips():
    strips = [torch.ones(3, 2, 2 * n) for n in (3, 5)]
    pv, mask = pad_strips(strips)
    assert pv.shape == (2, 3, 2, 10) and pv[0, :, :, 6:].eq(0).all()
    assert mask.tolist() == [[[True] * 3 + [False] * 2], [[True] * 5]]


def test_resampler_pos_embed_layout():
    D = 8
    pe = sincos_2d(D, 2, 3)
    omega = 1.0 / 10000 ** (np.arange(D // 4) / (D / 4))
    for r in range(2):
        for c in range(3):
            want = np.concatenate([np.sin(c * omega), np.cos(c * omega), np.sin(r * omega), np.cos(r * omega)])
            np.testing.assert_allclose(pe[r, c], want, rtol=1e-6, atol=1e-6)
    torch.manual_seed(0)
    small = Resampler(num_queries=2, embed_dim=D, num_heads=1, kv_dim=4, max_size=(2, 2))
    big = Resampler(num_queries=2, embed_dim=D, num_heads=1, kv_dim=4, max_size=(3, 4))
    big.load_state_dict(small.state_dict())
    assert "pos_embed" not in small.state_dict()
    x = torch.randn(1, 12, 4)
    with torch.inference_mode():  # a slice over the table: the same result, the table kept as it was
        torch.testing.assert_close(small(x, torch.tensor([[3, 4]])), big(x, torch.tensor([[3, 4]])))
    assert tuple(small.pos_embed.shape) == (2, 2, D)
    np.testing.assert_allclose(big.pos_embed.numpy(), sincos_2d(D, 3, 4))


def test_encode_slices_chunking_matches_one_batch():
    torch.manual_seed(0)
    cfg = VisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14
    )
    vpm = SiglipVisionTransformer(cfg).eval()
    sizes = torch.tensor([[1, 2], [2, 2], [1, 1]])
    strips = [torch.randn(3, 14, 14 * h * w) for h, w in sizes.tolist()]
    with torch.inference_mode():
        whole = encode_slices(vpm, strips, sizes, batch_size=16)
        chunked = encode_slices(vpm, strips, sizes, batch_size=2)
    assert whole.shape == (3, 4, 16)
    torch.testing.assert_close(chunked, whole)


def _load_models(g: GoldenDir):
    cfg = OmniConfig.from_file(g.path / "config.json")
    sd = load_file(str(g.checkpoint_dir() / "model.safetensors"))
    vpm = SiglipVisionTransformer(cfg.vision, cfg.drop_vision_last_layer)
    vpm.load_state_dict({k[len("vpm.") :]: v.float() for k, v in sd.items() if k.startswith("vpm.")}, strict=True)
    resampler = Resampler(cfg.query_num, cfg.hidden_size, cfg.resampler_heads, cfg.vision.hidden_size)
    resampler.load_state_dict(
        {k[len("resampler.") :]: v.float() for k, v in sd.items() if k.startswith("resampler.")}, strict=True
    )
    return vpm.float().eval(), resampler.float().eval()


def test_golden_vision():
    if not (GOLDEN / "cases.json").is_file():
        pytest.fail(f"no golden folder at {GOLDEN} (set OMNI_GOLDEN_DIR)")
    from omni.golden.vision import check

    g = GoldenDir(GOLDEN)
    vpm, resampler = _load_models(g)
    processor = ImageProcessor(PreprocessorConfig.from_file(g.path / "preprocessor_config.json"))
    report = Report()
    check(g, vpm, resampler, processor, report)
    failed = [format_row(r) for r in report.rows if not r.passed]
    assert report.rows and not failed, "\n".join(failed)
