"""Ray figures (one JSON line), tiny model on this CPU:
* `hop_ms`: what the Ray hop adds to one engine command, p50/p95: a command that does no model work
  (a reply step with no reply) and a 1-s unit prefill, each through an in-process engine thread
  and through a Ray replica (2 replicas, a local cluster), N times one after another;
* `held`: the largest number of sessions `omni serve` holds in real time with replies all starting
  at once (bench/gateway.py --turns manual) with `worker = "ray"` (2 replicas) and with the default
  model processes (2), run one after the other.

    python bench/replicas.py [--n 200] [--levels 8,12,16,20] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def pcts(xs: list[float]) -> dict:
    xs = sorted(xs)
    return {"p50": round(statistics.median(xs), 3), "p95": round(xs[int(0.95 * (len(xs) - 1))], 3)}


async def timings(worker, n: int) -> dict:
    h = worker.open_session()
    await h.set_system(None, "audio_assistant", None, None)
    rng = np.random.default_rng(0)
    idle, unit = [], []
    for _ in range(n):
        t = time.perf_counter()
        await h.reply_step()  # no reply: the engine answers at once
        idle.append(1000 * (time.perf_counter() - t))
    for _ in range(max(10, n // 10)):
        audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)
        t = time.perf_counter()
        await h.append_unit(audio)
        unit.append(1000 * (time.perf_counter() - t))
    h.close()
    return {"command_ms": pcts(idle), "unit_ms": pcts(unit)}


def knee(config: dict, levels: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("max_speech_s = 8.0\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
    p = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gateway.py"),
            "--levels",
            levels,
            "--turns",
            "manual",
            "--config",
            f.name,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {
        "knee_sessions": out["knee_sessions"],
        "curve": [
            {k: c[k] for k in ("sessions", "held", "eos_to_first_audio_ms_p95", "max_underrun_ms")}
            for c in out["concurrency"]
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--levels", default="8,12,16,20")
    ap.add_argument("--skip-gateway", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from streaming.engines.rayworker import RayWorker
    from streaming.server import checkpoint_dir, load_model
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec, EngineWorker

    settings = ServerSettings(model_lanes=2)
    spec = EngineSpec.from_settings(settings)
    local = EngineWorker(load_model(settings)[0], EngineSpec.from_settings(ServerSettings(model_lanes=1)))
    try:
        mine = asyncio.run(timings(local, a.n))
    finally:
        local.close()
    ray_w = RayWorker(checkpoint_dir(settings), spec, replicas=2)
    try:
        remote = asyncio.run(timings(ray_w, a.n))
    finally:
        ray_w.close()
    out = {
        "bench": "ray",
        "model": "embedded-tiny",
        "device": "cpu",
        "n": a.n,
        "in_process": mine,
        "ray": remote,
        "hop_ms": {k: {q: round(remote[k][q] - mine[k][q], 3) for q in ("p50", "p95")} for k in mine},
    }
    if not a.skip_gateway:
        out["held"] = {
            "ray": knee({"worker": "ray", "ray_replicas": 2}, a.levels),
            "processes": knee({"worker": "processes", "model_lanes": 2}, a.levels),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
