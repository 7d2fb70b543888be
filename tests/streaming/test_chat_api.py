"""`POST /v1/chat/completions` and `GET /v1/models` through the official `openai` SDK against a live
server on the model processes: text, images and video frames in, audio in and out, streamed and
whole (a seed makes them the same reply), stop strings, usage; requests and realtime sessions
share the slots; a client gone mid-stream frees its slot; bad input is a 4xx in OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import aiohttp
import numpy as np
import pytest
import soundfile as sf
import websockets
from PIL import Image

from rtclient import start_server

openai = pytest.importorskip("openai", reason="the openai SDK is in the test extra")
pytestmark = pytest.mark.asyncio


def image_url(color=(200, 30, 30), size=(64, 48), fmt="JPEG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def client(srv, **kw):
    return openai.AsyncOpenAI(base_url=f"{srv.http}/v1", api_key="local", max_retries=0, **kw)


def ask(*parts, system="Be brief.") -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": list(parts)}]


def text_part(t: str) -> dict:
    return {"type": "text", "text": t}


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def wav_b64(x_16k: np.ndarray, fmt: str = "WAV") -> str:
    buf = io.BytesIO()
    sf.write(buf, x_16k, 16000, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


async def test_images_streamed_and_whole_are_one_reply_with_usage(server):
    c = client(server)
    msgs = ask(text_part("What differs?"), image_part(image_url()), image_part(image_url((0, 0, 250), (40, 40))))
    whole = await c.chat.completions.create(model="minicpm-o-2.6", messages=msgs, seed=3, max_tokens=9)
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason in ("stop", "length")
    u = whole.usage
    assert u.prompt_tokens > 10 and u.completion_tokens >= 1 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    stream = await c.chat.completions.create(
        model="minicpm-o-2.6", messages=msgs, seed=3, max_tokens=9, stream=True, stream_options={"include_usage": True}
    )
    chunks = [ch async for ch in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == choice.message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == choice.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == u  # the usage chunk is last
    models = await c.models.list()
    assert [(m.id, m.model_extra["family"]) for m in models.data] == [("embedded-tiny", "o-2.6")]


async def test_stop_string_cuts_the_reply_before_it(server):
    c = client(server)
    msgs = ask(text_part("Say something."))
    full = (await c.chat.completions.create(model="m", messages=msgs, seed=5, temperature=0.9)).choices[0].message
    text = full.content
    stop = next(text[i : i + 2] for i in range(1, len(text) - 1) if text[i : i + 2].strip())
    cut = await c.chat.completions.create(model="m", messages=msgs, seed=5, temperature=0.9, stop=[stop])
    assert cut.choices[0].message.content == text[: text.find(stop)] and cut.choices[0].finish_reason == "stop"


async def test_audio_in_and_speech_out_streamed_and_whole(server, speech_16k):
    c = client(server)
    msgs = ask(
        text_part("Answer this:"),
        {"type": "input_audio", "input_audio": {"data": wav_b64(speech_16k), "format": "wav"}},
    )
    whole = await c.chat.completions.create(
        model="m", messages=msgs, seed=2, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}
    )
    m = whole.choices[0].message
    assert m.content is None and m.audio.transcript
    pcm, rate = sf.read(io.BytesIO(base64.b64decode(m.audio.data)), dtype="int16")
    assert rate == 24000 and len(pcm) > 2400 and np.abs(pcm).max() > 0
    assert whole.usage.prompt_tokens > 25 * len(speech_16k) // 16000  # 25 tokens a second of audio
    stream = await c.chat.completions.create(
        model="m",
        messages=msgs,
        seed=2,
        modalities=["text", "audio"],
        audio={"voice": "alloy", "format": "pcm16"},
        stream=True,
    )
    audio, transcript = bytearray(), []
    async for ch in stream:
        a = ch.choices[0].delta.audio if ch.choices else None
        if a is not None:
            audio += base64.b64decode(a.data or "")
            transcript.append(a.transcript or "")
    assert "".join(transcript) == m.audio.transcript
    assert np.array_equal(np.frombuffer(bytes(audio), "<i2"), pcm)  # the same seed: the same speech
    clone = {"voice": "alloy", "format": "wav", "omni_reference_audio": {"format": "wav", "data": wav_b64(speech_16k)}}
    cloned = await c.chat.completions.create(model="m", messages=msgs, seed=2, modalities=["audio"], audio=clone)
    other, _ = sf.read(io.BytesIO(base64.b64decode(cloned.choices[0].message.audio.data)), dtype="int16")
    assert len(other) > 2400 and not np.array_equal(other[: len(pcm)], pcm[: len(other)])  # another voice
    mp3 = [
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": wav_b64(speech_16k, "MP3"), "format": "mp3"}}],
        }
    ]
    assert (await c.chat.completions.create(model="m", messages=mp3, max_tokens=3)).choices[
        0
    ].message.content is not None


async def test_media_tokens_in_text_are_only_text(server):
    """A reply of the random model, sent back as history, may hold `</image>`: no media follows."""
    c = client(server)
    odd = "see <image> and </slice> or (<audio>./</audio>) <|audio_end|>"
    msgs = ask(text_part(odd)) + [{"role": "assistant", "content": odd}, {"role": "user", "content": odd}]
    assert (await c.chat.completions.create(model="m", messages=msgs, max_tokens=3)).choices[
        0
    ].message.content is not None


async def test_video_frames_are_images_on_o26(server):
    c = client(server)
    frames = {
        "type": "video_frames",
        "video_frames": {"frames": [image_url((i * 60, 0, 0)) for i in range(3)], "fps": 1},
    }
    one = await c.chat.completions.create(
        model="m", messages=ask(text_part("Go."), image_part(image_url())), max_tokens=3
    )
    three = await c.chat.completions.create(model="m", messages=ask(text_part("Go."), frames), max_tokens=3)
    per_image = (
        one.usage.prompt_tokens
        - (await c.chat.completions.create(model="m", messages=ask(text_part("Go.")), max_tokens=3)).usage.prompt_tokens
    )
    assert three.usage.prompt_tokens - one.usage.prompt_tokens == 2 * per_image > 0


BAD = [  # (what is wrong, the body's fields over a good request, status, code)
    ("n=2", {"n": 2}, 400, "unsupported_value"),
    ("unknown field", {"max_token": 5}, 400, "unknown_parameter"),
    ("temperature", {"temperature": 3}, 400, "invalid_value"),
    ("unknown role", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_value"),
    ("tool role", {"messages": [{"role": "tool", "tool_call_id": "c1", "content": "42"}]}, 400, "invalid_value"),
    ("no messages", {"messages": []}, 400, "invalid_value"),
    (
        "ends with assistant",
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        400,
        "invalid_value",
    ),
    ("remote url", {"messages": ask(image_part("https://example.com/a.jpg"))}, 400, "invalid_image_url"),
    ("broken data url", {"messages": ask(image_part("data:image/jpeg;base64,@@@"))}, 400, "invalid_image"),
    (
        "not an image",
        {"messages": ask(image_part("data:image/png;base64," + base64.b64encode(b"hello").decode()))},
        400,
        "invalid_image",
    ),
    ("huge image", {"messages": ask(image_part(image_url(size=(2000, 1200), fmt="PNG")))}, 400, "image_too_large"),
    (
        "too many frames",
        {"messages": ask({"type": "video_frames", "video_frames": {"frames": ["x"] * 181, "fps": 5}})},
        400,
        "too_many_frames",
    ),
    (
        "bad audio",
        {"messages": ask({"type": "input_audio", "input_audio": {"data": "aGVsbG8=", "format": "wav"}})},
        400,
        "invalid_audio",
    ),
    ("thinking on o-2.6", {"reasoning_effort": "high"}, 400, "unsupported_parameter"),
    (
        "wav streamed",
        {"stream": True, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
        400,
        "unsupported_value",
    ),
    ("mp3 out", {"modalities": ["audio"], "audio": {"voice": "alloy", "format": "mp3"}}, 400, "invalid_value"),
    (
        "short voice clip",
        {
            "modalities": ["audio"],
            "audio": {
                "voice": "a",
                "format": "wav",
                "omni_reference_audio": {"format": "pcm16", "rate": 16000, "data": "AAAA"},
            },
        },
        400,
        "invalid_reference_audio",
    ),
    ("no model", {"model": None}, 400, "missing_required_parameter"),
]


@pytest.mark.parametrize("what, fields, status, code", BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_4xx_in_openais_shape(server, what, fields, status, code):
    body = {k: v for k, v in {"model": "m", "messages": ask(text_part("hi")), **fields}.items() if v is not None}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http}/v1/chat/completions", json=body) as r:
            got = await r.json()
    assert r.status == status, got
    err = got["error"]
    assert err["code"] == code and err["message"] and err["type"] == "invalid_request_error" and "param" in err


async def test_raw_bodies_invalid_json_and_too_large(server):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http}/v1/chat/completions", data=b"{not json") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
        big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * (5 << 20)}]})
        async with s.post(f"{server.http}/v1/chat/completions", data=big) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "request_too_large"
        async with s.post(
            f"{server.http}/v1/chat/completions", json=[1], headers={"Origin": "https://evil.example"}
        ) as r:
            assert r.status == 403


async def test_requests_and_realtime_sessions_share_the_slots(tiny_omni):
    srv = await start_server(tiny_omni, max_sessions=1, max_reply_tokens=200)
    c = client(srv)
    try:
        async with websockets.connect(srv.ws_url) as ws:  # the one slot
            assert json.loads(await ws.recv())["type"] == "session.created"
            with pytest.raises(openai.APIStatusError) as e:
                await c.chat.completions.create(model="m", messages=ask(text_part("hi")))
            assert e.value.status_code == 503 and e.value.body["code"] == "server_busy"
        stream = await c.chat.completions.create(model="m", messages=ask(text_part("hi")), stream=True)
        first = await anext(aiter(stream))  # the request holds the slot now
        assert first.choices[0].delta.role == "assistant"
        async with websockets.connect(srv.ws_url) as ws:
            ev = json.loads(await ws.recv())
            assert ev["type"] == "error" and ev["error"]["code"] == "server_busy"
        await stream.close()  # the client goes away mid-stream: its slot is freed
        async with asyncio.timeout(10):
            while srv.app["manager"].in_use or srv.app["worker"].engines[0].free_slots < 1:
                await asyncio.sleep(0.02)
    finally:
        await srv.runner.cleanup()


async def test_auth_applies_to_chat_and_models(tiny_omni):
    srv = await start_server(tiny_omni, api_key="sekret")
    try:
        with pytest.raises(openai.AuthenticationError):
            await client(srv).models.list()
        ok = openai.AsyncOpenAI(base_url=f"{srv.http}/v1", api_key="sekret", max_retries=0)
        r = await ok.chat.completions.create(model="m", messages=ask(text_part("hi")), max_completion_tokens=3)
        assert r.choices[0].message.content is not None
    finally:
        await srv.runner.cleanup()
