"""Model cost figures (one JSON line): checkpoint load, and one TDM unit (1 s of 16 kHz audio + one
camera frame) through log-mel, the streaming Whisper encoder, the vision tower + resampler and an
LLM prefill of the unit's tokens.

    python bench/model.py [--model DIR] [--device cpu|cuda] [--dtype float32|bfloat16] [--units N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--units", type=int, default=20)
    a = ap.parse_args()
    from omni.embedded import embedded_checkpoint
    from omni.loader import load
    from omni.model.audio import AudioEncoderCache, audio_embeddings_streaming
    from omni.processing import prompt as P
    from omni.processing.audio import audio_placeholder, log_mel

    ckpt = a.model or embedded_checkpoint()
    t0 = time.perf_counter()
    m = load(ckpt, dtype=getattr(torch, a.dtype), device=a.device, progress=False)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    llm, cache, acache = m.net.llm, m.net.llm.new_cache(), AudioEncoderCache()
    times = []
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    for _ in range(a.units):
        audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
        sync()
        t = time.perf_counter()
        with torch.inference_mode():
            strips, tgt, ph = m.image_processor.process([frame], max_slice_nums=1, use_image_id=False)
            text = "<unit>" + ph[0] + audio_placeholder(len(audio))
            ids = m.tokenizer.encode(text, add_special_tokens=False)
            s = m.ids
            mel = torch.from_numpy(log_mel(audio, m.pre))[None].to(a.device, m.dtype)
            aud = audio_embeddings_streaming(
                m.net.apm, m.net.audio_projection_layer, mel, acache, m.config.audio_pool_step
            )
            emb = m.net.embed(
                torch.tensor([ids], device=a.device),
                P.bounds(ids, (s.image_start, s.slice_start), (s.image_end, s.slice_end)),
                m.net.vision_features(strips, tgt),
                P.bounds(ids, (s.audio_start,), (s.audio_end,)),
                [aud],
            )
            llm.model(emb, cache=cache)
        sync()
        times.append((time.perf_counter() - t) * 1000)
    steady = sorted(times[1:]) or times
    print(
        json.dumps(
            {
                "bench": "model",
                "device": a.device,
                "dtype": a.dtype,
                "model": str(a.model or "embedded-tiny"),
                "load_s": round(load_s, 3),
                "unit_tokens": len(ids),
                "units": a.units,
                "unit_ms_first": round(times[0], 1),
                "unit_ms_p50": round(statistics.median(steady), 1),
                "unit_ms_p95": round(steady[int(0.95 * (len(steady) - 1))], 1),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
