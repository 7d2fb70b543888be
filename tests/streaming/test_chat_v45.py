"""`POST /v1/chat/completions` on MiniCPM-V 4.5 (the embedded tiny `embedded:minicpmv-4_5`) through
the official `openai` SDK: greedy replies equal the offline `omni.chat_v45.chat()` for the same
messages (an image with history, a video packed by its pack size, thinking), so the engine plan is
the official prompt; streamed == whole; thinking text only in `reasoning_content`; stop strings,
token caps and usage; bad input is a 4xx in OpenAI's shape; a client gone mid-stream frees its
slot, which chat requests share with realtime sessions; `omni serve` starts on the checkpoint."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import urllib.request
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import websockets
from PIL import Image

from rtclient import free_port, omni_serve, start_server

openai = pytest.importorskip("openai", reason="the openai SDK is in the test extra")
pytestmark = pytest.mark.asyncio
MODEL = "embedded:minicpmv-4_5"


@pytest.fixture(scope="module")
def tiny_v45_omni():
    from streaming.server import load_model
    from streaming.settings import ServerSettings

    omni, _ = load_model(ServerSettings(model=MODEL))
    return omni


@pytest_asyncio.fixture
async def server(tiny_v45_omni):
    s = await start_server(tiny_v45_omni, model=MODEL, max_reply_tokens=16)
    yield s
    await s.runner.cleanup()


def picture(seed: int, size=(56, 40)) -> Image.Image:
    g = [(seed * 37 + i * 11) % 256 for i in range(3)]
    img = Image.new("RGB", size, tuple(g))
    img.paste((255 - g[0], g[2], 40), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return img


def data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")  # lossless: the server decodes the very pixels the offline run reads
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def client(srv):
    return openai.AsyncOpenAI(base_url=f"{srv.http}/v1", api_key="local", max_retries=0)


def offline(omni, msgs, max_new_tokens, thinking=False, **video) -> tuple[str, str, int]:
    """The official `chat()` (greedy) and its stream, as (reasoning, content) a server should send,
    and the tokens it sampled."""
    from omni import chat_v45

    system = " ".join(m["content"] for m in msgs if m["role"] == "system")
    turns = [m for m in msgs if m["role"] != "system"]
    whole = chat_v45.chat(omni, turns, max_new_tokens, thinking=thinking, system_prompt=system, **video)
    text = "".join(chat_v45.stream(omni, turns, max_new_tokens, thinking=thinking, system_prompt=system, **video))
    assert whole.text == text.strip()  # no prompt token is id 0: the two official paths agree
    if not thinking:
        return "", text.lstrip("\n"), len(whole.ids)
    assert text.startswith("<think>\n")
    reasoning, close, content = text[len("<think>\n") :].partition("</think>")
    return reasoning, content.lstrip("\n") if close else "", len(whole.ids)


async def both(c, msgs, **kw) -> tuple[tuple[str, str], Any, list]:
    """(reasoning, content) of a whole reply (checked equal to its stream), the reply, the stream's chunks."""
    kw = {"temperature": 0, **kw}  # greedy unless asked
    whole = await c.chat.completions.create(model="m", messages=msgs, **kw)
    m = whole.choices[0].message
    got = (m.model_extra.get("reasoning_content") or "", m.content or "")
    stream = await c.chat.completions.create(
        model="m", messages=msgs, stream=True, stream_options={"include_usage": True}, **kw
    )
    chunks = [ch async for ch in stream]
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    streamed = (
        "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas),
        "".join(d.content or "" for d in deltas),
    )
    assert streamed == got and chunks[-1].usage == whole.usage
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    return got, whole, chunks


async def test_an_image_with_history_is_the_offline_chat_reply(server, tiny_v45_omni):
    a, b = picture(1), picture(2, (40, 64))
    offline_msgs = [
        {"role": "system", "content": "Compare them."},
        {"role": "user", "content": ["What differs here?", a]},
        {"role": "assistant", "content": ["The colour."]},
        {"role": "user", "content": [b, "And this one?"]},
    ]
    wire = [
        {"role": "system", "content": "Compare them."},
        {"role": "user", "content": [{"type": "text", "text": "What differs here?"}, image(a)]},
        {"role": "assistant", "content": "The colour."},
        {"role": "user", "content": [image(b), {"type": "text", "text": "And this one?"}]},
    ]
    got, whole, _ = await both(client(server), wire, max_tokens=9)
    reasoning, content, n = offline(tiny_v45_omni, offline_msgs, 9)
    assert got == ("", content) and content
    u = whole.usage
    assert u.completion_tokens == n and u.prompt_tokens > 40 and u.total_tokens == u.prompt_tokens + n
    assert whole.choices[0].finish_reason == ("length" if n == 9 else "stop")
    models = await client(server).models.list()
    assert [(m.id, m.model_extra["family"]) for m in models.data] == [("embedded-tiny", "v-4.5")]


