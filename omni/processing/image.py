"""Image preprocessing: slicing, normalisation, patch strips and placeholder strings (spec §3.1).

Owns: the pure layout functions of the official `MiniCPMVImageProcessor` (resize targets, slice grid
choice, crops, the patch-major "strip" the vision tower consumes, the `<image>`/`<slice>` placeholder
text) and a small `ImageProcessor` that strings them together. Does not own: tokenisation, image
bounds in the prompt, padding strips into a batch (that is `omni.model.vision.pad_strips`).

Sizes are PIL-style (width, height); grids are (cols, rows), as in the official code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from omni.config import PreprocessorConfig

Size = tuple[int, int]
Grid = tuple[int, int]


def ensure_divide(length: float, patch_size: int) -> int:
    """Round `length` to the nearest multiple of `patch_size`, at least one patch."""
    return max(round(length / patch_size) * patch_size, patch_size)


def find_best_resize(
    size: tuple[float, float], scale_resolution: int, patch_size: int, allow_upscale: bool = False
) -> Size:
    """(w, h) with about scale_resolution² area and the same aspect ratio, in patch multiples.

    Only rescales when the image is larger than scale_resolution² or upscaling is allowed;
    otherwise the original size is just rounded to patch multiples.
    """
    width, height = size
    if width * height > scale_resolution * scale_resolution or allow_upscale:
        ratio = width / height
        height = int(scale_resolution / math.sqrt(ratio))
        width = int(height * ratio)
    return ensure_divide(width, patch_size), ensure_divide(height, patch_size)


def get_sliced_grid(size: Size, max_slice_nums: int, scale_resolution: int, never_split: bool = False) -> Grid | None:
    """(cols, rows) of the slice grid, or None when the image is not sliced.

    Candidate slice counts are multiple-1..multiple+1 (without 1 and above max_slice_nums); the grid
    whose aspect ratio is closest in log space wins, first minimum in (count, cols) ascending order.
    """
    width, height = size
    multiple = min(math.ceil(width * height / (scale_resolution * scale_resolution)), max_slice_nums)
    if multiple <= 1 or never_split:
        return None
    counts = [n for n in (multiple - 1, multiple, multiple + 1) if n != 1 and n <= max_slice_nums]
    log_ratio = math.log(width / height)
    best, best_err = None, float("inf")
    for n in counts:
        for cols in range(1, n + 1):
            if n % cols:
                continue
            err = abs(log_ratio - math.log(cols / (n // cols)))
            if err < best_err:  # strict: the first minimum wins, as in the official loop
                best, best_err = (cols, n // cols), err
    return best


def get_refine_size(size: Size, grid: Grid, scale_resolution: int, patch_size: int) -> Size:
    """(w, h) the image is resized to before it is cut into `grid` equal cells."""
    cols, rows = grid
    refine_w, refine_h = ensure_divide(size[0], cols), ensure_divide(size[1], rows)
    cell_w, cell_h = find_best_resize(
        (refine_w / cols, refine_h / rows), scale_resolution, patch_size, allow_upscale=True
    )
    return cell_w * cols, cell_h * rows


def slice_image(
    image: Image.Image, max_slice_nums: int, scale_resolution: int, patch_size: int, never_split: bool = False
) -> tuple[list[Image.Image], Grid | None]:
    """[source, crop(0,0), crop(0,1), ...] (crops row-major, top row first) and the grid.

    Unsliced: only the source, upscaled to about scale_resolution². Sliced: the source is only
    ever downscaled, the crops come from the refined (upscaled) image.
    """
    grid = get_sliced_grid(image.size, max_slice_nums, scale_resolution, never_split)
    if grid is None:
        best = find_best_resize(image.size, scale_resolution, patch_size, allow_upscale=True)
        return [image.resize(best, resample=Image.Resampling.BICUBIC)], None
    best = find_best_resize(image.size, scale_resolution, patch_size, allow_upscale=False)
    source = image.resize(best, resample=Image.Resampling.BICUBIC)
    refine = get_refine_size(image.size, grid, scale_resolution, patch_size)
    refined = image.resize(refine, resample=Image.Resampling.BICUBIC)
    cell_w, cell_h = refine[0] // grid[0], refine[1] // grid[1]
    crops = [
        refined.crop((c * cell_w, r * cell_h, (c + 1) * cell_w, (r + 1) * cell_h))
        for r in range(grid[1])
        for c in range(grid[0])
    ]
    return [source] + crops, grid


def normalize(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """RGB PIL image -> (3, H, W) float32, (x/255 - mean)/std computed in float32 like the reference."""
    x = np.asarray(image.convert("RGB")).astype(np.float32) / 255
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def to_strip(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(3, H, W) -> (3, P, P·N): the P×P patches in raster order laid side by side, N = (H/P)(W/P).

    strip[c, i, n·P + j] = image[c, r·P + i, q·P + j] for patch n = r·(W/P) + q.
    """
    C, H, W = image.shape
    P = patch_size
    assert H % P == 0 and W % P == 0, f"slice {H}x{W} is not a multiple of patch {P}"
    hp, wp = H // P, W // P
    return image.reshape(C, hp, P, wp, P).permute(0, 2, 1, 3, 4).reshape(C, P, hp * wp * P)


