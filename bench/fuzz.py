"""Protocol fuzz against a live server (one JSON line): seeded random client traffic in one stream
of connections, mixing every kind of bad input with work that really runs the model, and checking
that the server stays alive and clean.

Per action, by the seed: a valid event; a valid event mutated (fields dropped, retyped, nulled,
unknown ones added); garbage frames, deep JSON and binary junk; strings of megabytes; images whose
headers lie about their size; storms of real speech (server VAD turns start replies); VAD flips
(turn detection switched mid-speech); text items and `response.create` between the malformed
events; closes racing the replies they started; text frames of invalid UTF-8 (the server closes
1007). When the server closes a connection, the fuzzer reconnects. After every `--check-every`
actions the live session must answer a valid `session.update` within 10 s.

It fails (exit 1) on any server log line with a traceback, "never awaited" or "never retrieved",
and reports each process's resident memory (the gateway and every model process) before the fuzz
(warmed by one reply), right after it, and once its sessions have closed.

    python bench/fuzz.py [--messages 10000] [--seed 1] [--check-every 250] [--pace-ms 0] [--port 8791]

`actions(seed, n)` and `run(url, actions, check_every)` are what the test suite runs too
(tests/streaming/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import struct
import subprocess
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzzgen import mutate, templates  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPEECH = REPO / "tests" / "assets" / "golden" / "tiny-a" / "speech_16k.wav"
CHECK_TIMEOUT_S = 10.0
BAD_LOG = ("Traceback (most recent call last)", "never awaited", "never retrieved")


def _speech_chunks_b64() -> list[str]:
    """The test speech as 100 ms chunks of 24 kHz PCM16 base64 (what a client appends)."""
    import soundfile as sf

    audio, rate = sf.read(str(SPEECH), dtype="float32")
    t = np.arange(int(len(audio) * 24_000 / rate)) * rate / 24_000
    pcm = (np.clip(np.interp(t, np.arange(len(audio)), audio), -1, 1) * 32767).astype("<i2").tobytes()
    step = 4800  # 100 ms at 24 kHz, 2 bytes a sample
    return [base64.b64encode(pcm[i : i + step]).decode() for i in range(0, len(pcm), step)]


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height and whose data is a few bytes (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def _event(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields})


def actions(seed: int, n: int) -> list[tuple]:
    """`n` fuzz actions, reproducible from `seed`: ("send", data, text_frame) or ("close", delay_s)."""
    rng = random.Random(seed)
    base, speech = templates(), _speech_chunks_b64()
    out: list[tuple] = []
    send = lambda data, text=True: out.append(("send", data, text))
    while len(out) < n:
        r = rng.random()
        if r < 0.22:
            send(json.dumps(rng.choice(base)))  # valid: the session must really work
        elif r < 0.60:
            ev = rng.choice(base)
            for _ in range(rng.randrange(1, 4)):
                ev = mutate(rng, ev)
            send(json.dumps(ev))
        elif r < 0.63:
            send(rng.choice(["", "{", "null", "[]", '"x"', '{"type":', "1e999"]))
        elif r < 0.65:
            depth = rng.randrange(100, 20_000)
            send("[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth)
        elif r < 0.66:
            send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), False)
        elif r < 0.68:  # megabytes: within the message limit (4 MB) and over it
            text = "x" * rng.choice([1_000_000, 3_000_000, 5_000_000])
            item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
            send(
                rng.choice(
                    [
                        _event("conversation.item.create", item=item),
                        _event("session.update", session={"instructions": text}),
                    ]
                )
            )
        elif r < 0.70:
            w, h = rng.choice([(50_000, 50_000), (1, 1_000_000), (65_535, 65_535), (4000, 3000)])
            claim = _png_claiming if rng.random() < 0.5 or max(w, h) > 65_535 else _jpeg_claiming
            img = claim(w, h)
            send(_event("input_image_buffer.append", image=base64.b64encode(img).decode()))
        elif r < 0.74:  # a storm of real speech: VAD turns, replies, barge-ins
            start = rng.randrange(len(speech))
            for i in range(rng.randrange(10, 40)):
                send(_event("input_audio_buffer.append", audio=speech[(start + i) % len(speech)]))
        elif r < 0.77:  # VAD flips mid-speech
            td = rng.choice(
                [
                    None,
                    {"type": "server_vad", "threshold": rng.random(), "silence_duration_ms": rng.randrange(1, 2000)},
                    {"type": "semantic_vad", "eagerness": rng.choice(["low", "high", "auto"])},
                    {"type": "server_vad", "create_response": rng.random() < 0.5},
                ]
            )
            send(_event("session.update", session={"audio": {"input": {"turn_detection": td}}}))
        elif r < 0.85:  # replies started between the malformed events
            if rng.random() < 0.5:
                item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
                send(_event("conversation.item.create", item=item))
            send(_event("response.create", response={"max_output_tokens": rng.choice([4, 16, 64, "inf"])}))
            if rng.random() < 0.1:  # a close racing the reply it started
                out.append(("close", rng.choice([0.0, 0.01, 0.05, 0.2])))
        elif r < 0.853:
            send(b'{"type": "session.update", "x": "\xed\xa0\x80\xff"}', True)  # invalid UTF-8: closed 1007
        else:
            send(json.dumps(rng.choice(base)))
    return out[:n]


async def run(url: str, acts: list[tuple], check_every: int, pace_s: float = 0.0) -> dict:
    """Run `acts`, reconnecting whenever a connection ends; after every `check_every` actions the
    live session must answer a `session.update` within CHECK_TIMEOUT_S."""
    import websockets

    codes: Counter = Counter()
    closes: Counter = Counter()
    stalls, checks, connections = [], 0, 0
    state: dict = {}

    async def connect():
        nonlocal connections
        ws = await websockets.connect(url, max_size=None, open_timeout=30)
        connections += 1
        state["ws"], state["answered"] = ws, asyncio.Event()
        state["reader"] = asyncio.create_task(read(ws, state["answered"]))
        return ws

    async def read(ws, answered: asyncio.Event) -> None:
        try:
            async for raw in ws:
                ev = json.loads(raw)
                if ev["type"] == "error":
                    codes[ev["error"]["code"]] += 1
                elif ev["type"] == "session.updated" and ev["session"].get("instructions") == "fuzz check":
                    answered.set()
        except websockets.ConnectionClosed:
            pass
        closes[ws.close_code if ws.close_code is not None else "abrupt"] += 1

    async def ensure():
        ws = state.get("ws")
        if ws is None or ws.state.name in ("CLOSING", "CLOSED"):
            if ws is not None:
                await asyncio.gather(state["reader"], return_exceptions=True)
            ws = await connect()
        return ws

    async def check(i: int) -> None:
        for _ in range(2):  # a connection closed under the check gets one more try on a new one
            ws = await ensure()
            answered = state["answered"]
            answered.clear()
            try:
                await ws.send(_event("session.update", session={"instructions": "fuzz check"}))
            except websockets.ConnectionClosed:
                continue
            waiter = asyncio.ensure_future(answered.wait())
            await asyncio.wait([waiter, state["reader"]], timeout=CHECK_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if answered.is_set():
                return
            if not state["reader"].done():  # open and silent: a stall
                break
        stalls.append({"at": i, "before": [_summary(a) for a in acts[max(0, i - 8) : i]]})

    for i, act in enumerate(acts, 1):
        ws = await ensure()
        try:
            if act[0] == "send":
                await ws.send(act[1], text=act[2])
            else:
                await asyncio.sleep(act[1])
                await ws.close()
        except websockets.ConnectionClosed:
            pass
        if pace_s:
            await asyncio.sleep(pace_s)  # let replies and turns run between messages
        if i % check_every == 0 or i == len(acts):
            checks += 1
            await check(i)
            if stalls:
                break
    ws = state.get("ws")
    if ws is not None:
        await ws.close()
        await asyncio.gather(state["reader"], return_exceptions=True)
    return {
        "messages": len(acts),
        "checks": checks,
        "stalls": stalls,
        "connections": connections,
        "closes": {str(k): v for k, v in closes.most_common()},
        "error_codes": dict(codes.most_common()),
        "internal_errors": codes.get("internal_error", 0),
    }


def _summary(act: tuple) -> str:
    """What an action was, in a few words (for the stall report)."""
    if act[0] == "close":
        return f"close after {act[1]} s"
    data = act[1]
    try:
        kind = json.loads(data).get("type", "?")
    except (ValueError, AttributeError, RecursionError):
        kind = "not an event"
    return f"{kind} ({len(data)} bytes)"


def process_rss_mb(pid: int) -> dict[str, float]:
    """Resident memory of the gateway `pid` and each of its model processes (MB)."""
    out = {"gateway": _rss_mb(pid)}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in Path(f"/proc/{d}/cmdline").read_bytes():
                out[f"model-{d}"] = _rss_mb(int(d))
        except (OSError, ValueError):
            continue
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def bad_log_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if any(b in ln for b in BAD_LOG)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=250)
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--pace-ms", type=float, default=0.0, help="pause between messages")
    ap.add_argument("--settle-s", type=float, default=5.0, help="wait after the sessions close, then measure")
    a = ap.parse_args()
    log_path = Path(f"/tmp/omni-fuzz-server-{a.port}.log")
    log = open(log_path, "w")
    env = dict(os.environ, PYTHONWARNINGS="default")  # "never awaited" and friends reach the log
    p = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(a.port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    url = f"ws://127.0.0.1:{a.port}/v1/realtime"
    try:
        deadline = time.monotonic() + 180
        while "omni: open" not in log_path.read_text():
            assert p.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        warm = [("send", _event("response.create", response={"max_output_tokens": 16}), True), ("close", 3.0)]
        asyncio.run(run(url, warm, check_every=10**9))
        time.sleep(a.settle_s)
        memory = {"before_mb": process_rss_mb(p.pid)}
        t0 = time.monotonic()
        out = asyncio.run(run(url, actions(a.seed, a.messages), a.check_every, a.pace_ms / 1000))
        out["seconds"] = round(time.monotonic() - t0, 1)
        memory["after_mb"] = process_rss_mb(p.pid)
        time.sleep(a.settle_s)  # run() closed its session: the server frees it
        memory["after_close_mb"] = process_rss_mb(p.pid)
    finally:
        p.terminate()
        p.wait(30)
    bad = bad_log_lines(log_path.read_text())
    out.update(memory, bad_log_lines=len(bad), bad_log_sample=bad[:5], log=str(log_path))
    print(json.dumps({"bench": "fuzz", "seed": a.seed, **out}))
    sys.exit(1 if bad or out["stalls"] or out["internal_errors"] else 0)


if __name__ == "__main__":
    main()
