"""Video -> frames and packs for MiniCPM-V 4.5, as the model card's recipe (`encode_video`) does.

Owns: choosing frames (uniform over the clip at `fps` frames per second, at most
MAX_NUM_FRAMES x packing), their time ids on the 0.1-s grid (`map_to_nearest_scale`), grouping them
into packs (`group_array`), and reading the frames of a video file (PyAV) or of a folder of images.
Defaults are the card's example call: 5 frames per second, packs of 1 while the clip fits in
MAX_NUM_FRAMES, else up to MAX_NUM_PACKING (3) frames per pack; `force_packing` (1-6) fixes it.
Does not own: pixel processing (omni.processing.packs), the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_FPS = 5.0  # the model card's example (`fps = 5`)
MAX_NUM_FRAMES = 180  # frames (packs) after packing
MAX_NUM_PACKING = 3  # the card's setting; the resampler takes up to 6 (omni.processing.packs.MAX_PACK)
TIME_SCALE_S = 0.1  # temporal ids count tenths of a second
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class Plan:
    """Which frames of a clip to take and how to pack them."""

    frame_index: np.ndarray  # int, into the clip's frames
    temporal_ids: list[list[int]]  # one list per pack
    packing: int  # frames per pack (the last pack may be shorter)
    duration_s: float


def plan(n_frames: int, fps: float, choose_fps: float = DEFAULT_FPS, force_packing: int | None = None) -> Plan:
    """The card's `encode_video` without the decoding: a clip of `n_frames` at `fps`."""
    if n_frames < 1 or not fps > 0:
        raise ValueError(f"a video needs frames and a frame rate (got {n_frames} frames at {fps} fps)")
    if force_packing is not None and not 1 <= force_packing <= 6:
        raise ValueError(f"packing must be 1 to 6 frames, got {force_packing}")
    duration_s = n_frames / fps
    if choose_fps * int(duration_s) <= MAX_NUM_FRAMES:
        packing = 1
        choose = round(min(choose_fps, round(fps)) * min(MAX_NUM_FRAMES, duration_s))
    else:
        packing = math.ceil(duration_s * choose_fps / MAX_NUM_FRAMES)
        if packing <= MAX_NUM_PACKING:
            choose = round(duration_s * choose_fps)
        else:
            choose, packing = round(MAX_NUM_FRAMES * MAX_NUM_PACKING), MAX_NUM_PACKING
    choose = max(1, choose)  # a clip shorter than one sampling step still gives its middle frame
    gap = n_frames / choose
    index = np.array([int(i * gap + gap / 2) for i in range(choose)])
    if force_packing:
        packing = min(force_packing, 6)
    scale = np.arange(0, duration_s, TIME_SCALE_S)
    ids = (nearest(index / fps, scale) / TIME_SCALE_S).astype(np.int32)
    packs = [ids[i : i + packing].tolist() for i in range(0, len(ids), packing)]
    return Plan(index, packs, packing, duration_s)


def nearest(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`map_to_nearest_scale`: each value replaced by the nearest point of `scale` (scipy's k-d
    tree, as the card; KDTree is cKDTree's implementation)."""
    from scipy.spatial import KDTree

    _, idx = KDTree(np.asarray(scale)[:, None]).query(np.asarray(values)[:, None])
    return np.asarray(scale)[idx]


def read_video(
    path: str | Path, choose_fps: float = DEFAULT_FPS, force_packing: int | None = None
) -> tuple[list[Image.Image], Plan]:
    """A video file -> the chosen frames (RGB) and their plan. Decoding keeps only chosen frames."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {str(path)!r} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{str(path)!r} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            n = stream.frames or int(round(float((stream.duration or 0) * (stream.time_base or 0)) * fps))
            if n < 1:  # the container does not say: count by decoding
                n = sum(1 for _ in container.decode(stream))
                container.seek(0)
            p = plan(n, fps, choose_fps, force_packing)
            wanted, frames = set(p.frame_index.tolist()), {}
            for i, frame in enumerate(container.decode(stream)):
                if i in wanted:
                    frames[i] = frame.to_image().convert("RGB")
                if len(frames) == len(wanted):
                    break
    except av.FFmpegError as e:
        raise ValueError(f"{str(path)!r} is not a readable video ({e})") from None
    # A container that over-reports its frame count: the last decoded frame stands in.
    last = frames[max(frames)] if frames else None
    if last is None:
        raise ValueError(f"{str(path)!r}: no frame could be decoded")
    return [frames.get(i, last) for i in p.frame_index.tolist()], p


def read_frames(
    folder: str | Path, fps: float = DEFAULT_FPS, force_packing: int | None = None
) -> tuple[list[Image.Image], Plan]:
    """A folder of images (sorted by name) taken at `fps` -> every frame, packed by the recipe's rule."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"frames folder {str(folder)!r} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{str(folder)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    p = plan(len(files), fps, fps, force_packing)
    frames = []
    for i in p.frame_index.tolist():
        with Image.open(files[i]) as im:
            frames.append(im.convert("RGB"))
    return frames, p
