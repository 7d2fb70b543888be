"""The Realtime API with MiniCPM-V 4.5 (the tiny `embedded:minicpmv-4_5`): a real server, a real
websockets client. Text sessions (no VAD, no audio), camera frames by capture time at `video_fps`,
typed turns, streamed text replies equal to the V-4.5 session driven directly, thinking as [ext]
reasoning events, barge-in by cancel or a new turn, frames held during a reply, video stats."""

from __future__ import annotations

import asyncio
import base64
import fractions
import io
import json
import time

import av
import numpy as np
import pytest
import pytest_asyncio
import websockets
from aiortc.mediastreams import VideoStreamTrack
from PIL import Image

from rtclient import recv_until, start_server

GOLDEN_FRAMES = "tests/assets/golden/tiny-v45-a/video_frame{}.png"
QUESTION = "What is happening?"


@pytest.fixture(scope="module")
def v45_omni():
    from streaming.server import load_model
    from streaming.settings import ServerSettings

    omni, _ = load_model(ServerSettings(model="embedded:minicpmv-4_5"))
    return omni


@pytest.fixture(scope="module")
def images():
    return [Image.open(GOLDEN_FRAMES.format(i)).convert("RGB") for i in range(4)]


def png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless: the server decodes the same pixels
    return base64.b64encode(buf.getvalue()).decode()


@pytest_asyncio.fixture
async def v45_server(v45_omni):
    s = await start_server(v45_omni, max_reply_tokens=24)
    yield s
    await s.runner.cleanup()


async def send(ws, **ev) -> None:
    await ws.send(json.dumps(ev))


async def opened(ws, **omni) -> dict:
    """The session.created object, after an update of `omni` when given (its session.updated)."""
    (created,) = await recv_until(ws, lambda e: True, timeout=10)
    assert created["type"] == "session.created"
    return await update(ws, **omni) if omni else created["session"]


async def update(ws, **omni) -> dict:
    await send(ws, type="session.update", session={"omni": omni})
    (ev,) = await recv_until(ws, lambda e: e["type"] == "session.updated", timeout=10)
    return ev["session"]


async def ask(ws, text: str = QUESTION) -> list[dict]:
    await send(
        ws,
        type="conversation.item.create",
        item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    )
    await send(ws, type="response.create")
    return await recv_until(ws, lambda e: e["type"] in ("response.done", "error"))


def deltas(events: list[dict], kind: str = "response.output_text.delta") -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


def only_conv(server):
    (conv,) = server.app["conversations"]
    return conv


def direct_reply(m, seed, frames, question, tokens, thinking=False, pack=3, usage=None) -> str:
    """The same conversation on a V-4.5 session driven directly (no server); `usage` (a list)
    gets the reply's (prompt tokens, tokens sampled)."""
    from omni.session.v45 import ReplyOptions, V45Session

    s = V45Session(m, seed=seed)
    s.set_system(None)
    for img, t_s in frames:
        s.append_frame(img, t_s, pack)
    s.prefill({"role": "user", "content": [question]})
    text = "".join(t for t, _ in s.generate(ReplyOptions(thinking, None, tokens)))
    if usage is not None:
        usage.append(s.reply_usage)
    return text


@pytest.mark.asyncio
async def test_session_created_is_a_text_session_with_the_v45_fields(v45_server):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(v45_server.http + "/healthz") as r:
            assert (await r.json())["family"] == "v-4.5"
    async with websockets.connect(v45_server.ws_url) as ws:
        s = await opened(ws)
        assert s["model"] == "minicpm-v-4.5" and s["output_modalities"] == ["text"]
        assert s["audio"]["input"]["turn_detection"] is None and s["audio"]["input"]["transcription"] is None
        assert {k: s["omni"][k] for k in ("video_fps", "video_pack_frames", "thinking")} == {
            "video_fps": 2,
            "video_pack_frames": 3,
            "thinking": False,
        }
        s = await update(ws, video_fps=6, video_pack_frames=1, thinking=True)
        assert (s["omni"]["video_fps"], s["omni"]["video_pack_frames"], s["omni"]["thinking"]) == (6, 1, True)
        await send(ws, type="session.update", session={"omni": {"video_fps": 7}})
        (err,) = await recv_until(ws, lambda e: e["type"] == "error")
        assert err["error"]["code"] == "invalid_value" and err["error"]["param"] == "session.omni.video_fps"


