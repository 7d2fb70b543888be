"""Helpers for gateway tests: client audio, event waiting, an in-process server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "golden" / "tiny-a"


def utterance_24k_pcm16(speech_16k: np.ndarray, lead_s=1.0, tail_s=1.5) -> bytes:
    """Silence, the speech clip, silence: PCM16 at 24 kHz (the OpenAI Realtime input format)."""
    from streaming.gateway.codecs import float_to_pcm16, resample

    x = np.concatenate(
        [np.zeros(int(lead_s * 16000), np.float32), speech_16k, np.zeros(int(tail_s * 16000), np.float32)]
    )
    return float_to_pcm16(resample(x, 16000, 24000)).tobytes()


def chunks_b64(pcm: bytes, ms: int = 100, rate: int = 24000) -> list[str]:
    step = 2 * rate * ms // 1000
    return [base64.b64encode(pcm[i : i + step]).decode() for i in range(0, len(pcm), step)]


class Server:
    def __init__(self, runner, port, app):
        self.runner, self.port, self.app = runner, port, app

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def start_server(omni, worker=None, **overrides) -> Server:
    """`worker`: a shared worker the caller closes; default: the app's own lane threads on `omni`."""
    from aiohttp import web
    from streaming.server import build_app, runner_options
    from streaming.settings import ServerSettings

    settings = ServerSettings(**{"max_reply_tokens": 12, "max_speech_s": 2.0, **overrides})
    app = build_app(settings, omni, embedded=True, worker=worker)
    runner = web.AppRunner(app, **runner_options(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return Server(runner, port, app)


async def engine_session(conv, timeout_s: float = 5.0):
    """The in-process engine's `Session` of a conversation, once the engine has opened it."""
    async with asyncio.timeout(timeout_s):
        while conv.engine.session is None:
            await asyncio.sleep(0.005)
    return conv.engine.session


async def recv_until(ws, pred, timeout=60.0) -> list[dict]:
    """Events until one satisfies `pred` (inclusive)."""
    events = []
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            events.append(ev)
            if pred(ev):
                return events


def force_long_replies(monkeypatch) -> None:
    """Forced fault for barge-in tests: replies never end by themselves (the official
    `force_no_stop` TTS debug flag), so the random tiny model cannot finish before the user cuts in."""
    import dataclasses
    import streaming.session.respond as respond_mod

    real = respond_mod.GenerateOptions
    monkeypatch.setattr(
        respond_mod, "GenerateOptions", lambda **kw: dataclasses.replace(real(**kw), force_no_stop=True)
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def omni_serve(*args: str, timeout_s: float = 120.0):
    """`omni serve ARGS` as a user runs it (a subprocess), once it printed its address:
    (the process, the lines it printed to stderr so far). The caller stops it."""
    import subprocess
    import sys
    import time

    p = subprocess.Popen(
        [sys.executable, "-m", "streaming.cli", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines, t0 = [], time.monotonic()
    for line in p.stderr:
        lines.append(line)
        if "omni: open" in line or time.monotonic() - t0 > timeout_s:
            break
    return p, lines
