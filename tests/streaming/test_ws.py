"""WebSocket `/v1/realtime` with a real `websockets` client and the real tiny model (barge-in,
cancel and truncate timelines: test_scenarios.py, on virtual time)."""

from __future__ import annotations

import asyncio
import base64
import json

import numpy as np
import pytest
import websockets

from rtclient import chunks_b64, engine_session, recv_until, start_server, utterance_24k_pcm16


def ended_normally(response: dict) -> bool:
    """The reply ran to its end: the model's EOS (completed) or the token/speech cap (incomplete;
    the random tiny model never draws EOS)."""
    return response["status"] == "completed" or (
        response["status"] == "incomplete" and response["status_details"]["reason"] == "max_output_tokens"
    )


def types(events):
    return [e["type"] for e in events]


async def send(ws, **ev):
    await ws.send(json.dumps(ev))


@pytest.mark.asyncio
async def test_full_voice_turn_with_server_vad(server, speech_16k):
    async with websockets.connect(server.ws_url) as ws:
        created = json.loads(await ws.recv())
        assert created["type"] == "session.created"
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
            await send(ws, type="input_audio_buffer.append", audio=c)
        await send(ws, type="session.update", session={"omni": {"events": True}})  # [ext] timings
        events = await recv_until(ws, lambda e: e["type"] == "response.omni.timings")
    t = types(events)
    assert (
        t.index("input_audio_buffer.speech_started")
        < t.index("input_audio_buffer.speech_stopped")
        < t.index("input_audio_buffer.committed")
        < t.index("response.created")
        < t.index("response.done")
    )
    deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert deltas, t
    pcm = np.frombuffer(b"".join(base64.b64decode(d["delta"]) for d in deltas), np.int16)
    assert len(pcm) > 2400 and np.abs(pcm).max() > 0  # real 24 kHz speech samples
    done = events[-2]["response"]
    assert ended_normally(done)
    assert events[-1]["response_id"] == done["id"]
    timings = events[-1]["timings"]
    assert timings["first_audio_ms"] > 0 and "unit_prefill_max_ms" in timings
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    assert 700 <= started["audio_start_ms"] <= 1100  # speech begins at 1.0 s (minus padding)


@pytest.mark.asyncio
async def test_manual_commit_turn(server, speech_16k):
    async with websockets.connect(server.ws_url) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        await send(
            ws, type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": None}}}
        )
        upd = await recv_until(ws, lambda e: e["type"] == "session.updated")
        assert upd[-1]["session"]["audio"]["input"]["turn_detection"] is None
        for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.2, 0.2)):
            await send(ws, type="input_audio_buffer.append", audio=c)
        await send(ws, type="input_audio_buffer.commit")
        committed = await recv_until(ws, lambda e: e["type"] == "input_audio_buffer.committed")
        assert "input_audio_buffer.speech_started" not in types(committed)
        await send(ws, type="response.create")
        events = await recv_until(ws, lambda e: e["type"] == "response.done")
    assert "response.output_audio.delta" in types(events)
    assert ended_normally(events[-1]["response"])


BAD_INPUTS = [
    ("{not json", "invalid_json"),
    ("[1, 2]", None),
    (json.dumps({"type": "no.such.event"}), None),
    (json.dumps({"type": "input_audio_buffer.append"}), "missing_required_parameter"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": 5}), None),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "!!!notbase64"}), None),
    (json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()}), None),
    (json.dumps({"type": "input_image_buffer.append", "image": base64.b64encode(b"not an image").decode()}), None),
    (json.dumps({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/flac"}}}}}), None),
    (
        json.dumps({"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 1}),
        "item_not_found",
    ),
    (json.dumps({"type": "response.cancel"}), "response_cancel_not_active"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (5 * 1024 * 1024)}), "message_too_large"),
]


@pytest.mark.asyncio
async def test_bad_inputs_get_error_events_and_the_session_goes_on(server, speech_16k):
    async with websockets.connect(server.ws_url, max_size=None) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        for raw, code in BAD_INPUTS:
            await ws.send(raw)
            ev = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]
            assert ev["error"]["message"], raw[:60]
            if code:
                assert ev["error"]["code"] == code, (raw[:60], ev)
        await ws.send(b"\x00\x01binary")
        ev = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]
        # Still alive: a normal manual turn works afterwards.
        await send(ws, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
        for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.1, 0.1)):
            await send(ws, type="input_audio_buffer.append", audio=c)
        await send(ws, type="response.create")
        events = await recv_until(ws, lambda e: e["type"] == "response.done")
        assert ended_normally(events[-1]["response"])