REFUSED = [
    ({"type": "session.update", "session": {"output_modalities": ["audio"]}}, "session.output_modalities"),
    ({"type": "session.update", "session": {"modalities": ["text", "audio"]}}, "session.modalities"),
    (
        {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}}},
        "session.audio.input.turn_detection",
    ),
    ({"type": "session.update", "session": {"turn_detection": {"type": "semantic_vad"}}}, "session.turn_detection"),
    (
        {"type": "session.update", "session": {"audio": {"input": {"transcription": {"model": "x"}}}}},
        "session.audio.input.transcription",
    ),
    ({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0\0" * 2400).decode()}, "type"),
    ({"type": "input_audio_buffer.commit"}, "type"),
    ({"type": "input_audio_buffer.clear"}, "type"),
    ({"type": "conversation.item.truncate", "item_id": "item_x", "content_index": 0, "audio_end_ms": 0}, "type"),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]},
        },
        "item.content",
    ),
    ({"type": "response.create", "response": {"output_modalities": ["audio"]}}, "response.output_modalities"),
]


@pytest.mark.asyncio
async def test_audio_asks_are_refused_naming_the_model_and_the_session_goes_on(v45_server, images):
    async with websockets.connect(v45_server.ws_url) as ws:
        before = await opened(ws)
        for ev, param in REFUSED:
            await ws.send(json.dumps({**ev, "event_id": "evt_1"}))
            (err,) = await recv_until(ws, lambda e: e["type"] in ("error", "session.updated"))
            assert err["type"] == "error", ev
            e = err["error"]
            assert (e["type"], e["code"], e["param"], e["event_id"]) == (
                "invalid_request_error",
                "unsupported_for_model",
                param,
                "evt_1",
            ), ev
            assert "MiniCPM-V 4.5" in e["message"]
        after = await update(ws, seed=3)  # the session is as it was
        assert after["output_modalities"] == before["output_modalities"] == ["text"]
        assert after["audio"]["input"]["turn_detection"] is None
        await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
        events = await ask(ws)
        assert events[-1]["type"] == "response.done" and deltas(events)


@pytest.mark.asyncio
async def test_o26_sessions_refuse_the_v45_fields_and_do_not_show_them(tiny_omni):
    s = await start_server(tiny_omni)
    try:
        async with websockets.connect(s.ws_url) as ws:
            created = await opened(ws)
            assert "video_fps" not in created["omni"] and created["model"] == "minicpm-o-2.6"
            await send(ws, type="session.update", session={"omni": {"video_fps": 2, "thinking": False}})
            (ok,) = await recv_until(ws, lambda e: e["type"] in ("session.updated", "error"))
            assert ok["type"] == "session.updated"  # the defaults are accepted
            for name, value in (("video_fps", 4), ("video_pack_frames", 6), ("thinking", True)):
                await send(ws, type="session.update", session={"omni": {name: value}})
                (err,) = await recv_until(ws, lambda e: e["type"] in ("session.updated", "error"))
                assert err["error"]["code"] == "unsupported_parameter"
                assert err["error"]["param"] == f"session.omni.{name}" and "MiniCPM-o 2.6" in err["error"]["message"]
    finally:
        await s.runner.cleanup()


