"""The chat layer without a server: stop strings and thinking over streamed text (one step's shapes,
chunked == whole, earlier output never changes), the o-2.6 engine plan run on a real session
(the context it builds reads as the TTS template renders the conversation, its calls and tool
results as the official template writes them), and the V-4.5 plan
through the official prompt builder (thinking switch, the card's video packs), and a thinking
reply's pieces on the wire (`reasoning_content`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from omni.tools.spec import Tool, ToolSpec
from streaming.chat import o26, v45
from streaming.chat.request import Audio, ChatRequest, Frames, Image, Message, Sampling, Speech, Text, ToolCall
from streaming.chat.stops import StopScanner
from streaming.chat.v45 import ThinkSplitter
from streaming.errors import ProtocolError

REPLY = "Hello there. STOP here; and <think>deep</think>\n\nthe answer, END."


def splits(text: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    cuts = sorted(set(rng.integers(0, len(text), size=8).tolist()))
    return [text[a:b] for a, b in zip([0] + cuts, cuts + [len(text)])]


def run_stops(pieces: list[str], stops: tuple[str, ...]) -> tuple[list[str], bool]:
    s = StopScanner(stops)
    out = [s.push(p) for p in pieces]
    return out + [s.flush()], s.stopped


def test_stop_scanner_one_step_holds_back_only_a_possible_stop():
    s = StopScanner(("STOP", "END."))
    assert s.push("Hello ST") == "Hello "  # "ST" may begin STOP
    assert s.push("ay") == "STay"
    assert s.push(" E") == " "
    assert s.push("ND.") == "" and s.stopped
    assert s.push("more") == "" and s.flush() == ""


@pytest.mark.parametrize("stops", [(), ("STOP",), ("END.", "here;"), ("absent",)])
def test_stop_scanner_chunked_equals_whole_and_never_takes_back(stops):
    whole, stopped = run_stops([REPLY], stops)
    for seed in range(5):
        out, st = run_stops(splits(REPLY, seed), stops)
        assert "".join(out) == "".join(whole) and st == stopped
        sent = ""
        for piece in out:  # earlier output never changes: every prefix sent is a prefix of the result
            sent += piece
            assert "".join(whole).startswith(sent)
    cut = min([REPLY.find(s) for s in stops if s in REPLY], default=len(REPLY))
    assert "".join(whole) == REPLY[:cut]


def test_think_splitter_one_step_and_chunked_equals_whole():
    text = "step one</think>\n\nThe answer."
    s = ThinkSplitter(thinking=True)
    assert s.push("step one</thi") == ("step one", "")
    assert s.push("nk>\n") == ("", "")
    assert s.push("\nThe answer.") == ("", "The answer.")
    for seed in range(5):
        s = ThinkSplitter(thinking=True)
        pieces = [s.push(p) for p in splits(text, seed)] + [s.flush()]
        assert "".join(r for r, _ in pieces) == "step one" and "".join(c for _, c in pieces) == "The answer."
    off = ThinkSplitter(thinking=False)
    assert off.push("no </think> here") == ("", "no </think> here")
    cut = ThinkSplitter(thinking=True)  # the token cap ends it inside the thinking
    assert cut.push("still thinking </th") == ("still thinking ", "") and cut.flush() == ("</th", "")


def _req(*messages: Message, **kw) -> ChatRequest:
    return ChatRequest(messages=messages, **kw)


def test_o26_plan_prefills_the_conversation_as_the_tts_template_renders_it(tiny_omni):
    from omni.processing import prompt as P
    from omni.session.engine import Session

    img = PILImage.new("RGB", (32, 24), (10, 200, 30))
    audio = np.zeros(33_000, np.float32)  # 2.06 s: pieces of 1 s and 1.06 s (the short tail rides along)
    req = _req(
        Message("system", (Text("Be brief."),)),
        Message("user", (Text("What is it?"), Image(img))),
        Message("assistant", (Text("A green box."),)),
        Message("user", (Text("And this?"), Audio(audio))),
        Message("user", (Text("Thanks."),)),
        sampling=Sampling(temperature=0.0, seed=7),
    )
    plan = o26.plan(req, max_reply_tokens=16, max_speech_s=5.0)
    assert plan.instructions == "Be brief." and plan.seed == 7 and not plan.options.sampling.do_sample
    assert [len(m["content"][0]) for m in plan.prefills[3:5]] == [16_000, 17_000]
    s = Session(tiny_omni, seed=plan.seed)
    texts = [s.set_system(plan.mode, plan.reference_16k, plan.instructions).text]
    texts += [s.prefill(m).text for m in plan.prefills]
    audio_ph = [t for t in texts[4:6]]
    want = (
        "<|im_start|>user\nBe brief.<|im_end|>\n"
        + P.USER_OPEN
        + "What is it?"
        + texts[1][len(P.USER_OPEN + "What is it?") :]  # the image's placeholder, as the processor makes it
        + "<|im_end|>\n"
        + P.ASSISTANT_TTS_PREFIX
        + "A green box.<|tts_eos|><|im_end|>\n"
        + P.USER_OPEN
        + "And this?"
        + "".join(audio_ph)
        + "\nThanks."
    )
    assert "".join(texts) == want
    assert all(t.startswith("<|audio_start|>") for t in audio_ph)
    reply = "".join(t for t, _ in s.generate(plan.options))  # the reply follows the last user turn
    assert s.reply_usage is not None and s.reply_usage[1] >= 1 and isinstance(reply, str)


def test_o26_plan_prefills_calls_and_results_as_the_official_template_writes_them(tiny_omni):
    from omni.session.engine import Session
    from omni.tools.prompt import tools_section

    weather = Tool("get_weather", "The <image> forecast.", json.dumps({"type": "object", "properties": {}}))
    calls = (ToolCall("c1", "get_weather", '{"city": "Paris"}'), ToolCall("c2", "get_weather", '{"city": "Rome"}'))
    spec = ToolSpec((weather,), "auto")
    req = _req(
        Message("system", (Text("Be brief."),)),
        Message("user", (Text("Weather?"),)),
        Message("assistant", (Text("Let me see."),), calls),
        Message("tool", (Text("sunny"),), call_id="c1"),
        Message("tool", (Text("rain"),), call_id="c2"),
        tools=spec,
    )
    plan = o26.plan(req, max_reply_tokens=16, max_speech_s=5.0)
    assert plan.options.tools == spec and plan.tools == tools_section((weather,)) and "<image>" not in plan.tools
    s = Session(tiny_omni, seed=1)
    assert s.set_system(plan.mode, None, plan.instructions, plan.tools).text.endswith(plan.tools + "<|im_end|>\n")
    texts = "".join(s.prefill(m).text for m in plan.prefills)
    wire_calls = [
        {"type": "function", "function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in calls
    ]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "Let me see.", "tool_calls": wire_calls},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "rain"},
    ]
    want = tiny_omni.tokenizer.apply_chat_template(messages, tools=[weather.chat_shape()], tokenize=False)
    assert texts.startswith("<|im_start|>user\nWeather?") and want.endswith(texts + "<|im_end|>\n")
    reply = list(s.generate(plan.options))  # the reply follows the results
    assert s.reply_usage is not None and reply


@pytest.mark.parametrize(
    "req, code",
    [
        (_req(Message("user", (Text("hi"),)), thinking=True), "unsupported_parameter"),
        (_req(Message("user", (Text("hi"),)), Message("assistant", (Text("yo"),))), "invalid_value"),
        (_req(Message("system", (Text("only a system"),))), "invalid_value"),
    ],
)
def test_o26_plan_refuses_what_the_family_cannot_answer(req, code):
    with pytest.raises(ProtocolError) as e:
        o26.plan(req, 16, 5.0)
    assert e.value.code == code and "MiniCPM-o 2.6" in e.value.message


def _frames(n: int, fps: float, size=(64, 48), packing=None) -> Frames:
    imgs = tuple(PILImage.new("RGB", size, (i * 20 % 255, 0, 0)) for i in range(n))
    return Frames(imgs, tuple(i / fps for i in range(n)), packing)


@pytest.mark.parametrize("packing", [None, 3])
def test_v45_frames_are_packed_as_the_card_packs_a_clip(packing):
    from omni.processing import video as VID

    frames = _frames(10, 5.0, packing=packing)
    want = VID.plan(10, 5.0, 5.0, force_packing=packing).temporal_ids  # `omni chat --frames` at 5 fps
    assert v45.pack_times(frames, packing) == want


def test_v45_plan_builds_the_official_prompt_with_thinking_and_a_video(tiny_v45):
    from omni import chat_v45

    video = _frames(4, 2.0, packing=2)
    req = _req(
        Message("system", (Text("Look closely."),)),
        Message("user", (Text("What happens?"), video)),
        thinking=True,
        sampling=Sampling(temperature=0.5, top_p=0.9),
    )
    plan = v45.plan(req, max_reply_tokens=32)
    assert plan.temporal_ids == [[0, 5], [10, 15]] and plan.max_slice_nums == 1 and plan.use_image_id is False
    assert plan.sampling.temperature == 0.5 and plan.sampling.top_p == 0.9
    prepared = chat_v45.prepare(tiny_v45, **plan.prepare_args())
    direct = chat_v45.prepare(
        tiny_v45,
        [{"role": "user", "content": ["What happens?", *video.frames]}],
        "Look closely.",
        True,
        [[0, 5], [10, 15]],
        1,
        False,
    )
    assert prepared.text == direct.text and prepared.prompt.endswith("<think>\n")
    assert prepared.text.count("<image>") == 2  # one placeholder per pack of two frames
    fast = chat_v45.prepare(tiny_v45, **v45.plan(_req(Message("user", (Text("hi"),))), 32).prepare_args())
    assert fast.prompt.endswith("<think>\n\n</think>\n\n")


@pytest.mark.parametrize(
    "req",
    [
        _req(Message("user", (Audio(np.zeros(1600, np.float32)),))),
        _req(Message("user", (Text("hi"),)), speech=Speech("alloy", "wav")),
        _req(Message("user", (Image(PILImage.new("RGB", (8, 8))), _frames(2, 1.0)))),
        _req(Message("user", (_frames(2, 1.0, size=(8, 8)), _frames(2, 1.0, size=(8, 8))))),
        _req(Message("user", (Frames((PILImage.new("RGB", (8, 8)), PILImage.new("RGB", (9, 8))), (0.0, 1.0), 2),))),
        _req(Message("user", (Text("hi"),)), tools=ToolSpec((Tool("f"),), "auto")),
    ],
)
def test_v45_plan_refuses_audio_speech_tools_and_mixed_media(req):
    with pytest.raises(ProtocolError):
        v45.plan(req, 16)


def test_reasoning_goes_to_reasoning_content_and_the_wire_types_hold():
    """A thinking reply's pieces (V-4.5's) on the wire: the reasoning never in
    `content`; every object validates against the SDK's chat types."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    from streaming.chat.complete import Outcome, Piece
    from streaming.chat.request import ChatRequest, Message, Text
    from streaming.gateway.chat_completions import _Reply

    req = ChatRequest((Message("user", (Text("why?"),)),), thinking=True, stream=True, include_usage=True)
    reply = _Reply("tiny", req)
    pieces = [Piece(reasoning="Because "), Piece(reasoning="so.", text=""), Piece(text="Yes.")]
    chunks = [reply.chunk(reply.first_delta())] + [reply.chunk(d) for p in pieces for d in reply.deltas(p)]
    for p in pieces:
        reply.add(p)
    outcome = Outcome("stop", 5, 4)
    chunks += [reply.chunk({}, "stop"), reply.chunk(None, usage=reply.usage(outcome))]
    parsed = [ChatCompletionChunk.model_validate(c) for c in chunks]
    deltas = [c.choices[0].delta for c in parsed if c.choices]
    assert "".join(d.model_extra.get("reasoning_content", "") for d in deltas) == "Because so."
    assert "".join(d.content or "" for d in deltas) == "Yes."
    whole = ChatCompletion.model_validate(reply.whole(outcome))
    assert (
        whole.choices[0].message.content == "Yes."
        and whole.choices[0].message.model_extra["reasoning_content"] == "Because so."
    )
    assert whole.usage is not None and whole.usage.total_tokens == 9


@pytest.mark.parametrize(
    "fields, thinking",
    [
        ({}, False),
        ({"reasoning_effort": "minimal"}, False),
        ({"reasoning_effort": "high"}, True),
        ({"chat_template_kwargs": {"enable_thinking": True}}, True),
        (
            {"reasoning_effort": "high", "chat_template_kwargs": {"enable_thinking": False}},
            False,
        ),  # the template's wins
    ],
)
def test_thinking_switches_parse(fields, thinking):
    from streaming.gateway.chat_request import parse_request

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    assert parse_request(body, 1 << 20).thinking is thinking


def test_unknown_template_switches_are_refused():
    from streaming.gateway.chat_request import parse_request

    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "chat_template_kwargs": {"tools": []}}
    with pytest.raises(ProtocolError) as e:
        parse_request(body, 1 << 20)
    assert e.value.param == "chat_template_kwargs.tools"