@pytest.mark.asyncio
async def test_server_full_and_sessions_freed(tiny_omni):
    srv = await start_server(tiny_omni, max_sessions=1)
    try:
        async with websockets.connect(srv.ws_url) as ws1:
            await recv_until(ws1, lambda e: e["type"] == "session.created")
            assert srv.app["manager"].in_use == 1
            async with websockets.connect(srv.ws_url) as ws2:
                ev = json.loads(await ws2.recv())
                assert ev["type"] == "error" and ev["error"]["code"] == "server_busy"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws2.recv()
                assert closed.value.rcvd.code == 1013
        await asyncio.sleep(0.2)
        assert srv.app["manager"].in_use == 0 and not srv.app["conversations"]
        async with websockets.connect(srv.ws_url) as ws3:  # the slot is free again
            assert json.loads(await ws3.recv())["type"] == "session.created"
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_sessions_beyond_what_the_kv_pools_hold_are_refused(tiny_omni):
    """Admission from the engine's capacity: with KV pool memory for 2 sessions (and the background slot), the server admits
    2 (whatever max_sessions says), /healthz says so, and a third gets server_busy, close 1013."""
    import aiohttp
    from omni.batch.engine import slot_bytes
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    per = slot_bytes(tiny_omni, EngineSpec.from_settings(ServerSettings()).slot_tokens)
    # 3.5 slots of memory: 2 sessions and the background slot (user transcripts)
    srv = await start_server(tiny_omni, max_sessions=16, model_lanes=1, kv_cache_gb=3.5 * per / 2**30)
    try:
        async with aiohttp.ClientSession() as http, http.get(srv.http + "/healthz") as r:
            health = await r.json()
        assert health["worker"]["capacity"] == 2 and health["max_sessions"] == 2
        async with websockets.connect(srv.ws_url) as a, websockets.connect(srv.ws_url) as b:
            for ws in (a, b):
                await recv_until(ws, lambda e: e["type"] == "session.created")
            async with websockets.connect(srv.ws_url) as c:
                ev = json.loads(await c.recv())
                assert ev["type"] == "error" and ev["error"]["code"] == "server_busy"
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await c.recv()
                assert closed.value.rcvd.code == 1013
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_readiness_and_one_log_line_per_session_start_and_end(server, speech_16k, caplog):
    """/readyz probes every model process with a real step; a session logs its start and its end
    (id, transport, duration, turns, first-audio p50, engine)."""
    import logging
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(server.http + "/readyz") as r:
        ready = await r.json()
    assert r.status == 200 and ready["ready"] and [e["replica"] for e in ready["engines"]] == ["process-0", "process-1"]
    with caplog.at_level(logging.INFO, logger="omni.gateway"):
        async with websockets.connect(server.ws_url) as ws:
            sid = (await recv_until(ws, lambda e: e["type"] == "session.created"))[-1]["session"]["id"]
            for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
                await send(ws, type="input_audio_buffer.append", audio=c)
            await recv_until(ws, lambda e: e["type"] == "response.done")
        await asyncio.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records if sid in r.getMessage()]
    assert len(lines) == 2 and "start: websocket on process-" in lines[0], lines
    assert " end: websocket, " in lines[1] and ", 1 turn(s), first audio p50 " in lines[1] and "None" not in lines[1]


