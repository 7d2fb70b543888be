"""MiniCPM-V 4.5 batch engine figures (`bench/engine.py --family v45`; one JSON line).

* `ingest_fps`: camera frames (640x480, the processor's resize included) prefilled per second per
  session, N sessions all feeding at once as fast as the engine takes them, packs of 1, 3 and 6;
* `first_text_ms`: N sessions with frames in context each ask a question at the same moment: the
  time to the first non-empty text piece of each reply (p50 / p95);
* `decode`: replies of --tokens tokens at each --levels (default 1, 16): one-token forwards per
  second, batched and every op alone (max_batch 1), medians of --v45-rounds alternating runs, and
  the ratio (at one session both run the same batches: their ratio shows the noise);
* `target`: real time, the engine on its own thread as in the service: --target-sessions sessions
  each capture --target-fps frames per second (packs of --target-pack) for --target-s seconds,
  and one of them asks a question every --question-every-s (its frames wait while it replies, as
  a gateway holds them): frames taken per second per session (captured frames over the time until the
  last was taken; the slowest session and the median), the lag from a frame's capture to its
  command's end (p95: a pack's last frame waits for the pack's prefill), the first text after each question (p50 / p95, held
  when p95 <= 500 ms), and the machine's load average, which other work on it shares.

    python bench/engine.py --family v45 [--model DIR] [--levels 1,16] [--target-pack 2] [--threads 1]

One torch thread by default (--threads), as a model process of the service runs.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import numpy as np
import torch
from PIL import Image

FIRST_TEXT_HELD_MS = 500.0


def percentile(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))], 1) if xs else None


class Driver:
    """An engine ticked on this thread: submit, then `until_done` ticks until every callback came."""

    def __init__(self, e):
        self.e, self.waiting = e, 0

    def call(self, sid, op, *args, done=None):
        self.waiting += 1

        def cb(result, error):
            self.waiting -= 1
            if error is not None:
                raise error
            if done is not None:
                done(result)

        self.e.submit(sid, op, args, None, cb)

    def until_done(self) -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            while self.waiting:
                self.e.tick()
        return time.perf_counter() - t


def camera(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]


def engine(m, n: int, a, max_batch: int | None = None):
    from omni.batch.engine import BatchEngine

    e = BatchEngine(m, slots=n, slot_tokens=a.slot_tokens, max_batch=max_batch or a.max_batch)
    d = Driver(e)
    sids = [e.open() for _ in range(n)]
    for i, sid in enumerate(sids):
        d.call(sid, "system", i, "default", None, None)
    d.until_done()
    return e, d, sids


def ingest(m, n: int, pack: int, a, frames) -> float:
    """Frames per second per session, `n` sessions feeding `a.frames` frames each at once."""
    e, d, sids = engine(m, n, a)
    for sid in sids:  # warm-up: one pack each
        for k in range(pack):
            d.call(sid, "frame", frames[k], 0.1 * k, pack)
    d.until_done()
    for sid in sids:
        for k in range(a.frames):
            d.call(sid, "frame", frames[k % len(frames)], 1.0 + k / 6, pack)
    return a.frames / d.until_done()


def ask(d, sid, opts, t0: float, firsts: list) -> None:
    """A question and its reply, read piece by piece; the first non-empty text's time lands in `firsts`."""
    d.call(sid, "prefill", {"role": "user", "content": ["What do you see now?"]})
    d.call(sid, "generate", opts)
    seen = []

    def step(result):
        if result[0] is None:
            if not seen:
                firsts.append(1000 * (time.perf_counter() - t0))  # an empty reply: its end
            return
        if result[0] and not seen:
            seen.append(True)
            firsts.append(1000 * (time.perf_counter() - t0))
        d.call(sid, "reply_step", done=step)

    d.call(sid, "reply_step", done=step)


