"""Session engine cost figures (one JSON line): per-unit prefill (1 s of 16-kHz audio + one 640x480
camera frame), first text / first audio after the last unit with `low_latency` off and
on, the TTS real-time factor over a reply, peak RSS.

    python bench/session.py [--model DIR] [--device cpu|cuda] [--dtype float32|bfloat16] [--units N]
    python bench/session.py --full-random [--layers L] --device cuda --dtype bfloat16

--full-random: configs/full.toml with random weights (bench/fullrand.py); --layers N cuts every
tower to N layers (a CPU smoke run of the same path).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import numpy as np
import torch
from PIL import Image

from fullrand import full_random


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--units", type=int, default=10)
    ap.add_argument("--full-random", action="store_true")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--max-new-tokens", type=int, default=60)
    a = ap.parse_args()
    from omni.embedded import embedded_checkpoint
    from omni.loader import load
    from omni.sampling import SamplingParams
    from omni.session.engine import GenerateOptions, Session

    dtype = getattr(torch, a.dtype)
    t0 = time.perf_counter()
    if a.full_random:
        m, name = full_random(a.device, dtype, a.layers), f"full-random(layers={a.layers or 'all'})"
    else:
        m = load(a.model or embedded_checkpoint(), dtype=dtype, device=a.device, progress=False)
        name = str(a.model or "embedded-tiny")
    build_s = time.perf_counter() - t0
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    ref = (0.1 * rng.standard_normal(5 * m.pre.sampling_rate)).astype(np.float32)
    rate = m.vocos.dims.sample_rate_hz
    out = {
        "bench": "session",
        "model": name,
        "device": a.device,
        "dtype": a.dtype,
        "build_s": round(build_s, 2),
        "units": a.units,
    }
    for low in (False, True):
        s = Session(m, seed=0)
        s.set_system("omni", ref_audio=ref)
        unit_ms = []
        for _ in range(a.units):
            audio = (0.1 * rng.standard_normal(m.pre.sampling_rate)).astype(np.float32)
            sync()
            t = time.perf_counter()
            s.append_unit(audio, frame)
            sync()
            unit_ms.append((time.perf_counter() - t) * 1000)
        opts = GenerateOptions(
            sampling=SamplingParams(), max_new_tokens=a.max_new_tokens, low_latency=low, max_speech_s=20.0
        )
        t = time.perf_counter()
        first_text = first_audio = None
        samples = 0
        for text, wav in s.generate(opts):
            now = (time.perf_counter() - t) * 1000
            if text and first_text is None:
                first_text = now
            if len(wav) and first_audio is None:
                first_audio = now
            samples += len(wav)
        sync()
        total_s = time.perf_counter() - t
        key = "low_latency" if low else "official"
        out[f"{key}.first_text_ms"] = None if first_text is None else round(first_text, 1)
        out[f"{key}.first_audio_ms"] = None if first_audio is None else round(first_audio, 1)
        out[f"{key}.reply_audio_s"] = round(samples / rate, 2)
        out[f"{key}.reply_rtf"] = round(total_s / (samples / rate), 3) if samples else None
        if not low:
            steady = sorted(unit_ms[1:]) or unit_ms
            out["unit_ms_first"] = round(unit_ms[0], 1)
            out["unit_ms_p50"] = round(statistics.median(steady), 1)
            out["unit_ms_p95"] = round(steady[int(0.95 * (len(steady) - 1))], 1)
            out["cache_len"] = s.state.cache_len
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if a.device.startswith("cuda"):
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["torch_threads"] = torch.get_num_threads()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