@pytest.mark.asyncio
async def test_api_key_required(tiny_omni):
    srv = await start_server(tiny_omni, api_key="s3cret")
    try:
        with pytest.raises(websockets.InvalidStatus) as e:
            async with websockets.connect(srv.ws_url):
                pass
        assert e.value.response.status_code == 401
        async with websockets.connect(srv.ws_url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        async with websockets.connect(srv.ws_url, subprotocols=["realtime", "openai-insecure-api-key.s3cret"]) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_idle_session_is_closed_and_freed(tiny_omni):
    """The idle close end to end (1001, everything freed); when the reaper closes which session is
    test_scenarios.py's, on virtual time."""
    srv = await start_server(tiny_omni, idle_timeout_s=0.4)
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await ws.recv()
            assert closed.value.rcvd.code == 1001
        async with asyncio.timeout(10):  # the handler frees it once the close is through
            while srv.app["manager"].in_use or srv.app["conversations"]:
                await asyncio.sleep(0.01)
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_a_long_reply_does_not_block_another_sessions_audio(tiny_omni, speech_16k):
    """Session A generates a long reply; session B's speech is still detected promptly."""
    srv = await start_server(tiny_omni, max_reply_tokens=300, max_speech_s=60.0)
    try:
        async with websockets.connect(srv.ws_url) as a, websockets.connect(srv.ws_url) as b:
            await recv_until(a, lambda e: e["type"] == "session.created")
            await recv_until(b, lambda e: e["type"] == "session.created")
            for c in chunks_b64(utterance_24k_pcm16(speech_16k)):
                await send(a, type="input_audio_buffer.append", audio=c)
            await recv_until(a, lambda e: e["type"] == "response.output_audio.delta")
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.2, 0.2))[:12]:  # 1.2 s of B's audio
                await send(b, type="input_audio_buffer.append", audio=c)
            await recv_until(b, lambda e: e["type"] == "input_audio_buffer.speech_started", timeout=10)
            waited = loop.time() - t0
            a_live = srv.app["manager"].in_use == 2
        assert a_live and waited < 2.0, waited
    finally:
        await srv.runner.cleanup()


@pytest.mark.asyncio
async def test_tls_self_signed_serves_wss(tiny_omni, tmp_path, monkeypatch):
    """`--tls-self-signed`: the page and /v1/realtime over TLS (what an iPad on the LAN needs)."""
    import ssl
    from aiohttp import web
    from streaming.server import build_app, ssl_context
    from streaming.settings import ServerSettings

    monkeypatch.setenv("HOME", str(tmp_path))  # the throwaway cert goes to ~/.cache
    settings = ServerSettings(tls_self_signed=True, max_reply_tokens=6, max_speech_s=1.0)
    ctx = ssl_context(settings)
    assert ctx is not None and (tmp_path / ".cache" / "omni" / "tls" / "self-signed.crt").is_file()
    runner = web.AppRunner(build_app(settings, tiny_omni, embedded=True))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # self-signed on purpose
    try:
        async with websockets.connect(f"wss://127.0.0.1:{port}/v1/realtime", ssl=client) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
        # a plain-text client is refused: the TLS server answers its HTTP upgrade with no HTTP
        with pytest.raises(websockets.exceptions.InvalidMessage):
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime", open_timeout=3):
                pass
    finally:
        await runner.cleanup()


@pytest.mark.asyncio
async def test_camera_frame_joins_the_current_unit(tiny_omni, speech_16k):
    """`input_image_buffer.append` (extension): the frame is prefilled with the 1-s unit it falls
    in; with `omni.video` off it is refused and units carry no frame."""
    import io
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    server = await start_server(tiny_omni)  # in-process engine: the session is reachable
    try:
        async with websockets.connect(server.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            (conv,) = server.app["conversations"]
            frames = []
            engine = await engine_session(conv)
            unit = engine.unit_program
            engine.unit_program = lambda audio, frame=None: (frames.append(frame), unit(audio, frame))[1]
            await send(ws, type="session.update", session={"audio": {"input": {"turn_detection": None}}})
            await recv_until(ws, lambda e: e["type"] == "session.updated")
            await send(ws, type="input_image_buffer.append", image=png)
            for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.0, 0.0))[:12]:  # 1.2 s of audio
                await send(ws, type="input_audio_buffer.append", audio=c)
            await send(ws, type="input_audio_buffer.commit")
            await recv_until(ws, lambda e: e["type"] == "input_audio_buffer.committed")
            assert len(frames) == 2 and all(f is not None and f.size == (64, 48) for f in frames), frames
            await send(ws, type="session.update", session={"omni": {"video": False}})
            await recv_until(ws, lambda e: e["type"] == "session.updated")
            await send(ws, type="input_image_buffer.append", image=png)
            err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]
            assert err["error"]["code"] == "video_disabled"
            for c in chunks_b64(utterance_24k_pcm16(speech_16k, 0.0, 0.0))[:10]:
                await send(ws, type="input_audio_buffer.append", audio=c)
            await send(ws, type="input_audio_buffer.commit")
            await recv_until(ws, lambda e: e["type"] == "input_audio_buffer.committed")
            assert frames[2:] == [None]
    finally:
        await server.runner.cleanup()


