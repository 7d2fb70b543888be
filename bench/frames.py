"""Camera-frame memory against a live `omni serve` (one JSON line): one WebSocket session with video
on sends `--frames` 1080p JPEG frames, each with 1 s of audio, faster than real time, committing a
manual turn every 10 frames; the RSS of the gateway process (the server itself) and of its model
processes is read before, at the peak, and after the session closed.

    python bench/frames.py [--frames 300] [--size 1920x1080] [--port 8793]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import REPO, rss_mb  # noqa: E402


def own_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def frames_b64(w: int, h: int, n: int = 8) -> list[str]:
    """n distinct camera-like JPEGs (smooth gradients plus sensor noise), base64."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 40 * i)], -1) + rng.normal(0, 6, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=80)
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


async def drive(url: str, frames: int, size: tuple[int, int], sample) -> dict:
    import websockets

    jpegs = frames_b64(*size)
    second = base64.b64encode(np.zeros(24000, "<i2").tobytes()).decode()  # 1 s of 24-kHz PCM16
    errors: list[str] = []
    async with websockets.connect(url, max_size=None) as ws:

        async def read():
            async for m in ws:
                ev = json.loads(m)
                if ev["type"] == "error":
                    errors.append(ev["error"]["code"])

        reader = asyncio.create_task(read())
        await ws.send(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"omni": {"video": True}, "audio": {"input": {"turn_detection": None}}},
                }
            )
        )
        t0 = time.perf_counter()
        for i in range(frames):
            await ws.send(json.dumps({"type": "input_image_buffer.append", "image": jpegs[i % len(jpegs)]}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second}))
            if i % 10 == 9:
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            if i % 20 == 19:
                sample()
            await asyncio.sleep(0.05)
        sent_s = time.perf_counter() - t0
        await asyncio.sleep(3.0)
        sample()
        reader.cancel()
    return {"sent_s": round(sent_s, 1), "errors": {c: errors.count(c) for c in set(errors)}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--port", type=int, default=8793)
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    p = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(a.port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for line in p.stderr:
            if "omni: open" in line:
                break
        url = f"ws://127.0.0.1:{a.port}/v1/realtime"
        time.sleep(2.0)
        asyncio.run(drive(url, 20, size, lambda: None))  # warm-up: arenas, caches
        time.sleep(2.0)
        base_gw, base_all = own_rss_mb(p.pid), rss_mb(p.pid)
        peak = [base_gw]
        out = asyncio.run(drive(url, a.frames, size, lambda: peak.append(own_rss_mb(p.pid))))
        time.sleep(3.0)
        after_gw, after_all = own_rss_mb(p.pid), rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(30)
    print(
        json.dumps(
            {
                "bench": "frames",
                "frames": a.frames,
                "size": a.size,
                **out,
                "gateway_rss_baseline_mb": round(base_gw, 1),
                "gateway_rss_peak_mb": round(max(peak), 1),
                "gateway_rss_after_mb": round(after_gw, 1),
                "gateway_growth_mb": round(after_gw - base_gw, 1),
                "all_rss_baseline_mb": round(base_all, 1),
                "all_rss_after_mb": round(after_all, 1),
                "all_growth_mb": round(after_all - base_all, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
