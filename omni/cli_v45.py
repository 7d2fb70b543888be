"""`omni chat` on a MiniCPM-V 4.5 checkpoint: images or a video (file or frames folder), the
reply's text streamed to stdout as it is decoded (or one JSON line with --json).

Owns: checking the chat flags against the model's family before it loads (audio, --voice and
--out-wav on V-4.5, --video/--frames on o-2.6: one clear line naming the family), reading the
video as the model card's recipe does (omni.processing.video: --fps frames per second, packs of
--pack frames or the recipe's choice) and running `omni.chat_v45`. Does not own: argument
parsing (omni.cli), the model.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable

from .family import Family

DEFAULT_QUESTION = {"video": "Describe the video.", "image": "Describe the image.", "text": "Hello!"}


def check_flags(a, family: Family) -> None:
    """Raise ValueError (one line) for a flag the family cannot honour, before anything loads."""
    wanted = [("audio", a.audio), ("speech", a.out_wav), ("speech", a.voice)]
    wanted += [("video", getattr(a, "video", None)), ("video", getattr(a, "frames", None))]
    for what, given in wanted:
        if given:
            family.require(what)
    if family.prompt != "qwen3" and (a.think or a.json):
        raise ValueError(f"--think and --json are MiniCPM-V 4.5 options; this checkpoint is {family.title}")
    if a.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be at least 1")
    if a.video and a.frames:
        raise ValueError("give --video or --frames, not both")
    if (a.video or a.frames) and a.image:
        raise ValueError("give images or a video, not both (a video is read with one slice per frame and no image ids)")


def _image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"image {path!r} is not a readable image ({type(e).__name__})") from None


def chat(a, load: Callable[[], Any]) -> int:
    """Read the inputs (a bad file fails before the model loads), `load()` the model, answer."""
    from . import chat_v45 as C
    from .processing import video as VID
    from .sampling import GREEDY

    note, temporal_ids, slices, use_id = "", None, None, None
    if a.video or a.frames:
        frames, plan = VID.read_video(a.video, a.fps, a.pack) if a.video else VID.read_frames(a.frames, a.fps, a.pack)
        content: list = list(frames)
        temporal_ids, slices, use_id = plan.temporal_ids, 1, False  # the card's video call
        note = (
            f"video: {len(frames)} frames of {plan.duration_s:.1f} s at {a.fps:g} fps, "
            f"{len(plan.temporal_ids)} pack(s) of up to {plan.packing}"
        )
        kind = "video"
    else:
        content = [_image(p) for p in a.image or []]
        kind = "image" if content else "text"
    content.append(a.text or DEFAULT_QUESTION[kind])
    msgs = [{"role": "user", "content": content}]
    sampling = C.preset(True, a.think) if a.sample else GREEDY
    if note:
        print(note, file=sys.stderr)
    m = load()
    t = time.perf_counter()
    args = (m, msgs, a.max_new_tokens, sampling, a.seed, bool(a.think), a.system or "", temporal_ids, slices, use_id)
    if a.json:
        res = C.chat(*args)
        out = {"text": res.text, "ids": res.ids, "seconds": round(time.perf_counter() - t, 3)}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    ids: list[int] = []
    for delta in C.stream(*args, ids_out=ids):
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    print(f"({len(ids)} tokens in {time.perf_counter() - t:.2f} s)", file=sys.stderr)
    return 0