@pytest.mark.asyncio
async def test_a_dead_model_process_closes_its_sessions_and_the_server_goes_on(tiny_omni, speech_16k):
    """Forced fault: the model process under a live conversation is killed. The client gets an
    `error` (model_process_died) and close 1011; the process is replaced and a new connection holds
    a full voice turn."""
    from streaming.engines.procs import ProcessWorker
    from streaming.server import checkpoint_dir
    from streaming.settings import ServerSettings
    from streaming.engines.worker import EngineSpec

    worker = ProcessWorker(checkpoint_dir(ServerSettings()), EngineSpec.from_settings(ServerSettings(model_lanes=1)))
    srv = await start_server(tiny_omni, worker=worker)
    talk = chunks_b64(utterance_24k_pcm16(speech_16k))
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            for c in talk[:12]:  # units reach the model
                await send(ws, type="input_audio_buffer.append", audio=c)
            await asyncio.sleep(0.3)
            worker._lanes[0].proc.kill()
            events = []

            async def read():
                try:
                    while True:
                        events.append(json.loads(await ws.recv()))
                except websockets.ConnectionClosed:
                    pass

            reader = asyncio.create_task(read())
            with pytest.raises(websockets.ConnectionClosed):
                for c in talk[12:]:
                    await send(ws, type="input_audio_buffer.append", audio=c)
                    await asyncio.sleep(0.02)
            await asyncio.wait_for(reader, 30)
            errors = [e["error"] for e in events if e["type"] == "error"]
            assert errors and errors[0]["code"] == "model_process_died", events
            assert "Reconnect" in errors[0]["message"]
            assert ws.close_code == 1011
        async with websockets.connect(srv.ws_url) as ws:  # the server goes on
            await recv_until(ws, lambda e: e["type"] == "session.created")
            for c in talk:
                await send(ws, type="input_audio_buffer.append", audio=c)
            events = await recv_until(ws, lambda e: e["type"] == "response.done")
            assert "response.output_audio.delta" in types(events) and ended_normally(events[-1]["response"])
    finally:
        await srv.runner.cleanup()
        worker.close()


@pytest.mark.asyncio
async def test_healthz_describes_the_server(server, tiny_omni):
    import aiohttp

    threads = await start_server(tiny_omni, model_lanes=1)  # the GPU shape: one engine thread
    try:
        async with aiohttp.ClientSession() as http:
            health = []
            for srv in (server, threads):
                async with http.get(srv.http + "/healthz") as r:
                    assert r.status == 200
                    health.append(await r.json())
    finally:
        await threads.runner.cleanup()
    h = health[0]
    assert h["status"] == "ok" and h["embedded_demo_model"] is True and h["auth_required"] is False
    assert h["worker"] == {
        "kind": "processes",
        "lanes": 2,
        "batched": True,
        "max_batch": 32,
        "capacity": 16,
        "plan": None,
    }
    assert h["max_sessions"] == 16 and "--model" in h["load_model_hint"]
    assert health[1]["worker"] == {
        "kind": "threads",
        "lanes": 1,
        "batched": True,
        "max_batch": 32,
        "capacity": 16,
        "plan": None,
    }