@pytest.mark.asyncio
async def test_frames_and_a_typed_question_stream_the_reply_the_session_gives_directly(v45_server, v45_omni, images):
    seed, t0 = 11, 5_000.0
    async with websockets.connect(v45_server.ws_url) as ws:
        await opened(ws, seed=seed, events=True)
        sent = []
        for i in range(8):  # at 4 fps: every other one reaches the model (video_fps 2)
            t_ms = t0 + 250.0 * i
            await send(ws, type="input_image_buffer.append", image=png_b64(images[i % 4]), captured_ms=t_ms)
            sent.append((images[i % 4], t_ms / 1000.0))
        events = await ask(ws)
        done = events[-1]
        assert done["type"] == "response.done", events[-1]
        text = deltas(events)
        assert text and done["response"]["output"][0]["content"][0]["text"] == text
        types = [e["type"] for e in events if e["type"].startswith("response.")]
        assert types[:3] == ["response.created", "response.output_item.added", "response.content_part.added"]
        assert types[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ]
        usage = done["response"]["usage"]
        assert usage["output_tokens"] >= 1 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        stats = [e for e in events if e["type"] == "omni.video.stats"]
        assert stats and stats[0]["frames_total"] >= 1
    kept, counts = sent[::2], []
    assert text == direct_reply(v45_omni, seed, kept, QUESTION, 24, usage=counts)
    assert counts == [(usage["input_tokens"], usage["output_tokens"])]
    # two packs (3 frames, then 1 flushed by the question) of query_num tokens each
    assert usage["input_tokens"] > 2 * v45_omni.config.query_num


@pytest.mark.asyncio
async def test_thinking_goes_out_as_reasoning_events_never_as_text(v45_server, v45_omni, images):
    seed = 5
    want = direct_reply(v45_omni, seed, [(images[0], 1.0)], QUESTION, 24, thinking=True)
    assert want.startswith("<think>\n")
    reasoning, _, content = want[len("<think>\n") :].partition("</think>")
    for events_on in (True, False):
        async with websockets.connect(v45_server.ws_url) as ws:
            await opened(ws, seed=seed, thinking=True, events=events_on)
            await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=1000)
            events = await ask(ws)
            assert events[-1]["type"] == "response.done"
            text = deltas(events)
            assert "<think>" not in text and "</think>" not in text and text == content.lstrip("\n")
            got = deltas(events, "response.reasoning_text.delta")
            if events_on:
                assert got == reasoning
                (done,) = [e for e in events if e["type"] == "response.reasoning_text.done"]
                assert done["text"] == reasoning
            else:
                assert not got and not any("reasoning" in e["type"] for e in events)


def spy_commands(conv) -> list:
    """The engine commands a conversation sends, in order (the real handle, recorded)."""
    log, run = [], conv.engine._run

    async def recorded(op, *args, **kw):
        log.append((op, args[1] if op == "frame" else args[0] if op == "cut" else None))
        return await run(op, *args, **kw)

    conv.engine._run = recorded
    return log


@pytest.mark.asyncio
async def test_cancel_cuts_the_reply_to_the_text_delivered_and_frames_during_it_are_held(v45_omni, images):
    s = await start_server(v45_omni, max_reply_tokens=4000)  # the random tiny model rarely stops early
    try:
        async with websockets.connect(s.ws_url) as ws:
            await opened(ws, seed=2)
            log = spy_commands(only_conv(s))
            await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
            await send(
                ws,
                type="conversation.item.create",
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
            )
            await send(ws, type="response.create")
            events = await recv_until(ws, lambda e: e["type"] == "response.output_text.delta")
            for i in range(3):  # frames while the reply streams: held
                await send(ws, type="input_image_buffer.append", image=png_b64(images[i]), captured_ms=1000 + 500 * i)
            await asyncio.sleep(0.2)
            assert [op for op, _ in log].count("frame") == 1  # none reached the engine during the reply
            await send(ws, type="response.cancel")
            events += await recv_until(ws, lambda e: e["type"] == "response.done")
            done = events[-1]["response"]
            assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
            delivered = deltas(events)
            assert done["output"][0]["content"][0]["text"] == delivered
            events = await ask(ws, "And now?")
            assert events[-1]["type"] == "response.done"
            assert events[-1]["response"]["status"] in ("completed", "incomplete")
        ops = [op for op, _ in log]
        cut = ops.index("cut")
        # after the cut: the held frames in capture order, then the question, then the reply
        assert log[cut] == ("cut", len(delivered))
        assert log[cut + 1 : cut + 4] == [("frame", 1.0), ("frame", 1.5), ("frame", 2.0)]
        assert ops[cut + 4 : cut + 6] == ["prefill", "generate"]
        assert "frame" not in ops[ops.index("generate") : cut]  # nothing but reply steps during the reply
    finally:
        await s.runner.cleanup()