def first_text(m, n: int, a, frames) -> dict:
    from omni.session.v45 import ReplyOptions

    e, d, sids = engine(m, n, a)
    for sid in sids:
        for k in range(6):
            d.call(sid, "frame", frames[k], k / 6, 3)
    d.until_done()
    firsts: list[float] = []
    t0 = time.perf_counter()
    for sid in sids:
        ask(d, sid, ReplyOptions(max_new_tokens=a.tokens), t0, firsts)
    d.until_done()
    return {"p50": percentile(firsts, 0.5), "p95": percentile(firsts, 0.95)}


def decode(m, n: int, max_batch: int, a) -> float:
    from omni.sampling import SamplingParams
    from omni.session.v45 import ReplyOptions

    e, d, sids = engine(m, n, a, max_batch)
    # A high temperature keeps the tiny model from stopping early: every reply runs its tokens.
    opts = ReplyOptions(sampling=SamplingParams(temperature=5.0, top_k=0, top_p=1.0), max_new_tokens=a.tokens)
    for sid in sids:
        d.call(sid, "prefill", {"role": "user", "content": ["Tell me a story."]})
    d.until_done()
    tok0, s0 = e.stats.llm_decode_tokens, e.stats.llm_decode_s
    for sid in sids:
        ask(d, sid, opts, time.perf_counter(), [])
    d.until_done()
    return round((e.stats.llm_decode_tokens - tok0) / max(e.stats.llm_decode_s - s0, 1e-9), 1)


def target(m, a, frames) -> dict:
    """Real time: the engine on a thread; a feeder captures frames on the wall clock."""
    from omni.batch.engine import BatchEngine
    from omni.session.v45 import ReplyOptions

    n, fps, pack = a.target_sessions, a.target_fps, a.target_pack
    e = BatchEngine(m, slots=n, slot_tokens=a.slot_tokens, max_batch=a.max_batch)
    lock = threading.Lock()
    done_at: dict[int, list[float]] = {}  # session -> the times its frame commands completed
    lags: list[float] = []
    firsts: list[float] = []
    held: dict[int, list] = {}  # a replying session's frames, sent when its reply ends

    def submit(sid, op, args, done=None):
        e.submit(
            sid, op, args, None, lambda r, err: (done or (lambda r: None))(r) if err is None else errors.append(err)
        )

    errors: list = []
    threads = torch.get_num_threads()

    def serve() -> None:  # the engine thread's own OpenMP team, this size (as streaming/engines/worker.py)
        torch.set_num_threads(threads)
        e.run_forever()

    thread = threading.Thread(target=serve, name="omni-engine", daemon=True)
    thread.start()
    sids = [e.open() for _ in range(n)]
    for i, sid in enumerate(sids):
        submit(sid, "system", (i, "default", None, None))

    def frame(sid, k, t_capture, was_held=False):
        def fin(_):
            with lock:
                done_at.setdefault(sid, []).append(time.perf_counter())
                if not was_held:  # a held frame waited for the reply, not for the engine
                    lags.append(1000 * (time.perf_counter() - t_capture))

        submit(sid, "frame", (frames[k % len(frames)], t_capture - t0, pack), fin)

    def question(sid, t_ask):
        def step(result):
            if result[0] is None:
                if not seen:
                    firsts.append(1000 * (time.perf_counter() - t_ask))
                with lock:
                    waiting = held.pop(sid, [])
                for args in waiting:  # the frames captured during the reply
                    frame(*args, was_held=True)
                return
            if result[0] and not seen:
                seen.append(True)
                firsts.append(1000 * (time.perf_counter() - t_ask))
            submit(sid, "reply_step", (), step)

        seen: list = []
        submit(sid, "prefill", ({"role": "user", "content": ["What changed?"]},))
        submit(sid, "generate", (ReplyOptions(max_new_tokens=a.tokens),))
        submit(sid, "reply_step", (), step)

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    k, next_q, q = 0, t0 + a.question_every_s, 0
    while (now := time.perf_counter()) < t0 + a.target_s:
        t_k = t0 + k / fps
        if now >= next_q:  # questions take turns among the sessions, packs aligned or not
            sid = sids[q % n]
            with lock:
                held.setdefault(sid, [])
            question(sid, now)
            next_q, q = next_q + a.question_every_s, q + 1
        if now >= t_k:
            for sid in sids:
                with lock:
                    wait = held.get(sid)
                    if wait is not None:
                        wait.append((sid, k, t_k))
                        continue
                frame(sid, k, t_k)
            k += 1
        time.sleep(max(0.0, min(t_k + 1 / fps, next_q) - time.perf_counter()) / 2)
    end = time.perf_counter()
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:  # every frame captured is taken (a reply's held ones after it)
        with lock:
            if sum(len(v) for v in done_at.values()) >= k * n and not held:
                break
        time.sleep(0.01)
    e.stop()
    thread.join(10)
    # the frames captured over the time until the last of them was taken: the capture rate when
    # the engine keeps up (a frame held through a reply is taken after it: the rate dips for the
    # session that replies last), less when a backlog grows
    per_session = [len(done_at.get(sid, [])) / (max(done_at.get(sid, [end])) - t0) for sid in sids]
    p95 = percentile(firsts, 0.95)
    return {
        "sessions": n,
        "capture_fps": fps,
        "pack": pack,
        "seconds": a.target_s,
        "questions": len(firsts),
        "ingest_fps_min": round(min(per_session), 2),
        "ingest_fps_median": round(statistics.median(per_session), 2),
        "frame_lag_ms_p50": percentile(lags, 0.5),
        "frame_lag_ms_p95": percentile(lags, 0.95),
        "first_text_ms_p50": percentile(firsts, 0.5),
        "first_text_ms_p95": p95,
        "held": p95 is not None and p95 <= FIRST_TEXT_HELD_MS and min(per_session) >= 0.95 * fps,
        "errors": [f"{type(x).__name__}: {x}" for x in errors[:3]],
        "load_avg_1m": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "batches": e.stats.as_dict()["mean_batch"],
    }


