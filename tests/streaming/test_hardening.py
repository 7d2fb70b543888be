"""Hardening against a live server: cross-origin pages and rebinding hosts are refused (with or
without a key), deep JSON and oversized items get clear errors and the session goes on, /healthz
names no path, and the embedded cache survives two processes building it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import aiohttp
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from rtclient import recv_until, start_server


async def raw_get(port: int, path: str) -> tuple[int, bytes]:
    import asyncio

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return int(data.split(b" ", 2)[1]), data


async def status_of_upgrade(url: str, headers: dict) -> int:
    try:
        async with websockets.connect(url, additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            return 101
    except InvalidStatus as e:
        return e.response.status_code


@pytest.mark.asyncio
@pytest.mark.parametrize("api_key", [None, "s3cret"])
async def test_pages_from_other_origins_and_rebinding_hosts_are_refused(tiny_omni, api_key):
    srv = await start_server(tiny_omni, api_key=api_key)
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    own = f"http://127.0.0.1:{srv.port}"
    try:
        assert await status_of_upgrade(srv.ws_url, auth) == 101  # an SDK: no Origin
        assert await status_of_upgrade(srv.ws_url, {**auth, "Origin": own}) == 101  # the page itself
        assert await status_of_upgrade(srv.ws_url, {**auth, "Origin": f"http://localhost:{srv.port}"}) == 101
        for origin in (
            "http://evil.example",
            f"http://evil.example:{srv.port}",
            "null",
            f"http://127.0.0.1:{srv.port + 1}",
            f"https://127.0.0.1:{srv.port}",
        ):
            assert await status_of_upgrade(srv.ws_url, {**auth, "Origin": origin}) == 403, origin
        async with aiohttp.ClientSession() as http:
            form = aiohttp.FormData({"sdp": "v=0\r\nm=audio 9 x\r\n"})  # a form needs no preflight
            async with http.post(
                srv.http + "/v1/realtime/calls", data=form, headers={**auth, "Origin": "http://evil.example"}
            ) as r:
                assert r.status == 403 and (await r.json())["error"]["code"] == "origin_not_allowed"
            # DNS rebinding: evil.example resolving to 127.0.0.1 still says its own name as Host
            for path in ("/v1/realtime/calls", "/healthz", "/"):
                async with http.request(
                    "POST" if "calls" in path else "GET",
                    srv.http + path,
                    headers={**auth, "Host": f"evil.example:{srv.port}"},
                ) as r:
                    assert r.status == 403 and (await r.json())["error"]["code"] == "host_not_allowed", path
        assert srv.app["manager"].in_use == 0
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_allowed_origins_setting_lets_a_named_page_in(tiny_omni):
    srv = await start_server(tiny_omni, allowed_origins="https://app.example, https://other.example")
    try:
        assert await status_of_upgrade(srv.ws_url, {"Origin": "https://app.example"}) == 101
        assert await status_of_upgrade(srv.ws_url, {"Origin": f"http://127.0.0.1:{srv.port}"}) == 403
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_deep_json_and_oversized_items_are_clear_errors_and_the_session_goes_on(server):
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        await ws.send("[" * 50_000 + "]" * 50_000)
        err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]["error"]
        assert err["code"] == "invalid_json" and "nested too deeply" in err["message"]
        long_text = " ".join(f"w{i}" for i in range(6000))  # > max_item_tokens (4096)
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "event_id": "big",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": long_text}]},
                }
            )
        )
        err = (await recv_until(ws, lambda e: e["type"] == "error", timeout=60))[-1]["error"]
        assert err["code"] == "item_too_large" and "limit is 4096" in err["message"] and err["event_id"] == "big"
        huge = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x" * 3_000_000}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "event_id": "huge", "item": huge}))
        err = (await recv_until(ws, lambda e: e["type"] == "error", timeout=60))[-1]["error"]
        assert err["code"] == "item_too_large" and "at least" in err["message"] and err["event_id"] == "huge", err
        await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Still here?"}}))
        upd = (await recv_until(ws, lambda e: e["type"] in ("session.updated", "error")))[-1]
        assert upd["type"] == "session.updated"


@pytest.mark.asyncio
async def test_media_tokens_in_any_text_are_only_text(server):
    """The model's media tokens in a user item, an assistant item, a call, its result, the
    instructions or a tool's description would mark media that is not there: they are taken out,
    and every item is added and the reply made (they were an internal_error)."""
    odd = "see <image> and </slice> or (<audio>./</audio>) <|audio_start|> <slice>"
    tool = {"type": "function", "name": "f", "description": odd}
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": odd}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": odd}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": json.dumps({"a": odd})},
        {"type": "function_call_output", "call_id": "c1", "output": odd},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": odd}]},
    ]
    async with websockets.connect(server.ws_url) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        session = {"instructions": odd, "tools": [tool], "tool_choice": "none"}
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        await recv_until(ws, lambda e: e["type"] == "session.updated")
        for item in items:
            await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        events = await recv_until(ws, lambda e: e["type"] in ("response.done", "error"))
    assert events[-1]["type"] == "response.done", events[-1]
    assert sum(e["type"] == "conversation.item.done" for e in events) >= len(items)


@pytest.mark.asyncio
async def test_healthz_names_the_checkpoint_folder_not_its_path(tiny_omni):
    from aiohttp import web
    from streaming.server import build_app
    from streaming.settings import ServerSettings

    app = build_app(ServerSettings(model="/home/alice/secret/MiniCPM-o-2_6"), tiny_omni, embedded=False)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as r:
            body = await r.text()
        assert json.loads(body)["model"] == "MiniCPM-o-2_6" and "alice" not in body
        assert json.loads(body)["weights"] == {"dtype": "float32", "quantization": "none", "kernel": "dense"}
    finally:
        await runner.cleanup()


def test_two_processes_building_the_embedded_cache_at_once_both_get_it(tmp_path):
    code = "from omni.embedded import embedded_checkpoint; p = embedded_checkpoint(); print(p)"
    env = {**os.environ, "OMNI_CACHE": str(tmp_path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    (a, _), (b, _) = outs
    assert a.strip() == b.strip() and os.path.isfile(os.path.join(a.strip(), ".complete"))
    leftovers = [n for n in os.listdir(os.path.dirname(a.strip())) if ".tmp" in n]
    assert not leftovers, leftovers


@pytest.mark.asyncio
async def test_fifty_abrupt_disconnects_leave_no_traceback_and_free_every_slot(server, speech_16k, caplog):
    """Clients that vanish (TCP reset) at every stage: right after connecting, mid-turn, mid-reply."""
    import asyncio
    import logging

    from rtclient import chunks_b64, utterance_24k_pcm16

    caplog.set_level(logging.WARNING)
    chunks = chunks_b64(utterance_24k_pcm16(speech_16k, 0.2, 0.8))
    for i in range(50):
        ws = await websockets.connect(server.ws_url)
        await ws.recv()
        if i % 3:
            await ws.send(
                json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
            )
            for c in chunks[: 5 + i % 20]:
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": c}))
        if i % 3 == 2:
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "response.create"}))
            await recv_until(ws, lambda e: e["type"] in ("response.output_audio.delta", "error"))
        ws.transport.abort()  # no close frame: a reset
    async with asyncio.timeout(20):
        while server.app["manager"].in_use or server.app["conversations"]:
            await asyncio.sleep(0.05)
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad][:5]


@pytest.mark.asyncio
async def test_kill_9_of_a_model_process_mid_reply_closes_its_sessions_at_once(tiny_omni, speech_16k):
    """Its sessions get model_process_died and close 1011 at once; the others go on; the dead
    process is reaped (no zombie) and a replacement serves new sessions."""
    import asyncio
    import signal
    import time

    from rtclient import chunks_b64, utterance_24k_pcm16
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    w = ProcessWorker(checkpoint_dir(ServerSettings()), EngineSpec.from_settings(ServerSettings(model_lanes=2)))
    srv = await start_server(tiny_omni, worker=w)
    try:
        async with websockets.connect(srv.ws_url) as a, websockets.connect(srv.ws_url) as b:
            for ws in (a, b):
                await recv_until(ws, lambda e: e["type"] == "session.created")
                await ws.send(
                    json.dumps({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
                )
            await a.send(json.dumps({"type": "session.update", "session": {"instructions": "A"}}))
            await recv_until(a, lambda e: e["type"] == "session.updated")
            conv_a = next(c for c in srv.app["conversations"] if c.config.instructions == "A")
            assert {c.engine.where for c in srv.app["conversations"]} == {"process-0", "process-1"}
            lane = w._lanes[int(conv_a.engine.where.split("-")[1])]
            ws_a, ws_b = a, b
            for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.1, 0.3)):
                await ws_a.send(json.dumps({"type": "input_audio_buffer.append", "audio": c}))
            await ws_a.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws_a.send(json.dumps({"type": "response.create"}))
            await recv_until(ws_a, lambda e: e["type"] == "response.output_audio.delta")
            pid = lane.proc.pid
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)  # forced fault
            events = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(5):
                    while True:
                        events.append(json.loads(await ws_a.recv()))
            closed_s = time.monotonic() - t_kill
            assert closed.value.rcvd.code == 1011 and closed_s < 3, closed_s
            assert any(e["type"] == "error" and e["error"]["code"] == "model_process_died" for e in events)
            await ws_b.send(json.dumps({"type": "session.update", "session": {"instructions": "still here"}}))
            assert (await recv_until(ws_b, lambda e: e["type"] == "session.updated"))[-1]
        async with asyncio.timeout(60):  # replaced
            while not (lane.ready.is_set() and lane.proc.pid != pid):
                await asyncio.sleep(0.1)
        replaced_s = time.monotonic() - t_kill
        with open(f"/proc/{pid}/stat") if os.path.exists(f"/proc/{pid}") else open(os.devnull) as f:
            assert " Z " not in f.read(), "the killed model process is a zombie"
        print(f"closed its session {closed_s:.2f} s after kill -9; replacement ready after {replaced_s:.1f} s")
    finally:
        await srv.runner.cleanup()
        w.close()


@pytest.mark.asyncio
async def test_half_open_and_slow_header_connections_are_closed(tiny_omni):
    import asyncio

    srv = await start_server(tiny_omni, header_timeout_s=1.0)
    try:
        silent = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(20)]
        slow = await asyncio.open_connection("127.0.0.1", srv.port)
        slow[1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends its headers
        async with asyncio.timeout(5):
            for reader, _ in silent + [slow]:
                assert await reader.read() == b""  # closed by the server
        async with aiohttp.ClientSession() as http, http.get(srv.http + "/healthz") as r:
            assert r.status == 200  # a real client is fine
        async with websockets.connect(srv.ws_url) as ws:  # and a session outlives it
            await recv_until(ws, lambda e: e["type"] == "session.created")
            await asyncio.sleep(1.5)
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "x"}}))
            await recv_until(ws, lambda e: e["type"] == "session.updated")
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_no_auth_bypass_and_no_path_traversal(tiny_omni):
    srv = await start_server(tiny_omni, api_key="s3cret")
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Basic czNjcmV0"},
            {"Authorization": "Bearer s3cret2"},
            {"Authorization": "Bearer s3cre"},
            {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.wrong"},
        ):
            assert await status_of_upgrade(srv.ws_url, headers) == 401, headers
        assert await status_of_upgrade(srv.ws_url + "?api_key=s3cret", {}) == 401  # never in a URL
        assert await status_of_upgrade(srv.ws_url, {"Authorization": "Bearer s3cret"}) == 101
        async with aiohttp.ClientSession() as http:
            for path in ("/v1/realtime/", "/v1//realtime", "/%76%31/realtime", "/v1/realtime/calls/../calls"):
                async with http.get(srv.http + path) as r:
                    assert r.status in (401, 404, 405), (path, r.status)
        for path in (
            "/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2fpyproject.toml",
            "/static/../../pyproject.toml",
            "/%2e%2e%2fpyproject.toml",
            "/..\\..\\pyproject.toml",
        ):
            status, body = await raw_get(srv.port, path)  # sent as is, not normalised
            assert status in (400, 403, 404) and b"root:" not in body and b"[project]" not in body, (path, status)
    finally:
        await srv.runner.cleanup()


def test_the_idle_reaper_survives_a_connection_whose_close_fails():
    from streaming.session.manager import SessionManager

    now = [0.0]
    m = SessionManager(4, idle_timeout_s=10, clock=lambda: now[0])
    bad, good = m.acquire(), m.acquire()
    closed = []

    def fail(reason):
        raise RuntimeError("queue full")

    bad.close, good.close = fail, closed.append
    now[0] = 11.0
    assert {lease.session_id for lease in m.expire_idle()} == {bad.session_id, good.session_id}
    assert closed == ["idle timeout"] and m.in_use == 0


@pytest.mark.asyncio
async def test_camera_frames_are_freed_at_once_even_after_model_errors(tiny_omni):
    """Frames reach the model until its context is full (context_full errors from the engine);
    once the session closes no frame is left, without waiting for the cyclic GC. An
    error's traceback held the command's frame, args and future in a cycle: 1080p frames piled up
    (+413 MB in `bench/frames.py`, 0.8 MB now)."""
    import asyncio
    import base64
    import gc
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)).save(buf, "JPEG")
    jpeg = base64.b64encode(buf.getvalue()).decode()
    second = base64.b64encode(np.zeros(24000, "<i2").tobytes()).decode()
    srv = await start_server(tiny_omni, max_context_tokens=512, max_item_tokens=512)
    gc.collect()
    gc.disable()  # what is left must be freed by reference counts
    # images other tests keep (fixtures, caches) are not this session's frames
    before = {id(o) for o in gc.get_objects() if isinstance(o, Image.Image)}

    def held() -> list:
        return [o for o in gc.get_objects() if isinstance(o, Image.Image) and id(o) not in before]

    try:
        async with websockets.connect(srv.ws_url, max_size=None) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            await ws.send(
                json.dumps(
                    {
                        "type": "session.update",
                        "session": {"omni": {"video": True}, "audio": {"input": {"turn_detection": None}}},
                    }
                )
            )
            await recv_until(ws, lambda e: e["type"] == "session.updated")
            errors = []
            for i in range(60):
                await ws.send(json.dumps({"type": "input_image_buffer.append", "image": jpeg}))
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": second}))
                if i % 10 == 9:
                    await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                await asyncio.sleep(0.02)
            await ws.send(json.dumps({"type": "session.update", "session": {"instructions": "Still here?"}}))
            for ev in await recv_until(ws, lambda e: e["type"] == "session.updated", timeout=120):
                if ev["type"] == "error":
                    errors.append(ev["error"]["code"])
            assert errors and set(errors) == {"context_full"}, errors
        async with asyncio.timeout(10):
            while srv.app["conversations"]:
                await asyncio.sleep(0.05)
        for _ in range(50):  # the engine thread closes its side in its own time
            if not held():
                break
            await asyncio.sleep(0.1)
        left = held()
        holders = [type(r).__name__ for o in left for r in gc.get_referrers(o) if r is not left]
        assert not left, f"{len(left)} camera frames still held 5 s after the session closed, by {holders}"
    finally:
        gc.enable()
        await srv.runner.cleanup()
