"""Gateway figures (one JSON line), tiny model on this CPU by default.

* `overhead_ms_per_unit`: service CPU per 1 s of user audio that is not model time (JSON parse,
  base64, 24->16 kHz resampling, VAD, chunking, protocol): CPU time of the event-loop thread,
  in-process, 100-ms appends; the model lanes are other threads.
* `eos_to_first_audio_ms`: end of speech as decided by the VAD (`speech_stopped`) -> first
  `response.output_audio.delta`, both timed at the client of a live server (p50/p95).
* `concurrency`: N WebSocket sessions streaming speech in real time against one `omni serve`
  (a subprocess, so clients do not share its interpreter; `server_worker` says how it runs the
  model: on a CPU one model process per core by default); per level the p95 end-of-speech ->
  first audio, and whether every session was held in real time: a player that starts at the first
  audio chunk and plays in real time never waits more than 150 ms for the next chunk, and the
  turn end is detected within 1.5 s. `knee_sessions` is the largest N held. All sessions end their
  turns at the same moment, so all replies are generated at once: the worst case.

  With `--turns manual` the sessions stream their audio with no VAD, then all send
  `input_audio_buffer.commit` + `response.create` at the same moment; first audio is timed from then.

  With `--transcribe` every level runs twice, back to back: as above, then with user transcripts
  on (`audio.input.transcription`); the second adds `transcript_ms_p50/p95` (turn end ->
  `...input_audio_transcription.completed`) and its own first-audio p95, to compare within one run.
  With `--tools` likewise, the second with function tools defined (`tool_choice: auto`: the model
  may call, the random tiny one never does), so the cost of tools defined but unused shows.

    python bench/gateway.py [--levels 1,2,4,8,12,16] [--turns vad|manual] [--transcribe] [--tools]
                            [--port 8790] [--config bench/gateway-server.toml]
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
UNDERRUN_BUDGET_MS = 150  # what the page's jitter buffer absorbs without an audible gap


def utterance_pcm16_24k(lead_s=1.0, tail_s=1.5) -> bytes:
    from streaming.gateway.codecs import float_to_pcm16, resample

    speech, _ = sf.read(str(SPEECH), dtype="float32")
    x = np.concatenate([np.zeros(int(lead_s * 16000), np.float32), speech, np.zeros(int(tail_s * 16000), np.float32)])
    return float_to_pcm16(resample(x, 16000, 24000)).tobytes()


def appends(pcm: bytes) -> list[str]:
    step = 2 * 24000 * CHUNK_MS // 1000
    return [
        json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + step]).decode()})
        for i in range(0, len(pcm), step)
    ]


async def overhead_per_unit(messages: list[str], audio_s: float) -> float:
    """In-process: CPU time of the event-loop thread (JSON, base64, resampling, VAD, chunking,
    protocol) per second of user audio; the model lanes are other threads and are not counted."""
    from streaming.gateway.boundary import dispatch
    from streaming.gateway.inbound import Inbound
    from streaming.gateway.outbound import WireEvents
    from streaming.playout import ClockPlayout
    from streaming.server import load_model
    from streaming.session.conversation import Conversation
    from streaming.settings import ServerSettings
    from streaming.turn.vad import SileroVAD
    from streaming.engines.worker import EngineSpec, EngineWorker

    settings = ServerSettings(max_reply_tokens=3, max_speech_s=0.5, max_sessions=1, model_lanes=1)
    omni, _ = load_model(settings)
    worker = EngineWorker(omni, EngineSpec.from_settings(settings))

    async def send(ev):
        pass

    conv = Conversation(worker, settings, WireEvents(send), ClockPlayout(), SileroVAD())
    inbound = Inbound(conv, settings.max_image_pixels)
    await conv.start()
    await dispatch(
        inbound,
        json.dumps(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "create_response": False}}}},
            }
        ),
        send,
        settings.max_message_bytes,
    )  # VAD on, no replies
    for m in messages[:5]:  # warm up (first VAD/resampler calls)
        await dispatch(inbound, m, send, settings.max_message_bytes)
    t0 = time.thread_time()
    for m in messages:
        await dispatch(inbound, m, send, settings.max_message_bytes)
    loop_cpu = time.thread_time() - t0
    await conv.close()
    worker.close()
    return 1000.0 * loop_cpu / audio_s


WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "days"],
    },
}


async def one_session(
    url: str,
    messages: list[str],
    realtime: bool,
    together: asyncio.Barrier | None = None,
    transcribe: bool = False,
    tool_choice: str | None = None,
) -> dict:
    """One user turn. `together`: manual turns (no VAD), every session's commit + response.create
    sent at the same moment once all have streamed their audio (the issue's worst case); the turn
    end is then that moment. `tool_choice`: a function tool defined, with this choice (`required`:
    the reply is a call, `eos_to_args_ms` is when its arguments are done)."""
    import websockets

    out = {"eos_to_audio_ms": None, "stop_lag_s": None, "audio_rate": None, "ok": False, "max_gap_ms": None}
    arrivals: list[tuple[float, int]] = []  # (arrival time, samples received before this delta)
    async with websockets.connect(url, max_size=None) as ws:
        await ws.recv()
        session: dict = {"omni": {"events": True}}  # [ext] response.omni.timings
        if together is not None:
            session["audio"] = {"input": {"turn_detection": None}}
        if transcribe:
            session.setdefault("audio", {}).setdefault("input", {})["transcription"] = {"model": "minicpm-o-2.6"}
        if tool_choice is not None:
            session.update(tools=[WEATHER_TOOL], tool_choice=tool_choice)
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        t_start = time.perf_counter()
        n = 0
        t_stop = t_first = t_last = None
        timed = False
        audio_samples = 0

        async def sender():
            nonlocal n, t_stop
            for i, m in enumerate(messages):
                if realtime:
                    await asyncio.sleep(max(0.0, t_start + i * CHUNK_MS / 1000 - time.perf_counter()))
                await ws.send(m)
                n = i + 1
            if together is not None:
                await together.wait()
                t_stop = time.perf_counter()
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                await ws.send(json.dumps({"type": "response.create"}))

        task = asyncio.create_task(sender())
        speech_end_s = len(messages) * CHUNK_MS / 1000 - 1.5
        if together is not None:
            out["stop_lag_s"] = 0.0
        async with asyncio.timeout(120):
            async for raw in ws:
                ev = json.loads(raw)
                now = time.perf_counter()
                if ev["type"] == "input_audio_buffer.speech_stopped":
                    t_stop = now
                    out["stop_lag_s"] = now - t_start - speech_end_s
                elif ev["type"] == "response.output_audio.delta":
                    t_first = t_first or now
                    t_last = now
                    arrivals.append((now, audio_samples))
                    audio_samples += len(base64.b64decode(ev["delta"])) // 2
                elif ev["type"] == "response.function_call_arguments.done" and t_stop:
                    out.setdefault("eos_to_args_ms", 1000 * (now - t_stop))
                elif ev["type"] == "response.done":  # the tiny model never draws EOS: capped = fine
                    out["ok"] = ev["response"]["status"] in ("completed", "incomplete")
                elif ev["type"] == "response.omni.timings":  # right after response.done
                    out["server_first_audio_ms"] = ev["timings"].get("first_audio_ms")
                    timed = True
                elif ev["type"] == "conversation.item.input_audio_transcription.completed":
                    out["transcript_ms"] = 1000 * (now - t_stop) if t_stop else None
                elif ev["type"] == "conversation.item.input_audio_transcription.failed":
                    out["transcript_ms"] = None  # counted as missing
                if timed and (not transcribe or "transcript_ms" in out):
                    break
        await task
    if t_stop and t_first:
        out["eos_to_audio_ms"] = 1000 * (t_first - t_stop)
        gen_s = max(t_last - t_stop, 1e-3)
        out["audio_rate"] = (audio_samples / 24000) / gen_s
        # A player that starts at the first chunk and plays in real time: how long would it
        # have waited for a chunk at worst (an underrun)? 0 = the session was held in real time.
        out["max_gap_ms"] = max(0.0, max(1000 * ((t - t_first) - before / 24000) for t, before in arrivals))
    return out


def start_server(port: int, max_sessions: int, config: str | None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "streaming.cli", "serve", "--port", str(port), "--max-sessions", str(max_sessions)]
    p = subprocess.Popen(
        cmd + (["--config", config] if config else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in p.stderr:
        if "omni: open" in line:
            return p
    raise RuntimeError("server did not start")


def pct(xs, q):
    xs = sorted(x for x in xs if x is not None)
    return round(xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))], 1) if xs else None


async def level(
    url: str, messages: list[str], n: int, turns: str, transcribe: bool, tool_choice: str | None = None
) -> dict:
    """n sessions at once, each one turn in real time: held?, first audio, underruns."""
    together = asyncio.Barrier(n) if turns == "manual" else None
    runs = await asyncio.gather(
        *[
            one_session(url, messages, realtime=True, together=together, transcribe=transcribe, tool_choice=tool_choice)
            for _ in range(n)
        ]
    )
    held = all(
        r["ok"]
        and r["max_gap_ms"] is not None
        and r["max_gap_ms"] <= UNDERRUN_BUDGET_MS
        and r["stop_lag_s"] is not None
        and r["stop_lag_s"] < 1.5
        for r in runs
    )
    point = {
        "sessions": n,
        "held": held,
        "eos_to_first_audio_ms_p95": pct([r["eos_to_audio_ms"] for r in runs], 0.95),
        "server_first_audio_ms_p95": pct([r.get("server_first_audio_ms") for r in runs], 0.95),
        "min_audio_rate_x": round(min((r["audio_rate"] or 0) for r in runs), 2),
        "max_underrun_ms": round(max((r["max_gap_ms"] if r["max_gap_ms"] is not None else 1e9) for r in runs), 1),
        "max_stop_lag_s": round(max((99 if r["stop_lag_s"] is None else r["stop_lag_s"]) for r in runs), 2),
    }
    if transcribe:
        point["transcript_ms_p50"] = pct([r.get("transcript_ms") for r in runs], 0.5)
        point["transcript_ms_p95"] = pct([r.get("transcript_ms") for r in runs], 0.95)
        point["transcripts"] = sum(r.get("transcript_ms") is not None for r in runs)
    if tool_choice == "required":
        point["eos_to_args_done_ms_p50"] = pct([r.get("eos_to_args_ms") for r in runs], 0.5)
        point["eos_to_args_done_ms_p95"] = pct([r.get("eos_to_args_ms") for r in runs], 0.95)
    return point


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1,2,4,8,12,16")
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument(
        "--config",
        default=str(REPO / "bench" / "gateway-server.toml"),
        help="server settings TOML for the server under test",
    )
    ap.add_argument(
        "--turns",
        choices=("vad", "manual"),
        default="vad",
        help="vad: server VAD ends every turn at once; manual: all commit + response.create at once",
    )
    ap.add_argument(
        "--transcribe", action="store_true", help="run every level again with user transcripts on, to compare"
    )
    ap.add_argument("--tools", action="store_true", help="run every level again with tools defined (auto), to compare")
    a = ap.parse_args()
    pcm = utterance_pcm16_24k()
    messages = appends(pcm)
    audio_s = len(pcm) / 2 / 24000
    result = {
        "bench": "gateway",
        "model": "embedded-tiny",
        "device": "cpu",
        "turns": a.turns,
        "overhead_ms_per_unit": round(await overhead_per_unit(messages, audio_s), 2),
    }
    levels = [int(x) for x in a.levels.split(",")]
    from streaming.settings import load_settings

    s = load_settings(a.config)
    result["server_worker"] = f"{s.worker_kind} x{s.lanes}"
    server = start_server(a.port, max(levels), a.config)
    try:
        url = f"ws://127.0.0.1:{a.port}/v1/realtime"
        solo = [await one_session(url, messages, realtime=False) for _ in range(5)]
        result["eos_to_first_audio_ms_p50"] = pct([s["eos_to_audio_ms"] for s in solo], 0.5)
        result["eos_to_first_audio_ms_p95"] = pct([s["eos_to_audio_ms"] for s in solo], 0.95)
        curve, knee = [], 0
        for n in levels:
            point = await level(url, messages, n, a.turns, transcribe=False)
            if point["held"]:
                knee = n
            if a.transcribe:
                point["with_transcripts"] = await level(url, messages, n, a.turns, transcribe=True)
            if a.tools:
                point["with_tools"] = await level(url, messages, n, a.turns, transcribe=False, tool_choice="auto")
            curve.append(point)
        result["concurrency"] = curve
        result["knee_sessions"] = knee
    finally:
        server.terminate()
        server.wait(60)  # a Ray worker shuts its local cluster down too
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