@pytest.mark.asyncio
async def test_a_new_typed_turn_during_a_reply_cancels_it_and_is_answered(v45_omni, images):
    s = await start_server(v45_omni, max_reply_tokens=4000)
    try:
        async with websockets.connect(s.ws_url) as ws:
            await opened(ws, seed=4)
            await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
            await send(
                ws,
                type="conversation.item.create",
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
            )
            await send(ws, type="response.create")
            await recv_until(ws, lambda e: e["type"] == "response.output_text.delta")
            await send(
                ws,
                type="conversation.item.create",
                item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Stop."}]},
            )
            events = await recv_until(ws, lambda e: e["type"] == "response.done")
            assert events[-1]["response"]["status"] == "cancelled"
            await recv_until(ws, lambda e: e["type"] == "conversation.item.done" and e["item"]["role"] == "user")
            await send(ws, type="response.create", response={"max_output_tokens": 5})
            events = await recv_until(ws, lambda e: e["type"] == "response.done")
            assert events[-1]["response"]["status"] in ("completed", "incomplete")
    finally:
        await s.runner.cleanup()


@pytest.mark.asyncio
async def test_video_stats_report_the_frames_reaching_the_model(v45_server, images):
    async with websockets.connect(v45_server.ws_url) as ws:
        await opened(ws, events=True, video_fps=2, video_pack_frames=2)
        frame, stats = png_b64(images[0]), []
        t0 = time.monotonic()
        while (now := time.monotonic()) - t0 < 3.2:  # 6 fps from the camera, 2 fps to the model
            await send(ws, type="input_image_buffer.append", image=frame, captured_ms=1000 * now)
            await asyncio.sleep(1 / 6)
        await send(ws, type="conversation.item.retrieve", item_id="item_none")  # a marker: all handled
        events = await recv_until(ws, lambda e: e["type"] == "error")
        stats = [e for e in events if e["type"] == "omni.video.stats"]
        assert 3 <= len(stats) <= 4  # once a second while frames flow
        last = stats[-1]
        assert 5 <= last["frames_total"] <= 7 and last["packs_total"] == last["frames_total"] // 2
        assert 1.5 <= last["fps"] <= 2.5


class TimedCamera(VideoStreamTrack):
    """10 fps of 320x240 frames whose times are their capture times (90 kHz, as a browser's)."""

    t0: float | None = None

    async def recv(self):
        await asyncio.sleep(0.1)
        self.t0 = self.t0 or time.monotonic()
        frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 128, np.uint8), format="rgb24")
        frame.pts = int((time.monotonic() - self.t0) * 90_000)
        frame.time_base = fractions.Fraction(1, 90_000)
        return frame


@pytest.mark.asyncio
async def test_webrtc_camera_frames_reach_the_model_at_video_fps_and_a_typed_turn_is_answered(v45_server):
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(TimedCamera())  # no microphone: a V-4.5 call is camera and events
    channel = pc.createDataChannel("oai-events")
    events: asyncio.Queue = asyncio.Queue()
    channel.on("message", lambda m: events.put_nowait(json.loads(m)))

    async def until(pred, timeout=30.0) -> list[dict]:
        seen = []
        async with asyncio.timeout(timeout):
            while not seen or not pred(seen[-1]):
                seen.append(await events.get())
        return seen

    try:
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(
                v45_server.http + "/v1/realtime/calls",
                data=pc.localDescription.sdp,
                headers={"Content-Type": "application/sdp"},
            ) as r:
                assert r.status == 201, await r.text()
                await pc.setRemoteDescription(RTCSessionDescription(sdp=await r.text(), type="answer"))
        (created,) = await until(lambda e: True)
        assert created["session"]["output_modalities"] == ["text"]
        channel.send(json.dumps({"type": "session.update", "session": {"omni": {"events": True, "video_fps": 2}}}))
        stats = [e for e in await until(lambda e: e["type"] == "omni.video.stats" and e["frames_total"] >= 5)]
        call = only_conv(v45_server).call
        t0 = time.monotonic()
        await asyncio.sleep(2.0)
        n0 = call.frames_in
        await asyncio.sleep(2.0)
        rate = (call.frames_in - n0) / 2.0  # the camera sends 10 fps: about 2 a second get through
        assert 1.0 <= rate <= 3.0, rate
        assert stats[-1]["fps"] <= 3.0 and time.monotonic() - t0 < 10
        channel.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]},
                }
            )
        )
        channel.send(json.dumps({"type": "response.create"}))
        seen = await until(lambda e: e["type"] in ("response.done", "error"))
        assert seen[-1]["type"] == "response.done", seen[-1]
        assert seen[-1]["response"]["usage"]["input_tokens"] > 2 * 16
    finally:
        await pc.close()


