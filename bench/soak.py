"""Soak and load against a live `omni serve` (one JSON line): N sessions streaming real speech in
real time for M minutes (turn after turn, server VAD), plus `--extra` sessions over max_sessions
that must be refused cleanly (`server_busy`, close 1013); the RSS of the server and its model
processes is sampled throughout and compared, once every session has closed, with the baseline
taken after a 15-s warm-up round of the same sessions.

    python bench/soak.py [--sessions 16] [--minutes 2] [--extra 8] [--port 8792]

`load(url, sessions, seconds, extra)` is what the test suite runs briefly (tests/streaming/test_load.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "assets" / "golden" / "tiny-a" / "speech_16k.wav"
CHUNK_MS = 100


def turn_messages() -> list[str]:
    """One turn: silence, speech, silence, as 100-ms appends of 24-kHz PCM16."""
    from streaming.gateway.codecs import float_to_pcm16, resample

    speech, _ = sf.read(str(SPEECH), dtype="float32")
    x = np.concatenate([np.zeros(8000, np.float32), speech, np.zeros(32000, np.float32)])
    pcm = float_to_pcm16(resample(x, 16000, 24000)).tobytes()
    step = 2 * 24000 * CHUNK_MS // 1000
    return [
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()})
        for i in range(0, len(pcm), step)
    ]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the model processes), in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total / 1024


async def _speaker(url: str, seconds: float, out: dict) -> None:
    import websockets

    messages = turn_messages()
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        t_end = time.monotonic() + seconds

        async def read():
            async for raw in ws:
                ev = json.loads(raw)
                if ev["type"] == "response.done":
                    out["replies"] += 1
                elif ev["type"] == "error":
                    out["errors"].append(ev["error"]["code"])

        reader = asyncio.create_task(read())
        t0 = time.monotonic()
        i = 0
        while time.monotonic() < t_end:
            await ws.send(messages[i % len(messages)])
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * CHUNK_MS / 1000 - time.monotonic()))  # real time
        await asyncio.sleep(2.0)  # the last reply
        reader.cancel()


async def _refused(url: str, out: dict) -> None:
    import websockets

    async with websockets.connect(url) as ws:
        first = json.loads(await ws.recv())
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            ok = first["type"] == "error" and first["error"]["code"] == "server_busy" and e.rcvd and e.rcvd.code == 1013
            out["refused_cleanly" if ok else "refused_badly"] += 1


async def load(url: str, sessions: int, seconds: float, extra: int, pid: int | None = None) -> dict:
    """`sessions` speakers for `seconds`, `extra` more refused; RSS of `pid` (and children) sampled."""
    out = {"replies": 0, "errors": [], "refused_cleanly": 0, "refused_badly": 0}
    samples: list[float] = []

    async def sample():
        while True:
            samples.append(rss_mb(pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample()) if pid else None
    speakers = [asyncio.create_task(_speaker(url, seconds, out)) for _ in range(sessions)]
    await asyncio.sleep(1.0)  # the speakers hold every slot
    await asyncio.gather(*[_refused(url, out) for _ in range(extra)])
    await asyncio.gather(*speakers)
    if sampler:
        sampler.cancel()
        out["rss_peak_mb"] = round(max(samples), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--extra", type=int, default=8)
    ap.add_argument("--port", type=int, default=8792)
    a = ap.parse_args()
    p = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(a.port), "--max-sessions", str(a.sessions)],
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
        cold = rss_mb(p.pid)
        # A short warm-up round first: KV pool pages, allocator arenas and caches are committed the
        # first time they are used and stay (not a leak); the baseline is taken after it.
        asyncio.run(load(url, a.sessions, 15.0, 0, None))
        time.sleep(3.0)
        base = rss_mb(p.pid)
        out = asyncio.run(load(url, a.sessions, 60 * a.minutes, a.extra, p.pid))
        time.sleep(3.0)  # sessions freed
        after = rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(30)
    errors = {c: out["errors"].count(c) for c in set(out["errors"])}
    print(
        json.dumps(
            {
                "bench": "soak",
                "sessions": a.sessions,
                "minutes": a.minutes,
                "extra": a.extra,
                "replies": out["replies"],
                "errors": errors,
                "refused_cleanly": out["refused_cleanly"],
                "refused_badly": out["refused_badly"],
                "rss_cold_mb": round(cold, 1),
                "rss_baseline_mb": round(base, 1),
                "rss_peak_mb": out["rss_peak_mb"],
                "rss_after_mb": round(after, 1),
                "rss_growth_mb": round(after - base, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
