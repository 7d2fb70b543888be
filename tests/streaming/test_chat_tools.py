"""Function calling in `POST /v1/chat/completions` through the official `openai` SDK: every
tool_choice on the tiny model (whole and streamed, the SDK's own stream helper accumulating the
`delta.tool_calls` chunks), a round trip (call -> tool message -> answer), a forced call with audio
out, bad tools and tool messages as 4xx naming their `param`; and, on a scripted engine (the random
model never opens a call in `auto`), text or speech before a call and a call the token cap cuts.
Every returned call parses and matches its tool's schema."""

from __future__ import annotations

import base64
import json

import aiohttp
import jsonschema
import numpy as np
import pytest
import pytest_asyncio

from omni.tools.calls import CallPiece
from scenario import FakeEngine, Reply, Step

openai = pytest.importorskip("openai", reason="the openai SDK is in the test extra")
pytestmark = pytest.mark.asyncio

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "units": {"enum": ["C", "F"]},
    },
    "required": ["city", "days"],
}
TIME = {"type": "object", "properties": {}, "additionalProperties": False}
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "The forecast.", "parameters": WEATHER, "strict": False},
    },
    {"type": "function", "function": {"name": "get_time", "description": "The time now.", "parameters": TIME}},
]
ASK = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The weather in Paris this week?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def client(srv_http: str):
    return openai.AsyncOpenAI(base_url=f"{srv_http}/v1", api_key="local", max_retries=0)


def valid(calls) -> list[dict]:
    """Each call's parsed arguments; fails unless they match its tool's schema and its id is
    OpenAI's kind (`call_...`, at most 40 characters), distinct."""
    assert len({c.id for c in calls}) == len(calls)
    out = []
    for c in calls:
        assert c.type == "function" and c.id.startswith("call_") and len(c.id) <= 40
        args = json.loads(c.function.arguments)
        jsonschema.validate(args, SCHEMAS[c.function.name])
        out.append(args)
    return out


def streamed_calls(chunks) -> tuple[list[dict], str | None]:
    """The calls of a stream's `delta.tool_calls` entries, checked to come as OpenAI streams them:
    the first entry of each index carries id, type, name and empty arguments, later ones only
    arguments; and the stream's finish_reason."""
    calls: dict[int, dict] = {}
    finish = None
    for ch in chunks:
        if not ch.choices:
            continue
        finish = ch.choices[0].finish_reason or finish
        for tc in ch.choices[0].delta.tool_calls or ():
            if tc.index not in calls:
                assert tc.id and tc.type == "function" and tc.function.name and tc.function.arguments == ""
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            else:
                assert tc.id is None and tc.type is None and tc.function.name is None and tc.function.arguments
                calls[tc.index]["arguments"] += tc.function.arguments
    assert sorted(calls) == list(range(len(calls)))
    return [calls[k] for k in sorted(calls)], finish