@pytest.mark.asyncio
async def test_omni_serve_runs_a_v45_model_and_its_sessions(images):
    """The refusal is lifted: `omni serve` on the tiny V-4.5 (model processes on a CPU) answers a
    camera frame and a typed question."""
    import urllib.request

    from rtclient import free_port, omni_serve

    port = free_port()
    p, lines = omni_serve("--port", str(port), "--model", "embedded:minicpmv-4_5")
    try:
        assert any("omni: open" in ln for ln in lines), lines
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10))
        assert health["family"] == "v-4.5"
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime") as ws:
            created = await opened(ws)
            assert created["model"] == "minicpm-v-4.5"
            await send(ws, type="input_image_buffer.append", image=png_b64(images[0]))  # arrival time
            events = await ask(ws)
            assert events[-1]["type"] == "response.done", events[-1]
            assert events[-1]["response"]["usage"]["input_tokens"] > 0
    finally:
        p.terminate()
        p.wait(30)
        p.stderr.close()


def test_the_frame_gate_keeps_video_fps_by_capture_time_however_the_camera_jitters():
    import random

    from streaming.session.v45_frames import FrameGate

    rng = random.Random(0)
    for camera_fps in (30, 24, 10, 6):
        for fps in (1, 2, 3, 6):
            gate, kept = FrameGate(), []
            for i in range(camera_fps * 20):  # 20 s of camera, +-5 ms of jitter
                t = i / camera_fps + rng.uniform(-0.005, 0.005)
                if gate.admit(t, fps):
                    kept.append(t)
            want = min(fps, camera_fps) * 20
            assert abs(len(kept) - want) <= max(2, 0.1 * want), (camera_fps, fps, len(kept))
            assert all(b > a for a, b in zip(kept, kept[1:]))


@pytest.mark.asyncio
async def test_bad_frames_video_off_and_deleting_the_latest_reply(v45_server, images):
    async with websockets.connect(v45_server.ws_url) as ws:
        await opened(ws, seed=1)
        await send(ws, type="response.create")  # nothing to answer yet
        (err,) = await recv_until(ws, lambda e: e["type"] == "error")
        assert err["error"]["code"] == "input_missing"
        await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=-5)
        (err,) = await recv_until(ws, lambda e: e["type"] == "error")
        assert (err["error"]["code"], err["error"]["param"]) == ("invalid_value", "captured_ms")
        await update(ws, video=False)
        await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
        (err,) = await recv_until(ws, lambda e: e["type"] == "error")
        assert err["error"]["code"] == "video_disabled"
        await update(ws, video=True)
        await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
        first = await ask(ws)
        usage_1 = first[-1]["response"]["usage"]
        item_id = first[-1]["response"]["output"][0]["id"]
        await send(ws, type="conversation.item.delete", item_id=item_id)
        (deleted,) = await recv_until(ws, lambda e: e["type"] in ("conversation.item.deleted", "error"))
        assert deleted["type"] == "conversation.item.deleted" and deleted["item_id"] == item_id
        await send(ws, type="response.create")  # the same question again: the same context as before
        again = await recv_until(ws, lambda e: e["type"] in ("response.done", "error"))
        assert again[-1]["response"]["usage"]["input_tokens"] == usage_1["input_tokens"]
        await send(ws, type="conversation.item.delete", item_id=item_id)  # gone already
        (err,) = await recv_until(ws, lambda e: e["type"] == "error")
        assert err["error"]["code"] == "unsupported_operation"