def image(img: Image.Image) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(img)}}


THINKING = [{"reasoning_effort": "low"}, {"extra_body": {"chat_template_kwargs": {"enable_thinking": True}}}]


@pytest.mark.parametrize("thinking", THINKING, ids=["reasoning_effort", "enable_thinking"])
async def test_video_frames_are_packed_as_the_card_and_thinking_goes_to_reasoning(server, tiny_v45_omni, thinking):
    """Four frames 0.5 s apart in packs of two: time ids [[0, 5], [10, 15]], as the card packs them."""
    frames = [picture(10 + i) for i in range(4)]
    video = {"frames": [data_url(f) for f in frames], "timestamps_s": [0, 0.5, 1.0, 1.5], "packing": 2}
    text = {"type": "text", "text": "What happens?"}
    wire = [{"role": "user", "content": [text, {"type": "video_frames", "video_frames": video}]}]
    got, whole, _ = await both(client(server), wire, max_tokens=12, **thinking)
    want_r, want_c, n = offline(
        tiny_v45_omni,
        [{"role": "user", "content": ["What happens?", *frames]}],
        12,
        thinking=True,
        temporal_ids=[[0, 5], [10, 15]],
        max_slice_nums=1,
        use_image_id=False,
    )
    assert got == (want_r, want_c) and want_r and "<think>" not in got[1]
    assert whole.usage.completion_tokens == n


async def test_stop_strings_and_the_token_cap(server, tiny_v45_omni):
    c = client(server)
    msgs = [{"role": "user", "content": "Say something."}]
    (_, text), whole, _ = await both(c, msgs, max_tokens=16)
    stop = next(text[i : i + 2] for i in range(1, len(text) - 1) if text[i : i + 2].isprintable() and text[i].strip())
    (_, cut), short, _ = await both(c, msgs, max_tokens=16, stop=[stop, "never in it"])
    assert cut == text[: text.find(stop)] and short.choices[0].finish_reason == "stop"
    (_, three), capped, _ = await both(c, msgs, max_completion_tokens=3)
    assert text.startswith(three) and capped.usage.completion_tokens == 3
    assert capped.choices[0].finish_reason == "length"
    (_, sampled), _, _ = await both(c, msgs, max_tokens=16, temperature=1.0, seed=7)  # a seed: streamed == whole
    assert sampled != text


def test_thinking_split_drops_the_open_block_and_stops_only_the_answer():
    from streaming.chat.run_v45 import ReplySplit

    reply = "<think>\nstop here? no</think>\n\nThe answer: stop. More."
    for cuts in ([3, 9, 30, 33], list(range(1, len(reply))), []):
        s, pieces, at = ReplySplit(True, ("stop",)), [], 0
        for k in [*cuts, len(reply)]:
            pieces.append(s.push(reply[at:k]))
            at = k
            if s.stopped:
                break
        pieces.append(s.flush())
        assert "".join(r for r, _ in pieces) == "stop here? no"  # a stop string in the thinking goes on
        assert "".join(c for _, c in pieces) == "The answer: " and s.stopped
    off = ReplySplit(False, ())
    assert off.push("\n\nplain </think> text") == ("", "plain </think> text") and off.flush() == ("", "")


def wav_b64() -> str:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000, np.float32), 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def frames_part(n: int, times=None, sizes=None) -> dict:
    urls = [data_url(picture(i, sizes[i] if sizes else (32, 32))) for i in range(n)]
    return {"type": "video_frames", "video_frames": {"frames": urls, "timestamps_s": times or list(range(n))}}