def from_strip(strip: torch.Tensor, tgt_size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `to_strip`: (3, P, P·N) and (rows, cols) in patches -> (3, rows·P, cols·P)."""
    C, P, L = strip.shape
    hp, wp = tgt_size
    assert L == hp * wp * P, f"strip length {L} != {hp}*{wp}*{P}"
    return strip.reshape(C, P, hp, wp, P).permute(0, 2, 1, 3, 4).reshape(C, hp * P, wp * P)


def image_placeholder(
    feature_size: int,
    grid: Grid | None,
    image_id: int | None,
    tok: PreprocessorConfig = PreprocessorConfig(),  # noqa: B008 - frozen
) -> str:
    """[<image_id>k</image_id>]<image><unk>×F</image> then the grid of <slice> groups.

    Grid rows are concatenated groups of `cols` slices, rows joined by "\\n"; no newline between
    the image group and the first row (official `get_slice_image_placeholder`).
    """
    text = tok.im_start + tok.unk * feature_size + tok.im_end
    if image_id is not None:
        text = f"{tok.im_id_start}{image_id}{tok.im_id_end}" + text
    if grid is None:
        return text
    one = tok.slice_start + tok.unk * feature_size + tok.slice_end
    return text + "\n".join(one * grid[0] for _ in range(grid[1]))


class ImageProcessor:
    """PIL images -> strips, tgt_sizes and placeholder strings (official `MiniCPMVImageProcessor`)."""

    def __init__(self, cfg: PreprocessorConfig):
        assert cfg.slice_mode, "slice_mode=False is not supported (the official config forces it on)"
        self.cfg = cfg
        self.tokens = cfg  # the token strings are preprocessor_config.json fields

    def grid(self, size: Size, max_slice_nums: int | None = None) -> Grid | None:
        """Slice grid of an image of original `size` (w, h)."""
        n = self.cfg.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        assert n > 0, f"max_slice_nums must be positive, got {n}"
        return get_sliced_grid(size, n, self.cfg.scale_resolution)

    def placeholder(
        self, size: Size, image_idx: int = 0, max_slice_nums: int | None = None, use_image_id: bool | None = None
    ) -> str:
        """Placeholder text of one image; `image_idx` is its 0-based index in the request."""
        use_id = self.cfg.use_image_id if use_image_id is None else bool(use_image_id)
        return image_placeholder(
            self.cfg.image_feature_size, self.grid(size, max_slice_nums), image_idx if use_id else None, self.tokens
        )

    def slices(self, image: Image.Image, max_slice_nums: int | None = None) -> list[Image.Image]:
        """Source + crops of one image, as PIL images."""
        n = self.cfg.max_slice_nums if max_slice_nums is None else int(max_slice_nums)
        assert n > 0, f"max_slice_nums must be positive, got {n}"
        return slice_image(image, n, self.cfg.scale_resolution, self.cfg.patch_size)[0]

    def process(
        self, images: list[Image.Image], max_slice_nums: int | None = None, use_image_id: bool | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor, list[str]]:
        """-> (strips (3, P, P·N_i) over all slices of all images, tgt_sizes [n, 2] (rows, cols),
        one placeholder string per image)."""
        P = self.cfg.patch_size
        strips, sizes, texts = [], [], []
        for k, image in enumerate(images):
            image = image.convert("RGB")
            for piece in self.slices(image, max_slice_nums):
                x = torch.from_numpy(normalize(piece, self.cfg.norm_mean, self.cfg.norm_std))
                strips.append(to_strip(x, P))
                sizes.append((x.shape[1] // P, x.shape[2] // P))
            texts.append(self.placeholder(image.size, k, max_slice_nums, use_image_id))
        tgt_sizes = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
        return strips, tgt_sizes, texts