@pytest.mark.asyncio
async def test_frames_held_during_a_reply_that_ends_by_itself_follow_it(v45_omni, images):
    s = await start_server(v45_omni, max_reply_tokens=300)
    try:
        async with websockets.connect(s.ws_url) as ws:
            await opened(ws, seed=2)
            log = spy_commands(only_conv(s))
            await send(ws, type="input_image_buffer.append", image=png_b64(images[0]), captured_ms=0)
            await send(ws, type="response.create")  # about the frame alone
            await recv_until(ws, lambda e: e["type"] == "response.output_text.delta")
            for i in range(2):
                await send(ws, type="input_image_buffer.append", image=png_b64(images[i]), captured_ms=1000 + 500 * i)
            done = await recv_until(ws, lambda e: e["type"] == "response.done")
            assert done[-1]["response"]["status"] != "cancelled"
            async with asyncio.timeout(5):
                while [op for op, _ in log].count("frame") < 3:
                    await asyncio.sleep(0.01)
        ops = [op for op, _ in log]
        last_step = len(ops) - 1 - ops[::-1].index("reply_step")
        assert log[last_step + 1 :] == [("frame", 1.0), ("frame", 1.5)]  # after the reply, no other input
        assert "cut" not in ops
    finally:
        await s.runner.cleanup()


@pytest.mark.asyncio
@pytest.mark.parametrize("seed,pace_s", [(21, 0.0), (22, 0.002)])
async def test_fuzzed_v45_sessions_never_break(v45_server, caplog, seed, pace_s):
    """bench/fuzz.py's stream (audio storms included: all refused here) against a V-4.5 server."""
    import gc
    import logging
    import warnings

    from bench.fuzz import BAD_LOG, actions, run

    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = await run(v45_server.ws_url, actions(seed, 1500), check_every=250, pace_s=pace_s)
        gc.collect()
    assert out["stalls"] == [] and out["checks"] >= 4, out
    assert out["internal_errors"] == 0, out
    assert out["error_codes"].get("unsupported_for_model", 0) > 10, out
    bad = [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    bad += [str(w.message) for w in caught if any(b in str(w.message) for b in BAD_LOG)]
    assert not bad, bad[:5]


@pytest.mark.asyncio
async def test_the_openai_sdk_holds_a_typed_conversation_with_v45(v45_server, images):
    """The official `openai` SDK (its typed events parse everything we send) asks about an image
    in a typed turn and reads the streamed text and the usage; an audio ask is refused."""
    openai = pytest.importorskip("openai", reason="the openai SDK is in the test extra")
    client = openai.AsyncOpenAI(api_key="not-needed-locally", websocket_base_url=f"ws://127.0.0.1:{v45_server.port}/v1")
    async with client.realtime.connect(model="minicpm-v-4.5") as conn:
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "instructions": "Brief."})
        image = "data:image/png;base64," + png_b64(images[1])
        for _turn in range(2):
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": image}, {"type": "input_text", "text": QUESTION}],
                }
            )
            await conn.response.create()
            text = []
            async with asyncio.timeout(60):
                async for event in conn:
                    if event.type == "error":
                        pytest.fail(f"server error: {event.error}")
                    if event.type == "response.output_text.delta":
                        text.append(event.delta)
                    if event.type == "response.done":
                        assert event.response.status in ("completed", "incomplete")
                        assert event.response.usage.output_tokens >= 1
                        break
            assert "".join(text) == event.response.output[0].content[0].text
        await conn.session.update(session={"type": "realtime", "output_modalities": ["audio"]})
        async with asyncio.timeout(10):
            async for event in conn:
                if event.type in ("error", "session.updated"):
                    break
        assert event.type == "error" and event.error.code == "unsupported_for_model"
