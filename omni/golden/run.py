"""`omni golden-check DIR`: load the checkpoint in DIR and replay every case its cases.json lists.

Each case module compares our outputs with the stored reference tensors; this module only loads
the model once, dispatches by case name and prints one line per comparison. A case listed in
cases.json that we cannot replay is a FAIL, never silently skipped.
"""

from __future__ import annotations

import sys
import time

import torch
from PIL import Image

from .harness import GoldenDir, Report, format_row

CASE_ORDER = ("vision", "audio", "chat", "tts_decode", "voice_clone", "streaming")


def _vision(g, m, r):
    from . import vision

    vision.check(g, m.net.vpm, m.net.resampler, m.image_processor, r)
    want = g.case("vision")
    from ..processing import prompt as P

    images = [Image.open(g.path / f"image{k}.png").convert("RGB") for k in range(len(g.cases["vision"]["image_sizes"]))]
    strips, tgt, ph = m.image_processor.process(images, use_image_id=True)
    text = P.expand_markers(g.cases["vision"]["prompt"], ph, [])
    ids = m.tokenizer.encode(text, add_special_tokens=False)
    s = m.ids
    ib = P.bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end))
    r.equal("input_ids", torch.tensor([ids]), want["input_ids"])
    r.equal("image_bound", torch.tensor(ib), want["image_bound"])
    with torch.inference_mode():
        emb = m.net.embed(torch.tensor([ids]), ib, m.net.vision_features(strips, tgt))
    r.compare("inputs_embeds", emb, want["inputs_embeds"])


def _audio(g, m, r):
    from . import audio

    audio.check(g, m.net.apm, m.net.audio_projection_layer, m.config.audio_pool_step, r)


def _chat(g, m, r):
    from . import chat

    chat.check(g, m, r)


def _tts_decode(g, m, r):
    from . import tts

    tts.check_decode(g, m.net.tts, m.vocos, m.tts_tokenizer, r)


def _voice_clone(g, m, r):
    from . import voice_clone

    voice_clone.check(g, m, r)


def _streaming(g, m, r):
    from . import streaming

    streaming.check(g, m, r)


CHECKS = {
    "vision": _vision,
    "audio": _audio,
    "chat": _chat,
    "tts_decode": _tts_decode,
    "voice_clone": _voice_clone,
    "streaming": _streaming,
}


def _v45(name: str):
    """The replay of a MiniCPM-V 4.5 case (omni.golden.v45, v45_chat), None if there is none."""
    from . import v45, v45_chat

    if name.startswith("chat_"):
        return lambda g, m, r: v45_chat.chat(g, m, r, name)
    return {
        "processor": v45.processor,
        "vision": v45.vision,
        "video": v45.video,
        "video_sliced": v45.video_sliced,
        "llm": v45_chat.llm,
    }.get(name)


def listed_cases(g: GoldenDir) -> list[str]:
    names = [k for k in g.cases if k not in ("meta", "inputs")]
    return sorted(names, key=lambda n: CASE_ORDER.index(n) if n in CASE_ORDER else len(CASE_ORDER))


def run(folder, cases: list[str] | None = None, echo=print) -> Report:
    from ..loader import load

    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = GoldenDir(folder)
    t0 = time.perf_counter()
    m = load(g.checkpoint_dir(), dtype=torch.float32, device="cpu", progress=False)
    echo(f"loaded {g.path} in {time.perf_counter() - t0:.1f}s")
    report = Report(echo=echo)
    for name in cases or listed_cases(g):
        report.case_name = name
        t = time.perf_counter()
        check = _v45(name) if m.family.prompt == "qwen3" else CHECKS.get(name)
        if check is None:
            report.fail("case", f"no replay for case {name!r}")
            continue
        try:
            check(g, m, report)
        except Exception as e:  # a crash in one case is that case's FAIL, the others still run
            report.case_name = name
            report.fail("exception", f"{type(e).__name__}: {e}")
        echo(f"-- {name}: {time.perf_counter() - t:.1f}s")
    return report


def main(folder, cases=None) -> int:
    report = run(folder, cases)
    failed = [r for r in report.rows if not r.passed]
    print(f"{len(report.rows) - len(failed)} passed, {len(failed)} failed")
    for r in failed:
        print(format_row(r), file=sys.stderr)
    return 0 if report.passed else 1