@pytest.mark.asyncio
async def test_g711_text_items_clear_and_delete_in_a_live_session(server, speech_16k):
    """The protocol paths besides a plain voice turn, against the model: G.711 μ-law in and out,
    buffer clear, a text item answered in text only, a spoken answer to it, and the refused delete."""
    from streaming.gateway.codecs import float_to_pcm16, resample, ulaw_encode

    x = np.concatenate([speech_16k, np.zeros(3200, np.float32)])
    ulaw = ulaw_encode(float_to_pcm16(resample(x, 16000, 8000)))
    async with websockets.connect(server.ws_url) as ws:
        await recv_until(ws, lambda e: e["type"] == "session.created")
        await send(
            ws,
            type="session.update",
            session={
                "omni": {"events": True},
                "audio": {
                    "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                    "output": {"format": {"type": "audio/pcmu"}},
                },
            },
        )
        upd = (await recv_until(ws, lambda e: e["type"] == "session.updated"))[-1]
        assert upd["session"]["audio"]["output"]["format"]["type"] == "audio/pcmu"
        await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(ulaw[:4000]).decode())
        await send(ws, type="input_audio_buffer.clear")
        await recv_until(ws, lambda e: e["type"] == "input_audio_buffer.cleared")
        for i in range(0, len(ulaw), 800):  # 100 ms of 8-kHz μ-law each
            await send(ws, type="input_audio_buffer.append", audio=base64.b64encode(ulaw[i : i + 800]).decode())
        await send(ws, type="input_audio_buffer.commit")
        committed = (await recv_until(ws, lambda e: e["type"] == "input_audio_buffer.committed"))[-1]
        await send(
            ws,
            type="conversation.item.create",
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And in words?"}]},
        )
        added = await recv_until(
            ws, lambda e: e["type"] == "conversation.item.done" and e["item"]["content"][0]["type"] == "input_text"
        )
        assert added[-1]["previous_item_id"] == committed["item_id"]  # after the audio turn
        await send(
            ws,
            type="response.create",
            response={"output_modalities": ["text"], "temperature": 0.3, "metadata": {"topic": "words"}},
        )
        text_reply = await recv_until(ws, lambda e: e["type"] == "response.done")
        kinds = types(text_reply)
        assert "response.output_text.delta" in kinds and "response.output_audio.delta" not in kinds
        assert ended_normally(text_reply[-1]["response"])
        assert text_reply[0]["response"]["metadata"] == text_reply[-1]["response"]["metadata"] == {"topic": "words"}
        await send(ws, type="response.create")
        spoken = await recv_until(ws, lambda e: e["type"] == "response.done")
        deltas = [base64.b64decode(e["delta"]) for e in spoken if e["type"] == "response.output_audio.delta"]
        n = sum(len(d) for d in deltas)  # one byte per 8-kHz sample
        timings = (await recv_until(ws, lambda e: e["type"] == "response.omni.timings"))[-1]["timings"]
        assert n > 800 and abs(n - timings["audio_ms"] * 8) <= 2  # one stream
        await send(ws, type="conversation.item.delete", item_id=committed["item_id"])
        err = (await recv_until(ws, lambda e: e["type"] == "error"))[-1]
        assert err["error"]["param"] == "item_id"
        await send(ws, type="response.create")  # the session goes on
        again = await recv_until(ws, lambda e: e["type"] == "response.done")
        assert ended_normally(again[-1]["response"])


@pytest.mark.asyncio
async def test_audio_in_a_created_item_reaches_the_model_at_16k(tiny_omni, speech_16k):
    """`conversation.item.create` with `input_audio` in the session's format (24-kHz PCM16 or
    8-kHz μ-law) is resampled to the model's 16 kHz, like streamed audio."""
    from streaming.gateway.codecs import float_to_pcm16, resample, ulaw_encode

    srv = await start_server(tiny_omni)  # in-process engine: the session is reachable
    try:
        async with websockets.connect(srv.ws_url) as ws:
            await recv_until(ws, lambda e: e["type"] == "session.created")
            (conv,) = srv.app["conversations"]
            session = await engine_session(conv)
            seen, prefill = [], session.prefill_program
            session.prefill_program = lambda msg, *rest: (seen.append(msg), prefill(msg, *rest))[1]
            pcm = float_to_pcm16(resample(speech_16k, 16000, 24000)).tobytes()
            ulaw = ulaw_encode(float_to_pcm16(resample(speech_16k, 16000, 8000)))
            for fmt, data in (("audio/pcm", pcm), ("audio/pcmu", ulaw)):
                await send(ws, type="session.update", session={"audio": {"input": {"format": {"type": fmt}}}})
                await recv_until(ws, lambda e: e["type"] == "session.updated")
                await send(
                    ws,
                    type="conversation.item.create",
                    item={
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_audio", "audio": base64.b64encode(data).decode()}],
                    },
                )
                await recv_until(ws, lambda e: e["type"] == "conversation.item.done")
        clips = [c for msg in seen if msg["role"] == "user" for c in msg["content"] if isinstance(c, np.ndarray)]
        assert len(clips) == 2 and all(abs(len(c) - len(speech_16k)) <= 16 for c in clips), [len(c) for c in clips]
    finally:
        await srv.runner.cleanup()