async def test_every_tool_choice_whole_and_streamed_then_a_round_trip(server):
    c = client(server.http)
    ask = {"model": "m", "messages": ASK, "tools": TOOLS, "seed": 4}
    # a named tool: that call alone, no text; streamed, the same call (the seed), chunk by chunk
    whole = (await c.chat.completions.create(**ask, tool_choice=NAMED)).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather" and valid([call])[0]["city"] in ("Paris", "Rome", "Oslo")
    stream = await c.chat.completions.create(**ask, tool_choice=NAMED, stream=True)
    calls, finish = streamed_calls([ch async for ch in stream])
    assert finish == "tool_calls" and [(x["name"], x["arguments"]) for x in calls] == [
        ("get_weather", call.function.arguments)
    ]
    async with c.chat.completions.stream(**ask, tool_choice=NAMED) as s:  # the SDK's accumulator
        final = await s.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.arguments == call.function.arguments

    # required: at least one call, each valid; without parallel calls exactly one
    required = (await c.chat.completions.create(**ask, tool_choice="required")).choices[0]
    assert required.finish_reason == "tool_calls" and valid(required.message.tool_calls)
    one = await c.chat.completions.create(**ask, tool_choice="required", parallel_tool_calls=False)
    assert len(valid(one.choices[0].message.tool_calls)) == 1
    # auto (the random model talks, any call would be valid) and none (no call can start)
    auto = (await c.chat.completions.create(**ask, tool_choice="auto", max_tokens=8)).choices[0]
    valid(auto.message.tool_calls or [])
    none = (await c.chat.completions.create(**ask, tool_choice="none", max_tokens=8)).choices[0]
    assert none.message.tool_calls is None and none.message.content and none.finish_reason in ("stop", "length")

    # the round trip: the call and its result go back; the model answers in text
    back = [
        *ASK,
        whole.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    answer = await c.chat.completions.create(model="m", messages=back, tools=TOOLS, tool_choice="none", max_tokens=8)
    first = await c.chat.completions.create(**ask, tool_choice="none", max_tokens=8)
    assert answer.choices[0].message.content and answer.choices[0].message.tool_calls is None
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens + 10  # the call and result were prefilled

    # audio out with a forced call: the call alone, nothing spoken
    spoken = await c.chat.completions.create(
        **ask, tool_choice="required", modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}
    )
    m = spoken.choices[0].message
    assert valid(m.tool_calls) and m.audio is None and m.content is None


