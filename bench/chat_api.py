"""Chat Completions figures (one JSON line), tiny model on this CPU by default.

* `levels`: a short image question (a 320x240 camera-like JPEG and one sentence, 8 reply tokens, streamed)
  at concurrency 1, 8 and 32, two ways on the same model processes, A B A B: `direct`, the
  engine work itself (an `EngineHandle` per request: system prompt, the prefill of the decoded
  image and text, the reply's steps), and `api`, the same request through `POST
  /v1/chat/completions` of an in-process server (HTTP, JSON, base64 and JPEG decoding, SSE),
  read as raw SSE by an aiohttp client in a process of its own. Per level: requests/s and time to
  the first text (p50/p95) of each, the gateway process's CPU per request, `api_overhead_ms_p50`
  (api minus direct p50) and the requests/s ratio. The target: the API adds <= 5 ms p50 at
  concurrency 8. On 2 cores the client process and the two model processes share them.
* `mixed` (skip with --no-mixed): against an `omni serve` subprocess (bench/gateway-server.toml),
  8 realtime speech sessions by bench/gateway.py's rule (each streams a turn in real time; held =
  no player underrun over 150 ms, the turn end found within 1.5 s) alone, then again while 8 chat
  clients stream the image question back to back: both `held`, the chat requests done, their
  time to first text.

`--family v45` runs the levels on the tiny MiniCPM-V 4.5 (`embedded:minicpmv-4_5`; `direct` is its
engine plan, streaming/chat/run_v45.py); it has no speech, so no `mixed`.

    python bench/chat_api.py [--family o26|v45] [--levels 1,8,32] [--rounds 2] [--no-mixed] [--port 8791]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
QUESTION = "What is in this picture? Answer in one sentence."
MAX_TOKENS = 8
MODELS = {"o26": None, "v45": "embedded:minicpmv-4_5"}  # --family: the embedded tiny model of each


def jpeg(seed: int = 0) -> bytes:
    """A camera-like 320x240 frame (about 13 KB): smooth gradients, sensor noise, a few shapes.
    Pure noise would cost several times a real frame to decode."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320]
    rgb = np.stack([x * 255 // 320, y * 255 // 240, (x + y) * 255 // 560], -1) + rng.normal(0, 6, (240, 320, 3))
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0, w, h = rng.integers(0, 280), rng.integers(0, 200), rng.integers(20, 80), rng.integers(20, 80)
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def body(data: bytes, stream: bool = True) -> dict:
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    return {"model": "minicpm-o-2.6", "messages": msgs, "max_tokens": MAX_TOKENS, "stream": stream}


def pct(xs, q):
    xs = sorted(x for x in xs if x is not None)
    return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))], 1) if xs else None


async def direct_one(worker, settings, image) -> float | None:
    """The engine work of one request, as streaming/chat/o26.py (or run_v45.py) plans it: ms to the first text."""
    from streaming.chat import o26
    from streaming.chat.complete import FIRST_STEP_SLACK_S, STEP_SLACK_S
    from streaming.chat.request import ChatRequest, Image as ImagePart, Message, Text

    t0 = time.perf_counter()
    req = ChatRequest(
        (Message("system", (Text("Be brief."),)), Message("user", (Text(QUESTION), ImagePart(image)))),
        max_tokens=MAX_TOKENS,
    )
    if settings.model is not None:
        return await direct_v45(worker, settings, req, t0)
    plan = o26.plan(req, settings.max_reply_tokens, settings.max_speech_s)
    h = worker.open_session(settings.max_context_tokens)
    first = None
    deadline_s = time.monotonic() + FIRST_STEP_SLACK_S  # the deadlines chat.complete gives its commands
    try:
        await h.set_system(plan.seed, plan.mode, plan.reference_16k, plan.instructions, deadline_s=deadline_s)
        for msg in plan.prefills:
            await h.prefill(msg, settings.max_item_tokens, deadline_s=deadline_s)
        await h.start_reply(plan.options, deadline_s=deadline_s)
        while (item := await h.reply_step(max(deadline_s, time.monotonic()))) is not None:
            deadline_s = time.monotonic() + STEP_SLACK_S
            if first is None and item[0]:
                first = 1000 * (time.perf_counter() - t0)
    finally:
        h.close()
    return first


async def direct_v45(worker, settings, req, t0: float) -> float | None:
    from streaming.chat import run_v45, v45
    from streaming.chat.complete import FIRST_STEP_SLACK_S, STEP_SLACK_S

    plan, first = v45.plan(req, settings.max_reply_tokens), None
    h = worker.open_session(settings.max_context_tokens)
    due_s = time.monotonic() + FIRST_STEP_SLACK_S
    try:
        await run_v45.prefill(h, plan, None, settings.max_item_tokens, due_s, lambda: None)
        split = run_v45.ReplySplit(False, ())
        async for _, text in run_v45.pieces(h, split, lambda: None, due_s, time.monotonic, STEP_SLACK_S):
            if first is None and text:
                first = 1000 * (time.perf_counter() - t0)
    finally:
        h.close()
    return first


async def api_one(session, url: str, payload: bytes) -> float | None:
    """One streamed request read as raw SSE: ms to the first content delta."""
    t0, first = time.perf_counter(), None
    async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if (
                first is None
                and line.startswith(b"data: {")
                and b'"content": "' in line
                and b'"content": ""' not in line
            ):
                first = 1000 * (time.perf_counter() - t0)
    return first


