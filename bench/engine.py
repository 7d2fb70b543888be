"""Batch engine figures (one JSON line): N sessions on one `BatchEngine`, batching on and off.

Per level N (default 1, 4, 16, 32) and per mode (`batched`: up to --max-batch ops per forward;
`alone`: the same engine with max_batch 1, every op run by itself, as the old one-step-at-a-time
worker did), all N sessions do the same thing at the same moment (the worst case):
* `unit_ms`: one 1-s unit (audio + a 640x480 camera frame) of every session prefilled together:
  the wall time until the last one is in (what each user waits for);
* `llm_tok_s`: text-only replies of --tokens tokens each: aggregate LLM positions per second (the
  replies' prefix prefill included); `llm_decode_tok_s`: the same over one-token forwards only;
* speech replies of --speech-s seconds each: `tts_frames_s` aggregate TTS frames per second,
  `first_audio_ms` p50/p95 after the replies start, `rtf` p50/max per session (generation time /
  audio), `max_wait_ms`: the longest a player that starts at a session's first audio and plays in
  real time waits for the next piece (0 = never starved; "held" means <= 150 ms);
* `peak_mb`: peak RSS (CPU) or peak CUDA memory of the level.
`ratio` gives batched / alone per level for the throughput figures.

    python bench/engine.py [--levels 1,4,16,32] [--model DIR]
    python bench/engine.py --full-random --layers 2 [--levels 1,16] [--skip-speech]
    python bench/engine.py --full-random --device cuda --dtype bfloat16 --levels 1,8,16,32 [--no-cuda-graphs]
    python bench/engine.py --thread-compare [--rounds 5]   # one session: engine thread / calling thread
    python bench/engine.py --family v45 [--target-pack 2]    # MiniCPM-V 4.5: bench/engine_v45.py
    python bench/engine.py --full-random --device cuda --dtype bfloat16 --quantize int4 --levels 1,4
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # streaming/, for --thread-compare
HELD_MS = 150.0


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None


class Driver:
    """Runs an engine on this thread: commands in, `tick()` until every callback came back."""

    def __init__(self, engine, sync):
        self.e, self.sync, self.waiting = engine, sync, 0

    def call(self, sid, op, *args, done=None):
        self.waiting += 1

        def cb(result, error):
            self.waiting -= 1
            if error is not None:
                raise error
            if done:
                done(result)

        self.e.submit(sid, op, args, None, cb)

    def until_done(self) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            while self.waiting:
                self.e.tick()
        self.sync()
        return time.perf_counter() - t


def replies(d: Driver, sids, opts) -> tuple[dict, float]:
    """Start a reply on every session at once and take its pieces as they come, as a gateway
    does; -> per session [(arrival time, audio samples so far)], wall seconds until all ended."""
    arrivals = {sid: [] for sid in sids}

    def consume(sid):
        def done(result):
            if result[0] is None:
                return
            if len(result[1]):
                total = (arrivals[sid][-1][1] if arrivals[sid] else 0) + len(result[1])
                arrivals[sid].append((time.perf_counter(), total))
            d.call(sid, "reply_step", done=done)

        return done

    for sid in sids:
        d.call(sid, "generate", opts)
        d.call(sid, "reply_step", done=consume(sid))
    return arrivals, d.until_done()


def run_level(m, n: int, max_batch: int, a, sync) -> dict:
    from omni.batch.engine import BatchEngine
    from omni.sampling import SamplingParams
    from omni.session.engine import GenerateOptions

    rng = np.random.default_rng(n)
    frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    rate = m.vocos.dims.sample_rate_hz
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    e = BatchEngine(m, slots=n, slot_tokens=a.slot_tokens, max_batch=max_batch, cuda_graphs=not a.no_cuda_graphs)
    d = Driver(e, sync)
    sids = [e.open() for _ in range(n)]
    for i, sid in enumerate(sids):
        d.call(sid, "system", i, "audio_assistant", None, None)
    d.until_done()
    unit_ms = []
    for _ in range(a.units):
        for sid in sids:
            d.call(sid, "unit", (0.1 * rng.standard_normal(m.pre.sampling_rate)).astype(np.float32), frame)
        unit_ms.append(1000 * d.until_done())
    out = {"unit_ms": round(statistics.median(unit_ms), 1)}
    text = GenerateOptions(sampling=SamplingParams(), max_new_tokens=a.tokens, generate_audio=False)
    tokens0, dec0, dec_s0 = e.stats.llm_tokens, e.stats.llm_decode_tokens, e.stats.llm_decode_s
    _, wall = replies(d, sids, text)
    out["llm_tok_s"] = round((e.stats.llm_tokens - tokens0) / wall, 1)
    # one-token forwards only (the replies' prefix prefill excluded): the decode throughput proper
    out["llm_decode_tok_s"] = round((e.stats.llm_decode_tokens - dec0) / max(e.stats.llm_decode_s - dec_s0, 1e-9), 1)
    if not a.skip_speech:
        out.update(speech(m, e, d, sids, a, rate))
    out["graph_replays"] = sum(g.replays for g in e.executor.graphs.values())
    out["peak_mb"] = round(
        torch.cuda.max_memory_allocated() / 2**20
        if a.device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        1,
    )
    return out


def speech(m, e, d, sids, a, rate) -> dict:
    from omni.sampling import SamplingParams
    from omni.session.engine import GenerateOptions

    opts = GenerateOptions(
        sampling=SamplingParams(), max_new_tokens=4 * a.tokens, max_speech_s=a.speech_s, low_latency=True
    )
    frames0 = e.stats.tts_frames
    t0 = time.perf_counter()
    arrivals, wall = replies(d, sids, opts)
    first, rtf, waits = [], [], []
    for sid in sids:
        arr = arrivals[sid]
        if not arr:
            continue
        t_first = arr[0][0]
        first.append(1000 * (t_first - t0))
        rtf.append((arr[-1][0] - t0) / (arr[-1][1] / rate))
        prev_samples, worst = arr[0][1], 0.0
        for t, total in arr[1:]:
            due = t_first + prev_samples / rate  # the player runs out of audio then
            worst = max(worst, 1000 * (t - due))
            prev_samples = total
        waits.append(worst)
    return {
        "tts_frames_s": round((e.stats.tts_frames - frames0) / wall, 1),
        "first_audio_ms_p50": round(percentile(first, 0.5), 1),
        "first_audio_ms_p95": round(percentile(first, 0.95), 1),
        "rtf_p50": round(percentile(rtf, 0.5), 3),
        "rtf_max": round(max(rtf), 3),
        "max_wait_ms": round(max(waits), 1),
        "held": max(waits) <= HELD_MS,
    }


def _one_session(call) -> dict:
    """One session's work through `call(op, *args) -> result`: a system prompt, six 1-s units
    (audio + a 640x480 frame), a spoken reply; its unit prefill p50, first audio and RTF."""
    from omni.sampling import SamplingParams
    from omni.session.engine import GenerateOptions

    rng = np.random.default_rng(0)
    frame = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    call("system", 0, "audio_assistant", None, None)
    units = []
    for _ in range(6):
        t = time.perf_counter()
        call("unit", (0.1 * rng.standard_normal(16000)).astype(np.float32), frame)
        units.append(time.perf_counter() - t)
    opts = GenerateOptions(sampling=SamplingParams(), max_new_tokens=120, max_speech_s=4.0, low_latency=True)
    t0 = time.perf_counter()
    call("generate", opts)
    first, samples = None, 0
    while (piece := call("reply_step"))[0] is not None:
        if len(piece[1]):
            samples += len(piece[1])
            first = first if first is not None else time.perf_counter() - t0
    return {
        "unit_ms": round(1000 * statistics.median(units), 1),
        "first_audio_ms": round(1000 * (first or 0.0), 1),
        "rtf": round((time.perf_counter() - t0) / max(samples / 24_000, 1e-9), 3),
    }


def thread_child(mode: str) -> None:
    """One process, one mode: the model loaded as `omni serve` loads it for the threads worker,
    then one session ticked on this (the loading) thread (calling), or on the worker's engine
    thread (engine); `engine-2pools`: the model loaded on this thread itself, as before the fix,
    so this thread and the engine thread each make an OpenMP pool (the cause, for comparison)."""
    import threading

    from omni.loader import load
    from streaming.server import checkpoint_dir, load_model
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec, EngineWorker

    settings = ServerSettings(model_lanes=1, worker="threads")
    omni = load(checkpoint_dir(settings), progress=False) if mode == "engine-2pools" else load_model(settings)[0]
    if mode == "calling":
        from omni.batch.engine import BatchEngine

        engine = BatchEngine(omni, slots=2, slot_tokens=4096)
    else:
        engine = EngineWorker(omni, EngineSpec.from_settings(settings)).engines[0]
    sid, box, ready = engine.open(), {}, threading.Event()

    def call(op, *args):
        ready.clear()
        engine.submit(sid, op, args, None, lambda result, error: (box.update(r=result, e=error), ready.set()))
        with torch.inference_mode():
            while mode == "calling" and not ready.is_set():
                engine.tick()
        ready.wait()
        if box["e"] is not None:
            raise box["e"]
        return box["r"]

    _one_session(call)  # warm-up
    print(json.dumps({"mode": mode, "torch_threads": torch.get_num_threads(), **_one_session(call)}))


def thread_compare(rounds: int) -> dict:
    """Engine thread vs calling thread, one session, each in its own process (a process's thread
    pools are the point), in turn, at 1, 2 and all cores; ratios engine / calling (1 = as fast),
    and the same for the engine thread beside a second pool (`ratio_2pools`: the cause)."""
    import os
    import subprocess

    out = {}
    for n in dict.fromkeys([1, 2, os.cpu_count() or 1]):
        runs: dict[str, list[dict]] = {"calling": [], "engine": [], "engine-2pools": []}
        for _ in range(rounds):
            for mode in runs:
                p = subprocess.run(
                    [sys.executable, __file__, "--thread-child", mode, "--threads", str(n)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
        med = {
            m: {k: statistics.median(r[k] for r in rs) for k in ("unit_ms", "first_audio_ms", "rtf")}
            for m, rs in runs.items()
        }
        ratio = {m: {k: round(med[m][k] / med["calling"][k], 3) for k in med[m]} for m in ("engine", "engine-2pools")}
        out[str(n)] = {**med, "ratio": ratio["engine"], "ratio_2pools": ratio["engine-2pools"]}
    return {"bench": "engine_thread", "rounds": rounds, "threads": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--full-random", action="store_true")
    ap.add_argument("--layers", type=int)
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--units", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=30)
    ap.add_argument("--speech-s", type=float, default=4.0)
    ap.add_argument("--slot-tokens", type=int, default=2048)
    ap.add_argument("--skip-speech", action="store_true")
    ap.add_argument("--no-alone", action="store_true", help="skip the max_batch=1 comparison")
    ap.add_argument("--alone-levels", help="levels with the max_batch=1 comparison (default: all)")
    ap.add_argument("--no-cuda-graphs", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--thread-compare", action="store_true", help="one session: engine thread vs calling thread")
    ap.add_argument("--rounds", type=int, default=5, help="--thread-compare: processes per mode and thread count")
    ap.add_argument("--thread-child", choices=["calling", "engine", "engine-2pools"], help=argparse.SUPPRESS)
    ap.add_argument("--family", choices=["o26", "v45"], default="o26", help="v45: bench/engine_v45.py's figures")
    ap.add_argument("--frames", type=int, default=12, help="v45: frames per session per ingest level")
    ap.add_argument("--target-sessions", type=int, default=9, help="v45: sessions in the real-time target run")
    ap.add_argument("--target-fps", type=float, default=6.0)
    ap.add_argument("--target-pack", type=int, default=2)
    ap.add_argument("--target-s", type=float, default=30.0, help="v45: the real-time run's length (0: skip)")
    ap.add_argument("--question-every-s", type=float, default=1.5)
    ap.add_argument("--v45-rounds", dest="rounds_v45", type=int, default=3, help="v45: decode runs per mode")
    ap.add_argument("--quantize", choices=["int8", "int4"], help="the LLM's linears quantized (omni.quantized)")
    a = ap.parse_args()
    if a.family == "v45":
        from engine_v45 import main_v45

        print(json.dumps(main_v45(a)))
        return
    if a.thread_compare:
        print(json.dumps(thread_compare(a.rounds)))
        return
    from omni.embedded import embedded_checkpoint
    from omni.loader import load

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.thread_child:
        return thread_child(a.thread_child)
    dtype = getattr(torch, a.dtype)
    t0 = time.perf_counter()
    if a.full_random:
        from fullrand import full_random

        m, name = full_random(a.device, dtype, a.layers, a.quantize), f"full-random(layers={a.layers or 'all'})"
    else:
        m = load(a.model or embedded_checkpoint(), dtype=dtype, device=a.device, progress=False, quantize=a.quantize)
        name = str(a.model or "embedded-tiny")
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    out = {
        "bench": "engine",
        "model": name,
        "device": a.device,
        "dtype": a.dtype,
        "weights": m.weights,
        "build_s": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "max_batch": a.max_batch,
        "cuda_graphs": a.device.startswith("cuda") and not a.no_cuda_graphs,
        "speech_s": a.speech_s,
        "tokens": a.tokens,
        "levels": {},
    }
    for n in [int(x) for x in a.levels.split(",")]:
        level = {"batched": run_level(m, n, a.max_batch, a, sync)}
        if not a.no_alone and (a.alone_levels is None or str(n) in a.alone_levels.split(",")):
            level["alone"] = run_level(m, n, 1, a, sync)
            b, s = level["batched"], level["alone"]
            level["ratio"] = {
                k: round(b[k] / s[k], 2) for k in ("llm_tok_s", "llm_decode_tok_s", "tts_frames_s") if s.get(k)
            }
            level["ratio"]["unit_ms"] = round(s["unit_ms"] / b["unit_ms"], 2)
        out["levels"][str(n)] = level
        print(json.dumps({"level": n, **level}), file=sys.stderr)
    lv = out["levels"]
    if "1" in lv and "16" in lv:
        out["llm_decode_16_over_1"] = round(
            lv["16"]["batched"]["llm_decode_tok_s"] / lv["1"]["batched"]["llm_decode_tok_s"], 2
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