def main_v45(a) -> dict:
    from omni.embedded import resolve_model
    from omni.loader import load

    # One torch thread unless asked: as the service's model processes run (streaming/model_process.py);
    # on a shared 2-core machine two OpenMP threads made every figure several times slower.
    torch.set_num_threads(a.threads or 1)
    t0 = time.perf_counter()
    path = resolve_model(a.model or "embedded:minicpmv-4_5")
    m = load(path, dtype=getattr(torch, a.dtype), device=a.device, progress=False, quantize=a.quantize)
    if m.family.key != "v-4.5":
        raise SystemExit(f"--family v45 needs a MiniCPM-V 4.5 checkpoint, got {m.family.title}")
    frames = camera(12)
    levels = [int(x) for x in a.levels.split(",")] if a.levels != "1,4,16,32" else [1, 16]
    ingest_levels = sorted({1, a.target_sessions})
    out: dict = {
        "bench": "engine_v45",
        "model": a.model or "embedded:minicpmv-4_5",
        "device": a.device,
        "dtype": a.dtype,
        "quantize": a.quantize,
        "build_s": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "max_batch": a.max_batch,
        "tokens": a.tokens,
        "ingest_fps": {
            f"pack{p}": {str(n): round(ingest(m, n, p, a, frames), 1) for n in ingest_levels} for p in (1, 3, 6)
        },
        "first_text_ms": {str(n): first_text(m, n, a, frames) for n in ingest_levels},
        "decode": {},
    }
    for n in levels:  # alternating rounds, medians: a shared machine's load drifts within seconds
        runs: dict[str, list[float]] = {"batched": [], "alone": []}
        for _ in range(a.rounds_v45):
            runs["batched"].append(decode(m, n, a.max_batch, a))
            runs["alone"].append(decode(m, n, 1, a))
        b, s = statistics.median(runs["batched"]), statistics.median(runs["alone"])
        out["decode"][str(n)] = {"batched_tok_s": b, "alone_tok_s": s, "ratio": round(b / s, 2)}
    if a.target_s > 0:
        out["target"] = target(m, a, frames)
    return out
