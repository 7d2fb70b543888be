"""Protocol fuzz against a live server (one JSON line): seeded random client messages, valid
events mutated (fields dropped, retyped, nulled, unknown ones added, deep nesting, garbage frames,
long strings), sent to one session; after every `--check-every` messages the session must answer
a valid `session.update` within 10 s. Counts error codes, `internal_error`s and stalls.

    python bench/fuzz.py [--messages 10000] [--seed 1] [--check-every 250] [--pace-ms 0] [--port 8791]

`messages(seed, n)` is the generator the test suite uses too (tests/streaming/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
B64 = base64.b64encode(bytes(range(256))).decode()
PCM = base64.b64encode(b"\x00\x10" * 2400).decode()  # 100 ms of 24 kHz PCM16
CHECK_TIMEOUT_S = 10.0


def _templates() -> list[dict]:
    text_item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    return [
        {"type": "session.update", "session": {"instructions": "Be brief."}},
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}},
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}},
        },
        {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "x"}}}}},
        {"type": "session.update", "session": {"output_modalities": ["text"], "omni": {"video": False, "seed": 3}}},
        {
            "type": "session.update",
            "session": {"audio": {"output": {"omni_reference_audio": {"format": "pcm16", "rate": 16000, "data": B64}}}},
        },
        {"type": "input_audio_buffer.append", "audio": PCM},
        {"type": "input_audio_buffer.append", "audio": PCM},
        {"type": "input_audio_buffer.commit"},
        {"type": "input_audio_buffer.clear"},
        {"type": "input_image_buffer.append", "image": B64},
        {"type": "conversation.item.create", "item": text_item},
        {"type": "conversation.item.create", "item": {**text_item, "role": "system"}},
        {"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 100},
        {"type": "conversation.item.delete", "item_id": "item_x"},
        {"type": "conversation.item.retrieve", "item_id": "item_x"},
        {"type": "response.create", "response": {"max_output_tokens": 8}},
        {"type": "response.create"},
        {"type": "response.cancel"},
    ]


def _junk(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 10**30, 7])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-9, 3.0])
    if kind == 4:
        return "".join(rng.choice('aZ09 _.-\u00e9\u4e2d\U0001f600\\"') for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return rng.choice(["", "x" * rng.randrange(1, 100_000), B64, "data:image/png;base64," + B64, "inf"])
    if kind == 6 and depth < 4:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 7 and depth < 4:
        return {
            rng.choice(["type", "audio", "item", "session", "x", "content", "role"]): _junk(rng, depth + 1)
            for _ in range(rng.randrange(0, 4))
        }
    return rng.choice(["session.update", "message", "user", "assistant", "input_text", "server_vad", "audio/pcm"])


def _mutate(rng: random.Random, obj):
    """One random change somewhere inside `obj` (a copy)."""
    obj = json.loads(json.dumps(obj))
    paths, stack = [], [(obj, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                paths.append((node, k))
                stack.append((v, path + [k]))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                paths.append((node, i))
                stack.append((v, path + [i]))
    if not paths:
        return obj
    parent, key = rng.choice(paths)
    op = rng.randrange(4)
    if op == 0 and isinstance(parent, dict):
        del parent[key]
    elif op == 1 and isinstance(parent, dict):
        parent[rng.choice(["bogus", "event_id", "metadata", "type", "omni"])] = _junk(rng)
    else:
        parent[key] = _junk(rng)
    return obj


def messages(seed: int, n: int) -> list[str | bytes]:
    """`n` fuzzed client messages (text frames; a few binary ones), reproducible from `seed`."""
    rng = random.Random(seed)
    base = _templates()
    out: list[str | bytes] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.03:
            out.append(
                rng.choice(["", "{", "null", "[]", '"x"', '{"type":', "1e999", b'{"type": "\xed\xa0\x80"}'])
            )  # a lone surrogate: bytes a client can send
        elif r < 0.05:
            depth = rng.randrange(100, 20_000)
            out.append("[" * depth + "]" * depth if rng.random() < 0.5 else '{"a":' * depth + "1" + "}" * depth)
        elif r < 0.06:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))))
        elif r < 0.35:
            out.append(json.dumps(rng.choice(base)))  # valid: the session must really work
        else:
            ev = rng.choice(base)
            for _ in range(rng.randrange(1, 4)):
                ev = _mutate(rng, ev)
            out.append(json.dumps(ev))
    return out


async def run(url: str, msgs: list, check_every: int, pace_s: float = 0.0) -> dict:
    """Send `msgs` on one session; after each `check_every`, a session.update must be answered."""
    import websockets

    codes: Counter = Counter()
    stalls, checks = [], 0
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()

        async def drain():
            while True:
                ev = json.loads(await ws.recv())
                if ev["type"] == "error":
                    codes[ev["error"]["code"]] += 1
                if ev["type"] == "session.updated" and ev["session"].get("instructions") == "fuzz check":
                    return

        reader = None
        for i, m in enumerate(msgs, 1):
            await ws.send(m)
            if pace_s:
                await asyncio.sleep(pace_s)  # let replies and turns run between messages
            if i % check_every == 0 or i == len(msgs):
                checks += 1
                await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "fuzz check"}}))
                t = time.monotonic()
                try:
                    await asyncio.wait_for(drain(), CHECK_TIMEOUT_S)
                except TimeoutError:
                    stalls.append(i)
                    break
                if time.monotonic() - t > CHECK_TIMEOUT_S:
                    stalls.append(i)
        del reader
    return {
        "messages": len(msgs),
        "checks": checks,
        "stalls": stalls,
        "error_codes": dict(codes.most_common()),
        "internal_errors": codes.get("internal_error", 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check-every", type=int, default=250)
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--pace-ms", type=float, default=0.0, help="pause between messages")
    a = ap.parse_args()
    log = open("/tmp/omni-fuzz-server.log", "w")
    p = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", "--port", str(a.port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 180
        while "omni: open" not in Path("/tmp/omni-fuzz-server.log").read_text():
            assert p.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.5)
        t0 = time.monotonic()
        out = asyncio.run(
            run(f"ws://127.0.0.1:{a.port}/v1/realtime", messages(a.seed, a.messages), a.check_every, a.pace_ms / 1000)
        )
        out["seconds"] = round(time.monotonic() - t0, 1)
    finally:
        p.terminate()
        p.wait(30)
    text = Path("/tmp/omni-fuzz-server.log").read_text()
    out["tracebacks_in_log"] = text.count("Traceback (most recent call last)")
    print(json.dumps({"bench": "fuzz", "seed": a.seed, **out}))


if __name__ == "__main__":
    main()
