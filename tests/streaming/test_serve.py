"""`omni serve` as a user runs it: a subprocess on the embedded model, with its model processes;
/healthz and a WebSocket session answer, and Ctrl-C (SIGINT) stops it with its processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest
import websockets

from rtclient import free_port, omni_serve


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(d))
            except OSError:
                pass
    return kids


@pytest.mark.asyncio
async def test_omni_serve_starts_answers_and_stops_with_its_model_processes():
    from streaming.settings import ServerSettings

    lanes = ServerSettings().lanes  # one per core (2 on the CI machine)
    if ServerSettings().worker_kind != "processes":
        pytest.skip("a single-core machine runs the model on a thread")
    port = free_port()
    p, lines = omni_serve("--port", str(port))
    try:
        assert any(f"model ready ({lanes} lane(s), processes, room for 16 session(s)" in ln for ln in lines), lines
        assert any("weights float32, quantization none, kernel dense" in ln for ln in lines), lines
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))
        plan = health["worker"].pop("plan")
        assert (
            health["worker"] == {"kind": "processes", "lanes": lanes, "batched": True, "max_batch": 32, "capacity": 16}
            and health["embedded_demo_model"]
        )
        assert plan["kind"] == "processes" and "one per core" in plan["reason"], plan
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        models = [k for k in _children(p.pid) if b"spawn_main" in open(f"/proc/{k}/cmdline", "rb").read()]
        assert len(models) == lanes, models
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{k}") for k in models) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(os.path.exists(f"/proc/{k}") for k in models), "model processes outlived the server"
    finally:
        if p.poll() is None:
            p.kill()
        p.stderr.close()


@pytest.mark.asyncio
async def test_sigterm_with_live_sessions_closes_them_1001_and_exits_within_10_s():
    port = free_port()
    p, _ = omni_serve("--port", str(port))
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime"
        async with websockets.connect(url) as a, websockets.connect(url) as b:
            for ws in (a, b):
                assert json.loads(await ws.recv())["type"] == "session.created"
            t_term = time.monotonic()
            p.send_signal(signal.SIGTERM)
            for ws in (a, b):
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    async with asyncio.timeout(10):
                        while True:
                            await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001  # a close frame: going away
        assert p.wait(10) == 0 and time.monotonic() - t_term < 10
    finally:
        if p.poll() is None:
            p.kill()
        p.stderr.close()


def test_serving_the_lan_prints_its_address_and_warns_without_a_key():
    port = free_port()
    p, lines = omni_serve("--host", "0.0.0.0", "--port", str(port))
    try:
        from streaming.server import lan_address

        assert any("WARNING" in ln and "no api key" in ln for ln in lines), lines
        assert f"omni: open http://{lan_address()}:{port}/" in lines[-1] and "0.0.0.0" not in lines[-1], lines[-1]
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
        p.stderr.close()