async def api_level(url: str, c: int, n: int) -> dict:
    """`run_level` of the API in a client process of its own (as a real client is): its HTTP and
    SSE work is not billed to the gateway's interpreter."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        url,
        "--concurrency",
        str(c),
        "--requests",
        str(n),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, "the client process failed"
    return json.loads(out.decode().strip().splitlines()[-1])


async def client_main(url: str, c: int, n: int) -> None:
    import aiohttp

    payload = json.dumps(body(jpeg())).encode()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        one = lambda: api_one(session, url, payload)
        await run_level(one, min(c, 2), 2)  # its connections and code paths warm
        r = await run_level(one, c, n)
    print(json.dumps(r))


async def run_level(one, c: int, n: int) -> dict:
    """`n` requests by `c` concurrent clients back to back: requests/s, first text p50/p95."""
    firsts: list = []
    left = iter(range(n))

    async def client():
        for _ in left:
            firsts.append(await one())

    t0 = time.perf_counter()
    await asyncio.gather(*[client() for _ in range(c)])
    return {"rps": n / (time.perf_counter() - t0), "firsts": firsts}


async def levels(levels_c: list[int], rounds: int, model: str | None = None) -> list[dict]:

    from streaming.engines.procs import ProcessWorker
    from streaming.engines.worker import EngineSpec
    from streaming.server import build_app, checkpoint_dir, runner_options
    from streaming.gateway.codecs import decode_image
    from streaming.settings import ServerSettings
    from aiohttp import web

    settings = ServerSettings(max_sessions=max(levels_c), model_lanes=2, max_reply_tokens=MAX_TOKENS, model=model)
    worker = ProcessWorker(str(checkpoint_dir(settings)), EngineSpec.from_settings(settings))
    app = build_app(settings, None, True, worker=worker)
    runner = web.AppRunner(app, **runner_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/chat/completions"  # type: ignore[union-attr]
    data = jpeg()
    image = decode_image(data, settings.max_image_pixels)
    out = []
    try:
        direct = lambda: direct_one(worker, settings, image)
        ways = {
            "direct": lambda c, n: run_level(direct, c, n),
            "api": lambda c, n: api_level(url, c, n),
        }
        for way in ways.values():  # warm up: both paths, every lane
            await way(2, 4)
        for c in levels_c:
            n = max(32, 4 * c)
            got: dict = {k: {"rps": [], "firsts": [], "cpu_ms": []} for k in ways}
            for _ in range(rounds):
                for k, way in ways.items():
                    cpu0 = time.process_time()
                    r = await way(c, n)
                    got[k]["rps"].append(r["rps"])
                    got[k]["cpu_ms"].append(1000 * (time.process_time() - cpu0) / n)
                    got[k]["firsts"] += r["firsts"]
            point: dict = {"concurrency": c, "requests": n * rounds}
            for k in ways:
                point[k] = {
                    "rps": round(float(np.median(got[k]["rps"])), 2),
                    "first_text_ms_p50": pct(got[k]["firsts"], 0.5),
                    "first_text_ms_p95": pct(got[k]["firsts"], 0.95),
                    "gateway_cpu_ms_per_request": round(float(np.median(got[k]["cpu_ms"])), 2),
                }
            d, a = point["direct"], point["api"]
            point["api_overhead_ms_p50"] = round(a["first_text_ms_p50"] - d["first_text_ms_p50"], 1)
            point["rps_ratio_api_over_direct"] = round(a["rps"] / d["rps"], 3)
            out.append(point)
    finally:
        await runner.cleanup()
        worker.close()
    return out


async def chat_clients(url: str, stop: asyncio.Event, n: int = 8) -> dict:
    import aiohttp

    payload = json.dumps(body(jpeg(1)) | {"max_tokens": 32}).encode()
    firsts: list = []
    done = [0]

    async def client():
        while not stop.is_set():
            firsts.append(await api_one(session, url, payload))
            done[0] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*[client() for _ in range(n)])
    return {"requests": done[0], "first_text_ms_p50": pct(firsts, 0.5), "first_text_ms_p95": pct(firsts, 0.95)}


async def mixed(port: int, sessions: int = 8, chats: int = 8) -> dict:
    import gateway as G

    messages = G.appends(G.utterance_pcm16_24k())
    server = G.start_server(port, sessions + chats, str(REPO / "bench" / "gateway-server.toml"))
    try:
        ws_url, http = f"ws://127.0.0.1:{port}/v1/realtime", f"http://127.0.0.1:{port}/v1/chat/completions"
        alone = await G.level(ws_url, messages, sessions, "vad", False)
        stop = asyncio.Event()
        chat = asyncio.create_task(chat_clients(http, stop, chats))
        await asyncio.sleep(1.0)  # the chat clients are streaming before the speech starts
        together = await G.level(ws_url, messages, sessions, "vad", False)
        stop.set()
        chat_result = await chat
    finally:
        server.terminate()
        server.wait(60)
    keep = ("held", "eos_to_first_audio_ms_p95", "max_underrun_ms", "max_stop_lag_s")
    return {
        "realtime_sessions": sessions,
        "chat_clients": chats,
        "realtime_alone": {k: alone[k] for k in keep},
        "realtime_with_chat": {k: together[k] for k in keep},
        "chat": chat_result,
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=sorted(MODELS), default="o26")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-mixed", action="store_true")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--client", help=argparse.SUPPRESS)  # the API's client process (api_level)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--requests", type=int, default=16, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return await client_main(a.client, a.concurrency, a.requests)
    model = MODELS[a.family]
    result: dict = {"bench": "chat_api", "model": model or "embedded-tiny", "device": "cpu", "worker": "processes x2"}
    result["levels"] = await levels([int(x) for x in a.levels.split(",")], a.rounds, model)
    if not a.no_mixed and model is None:  # realtime speech sessions: o-2.6 only
        result["mixed"] = await mixed(a.port)
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