ASK = {"type": "text", "text": "hi"}
BAD = [  # (what is wrong, the body's fields over a good request, status, code)
    ("audio part", [ASK, {"type": "input_audio", "input_audio": {"data": None, "format": "wav"}}], 400, "unsupported_content"),
    ("tools", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, 400, "unsupported_parameter"),
    ("audio out", {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, 400, "unsupported_modality"),
    ("n=2", {"n": 2}, 400, "unsupported_value"),
    ("too many frames", [{"type": "video_frames", "video_frames": {"frames": ["x"] * 181, "fps": 5}}], 400, "too_many_frames"),
    ("frames over 2 h", [ASK, frames_part(2, [0, 7300])], 400, "invalid_value"),
    ("video beside an image", [ASK, frames_part(2), {"type": "image_url", "image_url": {"url": data_url(picture(3))}}], 400, "unsupported_content"),
    ("pack of two sizes", [frames_part(2, sizes=[(32, 32), (40, 32)]) | {"video_frames": None}], 400, "invalid_value"),
    ("ends with assistant", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 400, "invalid_value"),
]  # fmt: skip


@pytest.mark.parametrize("what, fields, status, code", BAD, ids=[b[0] for b in BAD])
async def test_bad_input_is_a_4xx_in_openais_shape(server, what, fields, status, code):
    if isinstance(fields, list):  # the user message's parts
        for p in fields:
            if p["type"] == "input_audio":
                p["input_audio"]["data"] = wav_b64()
            if p["type"] == "video_frames" and p["video_frames"] is None:
                p["video_frames"] = frames_part(2, sizes=[(32, 32), (40, 32)])["video_frames"] | {"packing": 2}
        fields = {"messages": [{"role": "user", "content": fields}]}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http}/v1/chat/completions", json=body) as r:
            got = await r.json()
    assert r.status == status, got
    err = got["error"]
    assert err["code"] == code and err["message"] and err["type"] == "invalid_request_error" and "param" in err
    if code in ("unsupported_content", "unsupported_parameter", "unsupported_modality"):
        assert "MiniCPM-V 4.5" in err["message"]


async def test_requests_share_the_slots_with_realtime_and_a_gone_client_frees_its_own(tiny_v45_omni):
    srv = await start_server(tiny_v45_omni, model=MODEL, max_sessions=1, max_reply_tokens=2000)
    c = client(srv)
    msgs = [{"role": "user", "content": "Talk at length."}]
    try:
        stream = await c.chat.completions.create(model="m", messages=msgs, max_tokens=2000, stream=True)
        chunks = aiter(stream)
        while not (await anext(chunks)).choices[0].delta.content:  # the reply is under way
            pass
        with pytest.raises(openai.APIStatusError) as e:  # the one slot is the stream's
            await c.chat.completions.create(model="m", messages=msgs, max_tokens=2)
        assert e.value.status_code == 503 and e.value.body["code"] == "server_busy"
        async with websockets.connect(srv.ws_url) as ws:
            ev = json.loads(await ws.recv())
            assert ev["type"] == "error" and ev["error"]["code"] == "server_busy"
        await stream.close()  # the client goes away mid-reply (2000 tokens take ~10 s here)
        async with asyncio.timeout(5):
            while srv.app["manager"].in_use or srv.app["worker"].engines[0].free_slots < 1:
                await asyncio.sleep(0.02)
        r = await c.chat.completions.create(model="m", messages=msgs, max_tokens=2)
        assert r.usage.completion_tokens == 2
    finally:
        await srv.runner.cleanup()


async def test_omni_serve_starts_on_a_v45_checkpoint_and_answers():
    port = free_port()
    p, lines = omni_serve("--model", MODEL, "--port", str(port))
    try:
        assert any("omni: open" in ln for ln in lines), lines
        url = f"http://127.0.0.1:{port}"
        health = json.load(urllib.request.urlopen(f"{url}/healthz", timeout=10))
        assert health["family"] == "v-4.5", health
        r = await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], temperature=0, max_tokens=4
        )
        assert r.choices[0].message.content is not None and r.usage.completion_tokens <= 4
    finally:
        p.kill()
        p.wait(10)
        if p.stderr is not None:
            p.stderr.close()


async def test_empty_messages_are_empty_turns_as_chat_reads_them(server, tiny_v45_omni):
    wire = [
        {"role": "user", "content": []},
        {"role": "assistant", "content": None},
        {"role": "user", "content": "Then?"},
        {"role": "user", "content": [image(picture(5))]},  # consecutive user messages: one turn
    ]
    got, _, _ = await both(client(server), wire, max_tokens=6)
    turns = [{"role": "user", "content": [""]}, {"role": "assistant", "content": [""]}]
    turns.append({"role": "user", "content": ["Then?", picture(5)]})
    assert got == offline(tiny_v45_omni, turns, 6)[:2]