BAD = [  # (what is wrong, the body's fields over a good request, code, param)
    (
        "tool name",
        {"tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "invalid_value",
        "tools[0].function.name",
    ),
    ("duplicate", {"tools": [TOOLS[0], TOOLS[0]]}, "invalid_value", "tools[1].function.name"),
    (
        "schema",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}},
                }
            ]
        },
        "invalid_function_parameters",
        "tools[0].function.parameters",
    ),
    ("custom tool", {"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "unsupported_parameter", "tools[0].type"),
    (
        "unknown named",
        {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "invalid_value",
        "tool_choice.function.name",
    ),
    ("required, no tools", {"tool_choice": "required"}, "invalid_value", "tool_choice"),
    ("odd choice", {"tools": TOOLS, "tool_choice": "sometimes"}, "invalid_value", "tool_choice"),
    ("parallel type", {"tools": TOOLS, "parallel_tool_calls": "yes"}, "invalid_type", "parallel_tool_calls"),
    ("functions", {"functions": [{"name": "f"}]}, "unsupported_parameter", "functions"),
    (
        "unknown call id",
        {"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "sunny"}]},
        "invalid_value",
        "messages[2].tool_call_id",
    ),
    (
        "no call id",
        {"messages": [*ASK, {"role": "tool", "content": "sunny"}]},
        "missing_required_parameter",
        "messages[2].tool_call_id",
    ),
    (
        "arguments not JSON",
        {
            "messages": [
                *ASK,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                },
                {"role": "user", "content": "hi"},
            ]
        },
        "invalid_value",
        "messages[2].tool_calls[0].function.arguments",
    ),
    (
        "user calls",
        {"messages": [{"role": "user", "content": "hi", "tool_calls": [{"id": "c"}]}]},
        "invalid_value",
        "messages[0].tool_calls",
    ),
    (
        "function role",
        {"messages": [{"role": "function", "name": "f", "content": "1"}]},
        "unsupported_value",
        "messages[0].role",
    ),
]


@pytest.mark.parametrize("what, fields, code, param", BAD, ids=[b[0] for b in BAD])
async def test_bad_tools_and_tool_messages_are_400s_naming_the_param(server, what, fields, code, param):
    body = {"model": "m", "messages": ASK, **fields}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{server.http}/v1/chat/completions", json=body) as r:
            got = await r.json()
    assert r.status == 400, got
    assert (got["error"]["code"], got["error"]["param"]) == (code, param), got


# ---- a scripted engine: what the random model never does (a call after text in `auto`)
def step(text="", audio_ms=0.0, *calls: CallPiece) -> Step:
    return Step(text, audio_ms, 0.0, tuple(calls))


PREAMBLE_CALL = (
    step("Let me ", 200.0),
    step("check", 200.0),
    step("", 0.0, CallPiece(0, "get_weather", '{"city": "Oslo", ')),
    step("", 0.0, CallPiece(0, "get_weather", '"days": 2}', True), CallPiece(1, "get_time", "{}", True)),
)


@pytest_asyncio.fixture
async def scripted():
    """The chat routes on a scripted engine (scenario.FakeEngine: real EngineHandles)."""
    from aiohttp import web

    from omni.family import O26
    from streaming.gateway import chat_completions
    from streaming.session.manager import SessionManager
    from streaming.settings import ServerSettings

    engine = FakeEngine()
    app = web.Application()
    app["settings"], app["worker"], app["manager"] = ServerSettings(), engine, SessionManager(4, 60.0)
    app["family"], app["model_name"], app["started_at"] = O26, "scripted", 0
    chat_completions.register(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield engine, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_text_then_calls_in_auto_whole_and_streamed(scripted):
    engine, http = scripted
    engine.replies = [Reply(PREAMBLE_CALL), Reply(PREAMBLE_CALL)]
    c = client(http)
    ask = {"model": "m", "messages": ASK, "tools": TOOLS, "stop": ["checkmate"]}  # "check" is held back, then sent
    whole = (await c.chat.completions.create(**ask)).choices[0]
    assert whole.message.content == "Let me check" and whole.finish_reason == "tool_calls"
    assert valid(whole.message.tool_calls) == [{"city": "Oslo", "days": 2}, {}]
    (opts,) = [x.arg for x in engine.ops("start_reply")][:1]
    assert opts.tools.choice == "auto" and [t.name for t in opts.tools.tools] == ["get_weather", "get_time"]
    chunks = [ch async for ch in await c.chat.completions.create(**ask, stream=True)]
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks)
    calls, finish = streamed_calls(chunks)
    assert text == "Let me check" and finish == "tool_calls"
    assert [(x["name"], json.loads(x["arguments"])) for x in calls] == [
        ("get_weather", {"city": "Oslo", "days": 2}),
        ("get_time", {}),
    ]
    first_call = next(k for k, ch in enumerate(chunks) if ch.choices and ch.choices[0].delta.tool_calls)
    assert all(not (ch.choices and ch.choices[0].delta.content) for ch in chunks[first_call:])


async def test_speech_stops_at_the_call_and_a_cut_call_is_left_out(scripted):
    engine, http = scripted
    cut = Reply((step("Hm", 100.0), step("", 0.0, CallPiece(0, "get_weather", '{"city": '))), end="max_tokens")
    engine.replies = [Reply(PREAMBLE_CALL), Reply(PREAMBLE_CALL), cut]
    c = client(http)
    speech = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}}
    whole = (await c.chat.completions.create(model="m", messages=ASK, tools=TOOLS, **speech)).choices[0]
    m = whole.message
    assert m.content is None and m.audio.transcript == "Let me check" and whole.finish_reason == "tool_calls"
    assert len(np.frombuffer(base64.b64decode(m.audio.data), "<i2")) == 400 * 24  # the preamble's 0.4 s
    assert len(valid(m.tool_calls)) == 2
    chunks = [
        ch async for ch in await c.chat.completions.create(model="m", messages=ASK, tools=TOOLS, stream=True, **speech)
    ]
    audio = [ch.choices[0].delta.audio for ch in chunks if ch.choices and ch.choices[0].delta.audio]
    transcript = "".join(a.transcript or "" for a in audio)
    calls, finish = streamed_calls(chunks)
    assert transcript == "Let me check" and len(calls) == 2 and finish == "tool_calls"
    # the token cap cuts a call: it is not returned whole, and the reply ends for its length
    short = (await c.chat.completions.create(model="m", messages=ASK, tools=TOOLS)).choices[0]
    assert short.finish_reason == "length" and short.message.tool_calls is None and short.message.content == "Hm"
