"""Wire protocol: every client event parses, every server builder is well formed, bad input is
reported with a clear message and the offending param, and errors map to one error shape."""

from __future__ import annotations

import base64
import inspect
import json

import pytest

from streaming.gateway import errors as E
from streaming.gateway import events as V
from streaming.gateway import protocol as P

B64 = base64.b64encode(b"\x01\x02\x03\x04").decode()


def parse(obj: object, max_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES) -> P.ClientEvent:
    raw = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
    return P.parse_client_event(raw, max_bytes)


# ---------------------------------------------------------------- every client event
ITEM = {
    "type": "message",
    "role": "user",
    "content": [
        {"type": "input_text", "text": "hi"},
        {"type": "input_audio", "audio": B64, "transcript": None},
        {"type": "input_image", "image_url": f"data:image/jpeg;base64,{B64}"},
    ],
}
ROUND_TRIP = [
    (
        {"type": "session.update", "session": {"instructions": "be brief"}},
        P.SessionUpdate("e", {"instructions": "be brief"}),
    ),
    ({"type": "input_audio_buffer.append", "audio": B64}, P.InputAudioBufferAppend("e", b"\x01\x02\x03\x04")),
    ({"type": "input_audio_buffer.commit"}, P.InputAudioBufferCommit("e")),
    ({"type": "input_audio_buffer.clear"}, P.InputAudioBufferClear("e")),
    ({"type": "input_image_buffer.append", "image": B64}, P.InputImageBufferAppend("e", b"\x01\x02\x03\x04")),
    (
        {"type": "conversation.item.create", "previous_item_id": "item_1", "item": ITEM},
        P.ConversationItemCreate(
            "e",
            P.ConversationItem(
                None,
                "user",
                (
                    P.ContentPart("input_text", text="hi"),
                    P.ContentPart("input_audio", audio=b"\x01\x02\x03\x04"),
                    P.ContentPart("input_image", image=b"\x01\x02\x03\x04"),
                ),
            ),
            "item_1",
        ),
    ),
    (
        {"type": "conversation.item.truncate", "item_id": "item_2", "content_index": 0, "audio_end_ms": 1500},
        P.ConversationItemTruncate("e", "item_2", 0, 1500),
    ),
    ({"type": "conversation.item.delete", "item_id": "item_3"}, P.ConversationItemDelete("e", "item_3")),
    (
        {
            "type": "response.create",
            "response": {
                "output_modalities": ["text"],
                "max_output_tokens": 64,
                "temperature": 0.5,
                "conversation": "auto",
                "metadata": {"k": "v"},
            },
        },
        P.ResponseCreate("e", P.ResponseParams(("text",), 64, 0.5, {"k": "v"})),
    ),
    ({"type": "response.cancel", "response_id": "resp_1"}, P.ResponseCancel("e", "resp_1")),
    ({"type": "conversation.item.retrieve", "item_id": "item_4"}, P.ConversationItemRetrieve("e", "item_4")),
]


@pytest.mark.parametrize("raw,expected", ROUND_TRIP, ids=[r["type"] for r, _ in ROUND_TRIP])
def test_every_client_event_parses(raw: dict, expected: P.ClientEvent) -> None:
    event = parse({**raw, "event_id": "e"})
    assert event == expected
    assert type(event).TYPE == raw["type"]
    assert parse(json.dumps({**raw, "event_id": "e"}).encode()) == expected  # bytes frames too


def test_round_trip_table_covers_every_client_event() -> None:
    assert {r["type"] for r, _ in ROUND_TRIP} == set(P._PARSERS)


def test_optional_fields_default() -> None:
    assert parse({"type": "response.create"}) == P.ResponseCreate(None)
    assert parse({"type": "response.cancel"}) == P.ResponseCancel(None, None)


# ---------------------------------------------------------------- beta aliases
def test_beta_session_fields_map_to_ga() -> None:
    beta = {
        "modalities": ["text", "audio"],
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_alaw",
        "voice": "alloy",
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
        "max_response_output_tokens": 200,
        "input_audio_transcription": None,
    }
    cfg = P.apply_update(P.SessionConfig(), beta)
    assert cfg.output_modalities == ("audio",)
    assert cfg.input_format.type == "audio/pcmu" and cfg.output_format.type == "audio/pcma"
    assert cfg.voice == "alloy" and cfg.max_output_tokens == 200
    assert cfg.turn_detection == P.ServerVad(silence_duration_ms=800)


def test_beta_assistant_text_part_and_response_aliases() -> None:
    ev = parse(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        }
    )
    assert ev.item.content == (P.ContentPart("output_text", text="ok"),)
    ev = parse({"type": "response.create", "response": {"modalities": ["text"], "max_response_output_tokens": "inf"}})
    assert ev.response.output_modalities == ("text",) and ev.response.max_output_tokens == "inf"


# ---------------------------------------------------------------- session config
def test_partial_updates_merge() -> None:
    cfg = P.apply_update(
        P.SessionConfig(),
        {
            "type": "realtime",
            "instructions": "x",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}},
        },
    )
    cfg = P.apply_update(
        cfg,
        {"audio": {"input": {"turn_detection": {"type": "server_vad", "prefix_padding_ms": 100}}}, "omni": {"seed": 7}},
    )
    assert cfg.instructions == "x"
    assert cfg.turn_detection == P.ServerVad(threshold=0.8, prefix_padding_ms=100)
    assert cfg.omni == P.OmniOptions(video=True, seed=7)
    cfg = P.apply_update(cfg, {"audio": {"input": {"turn_detection": None}}, "omni": {"video": False}})
    assert cfg.turn_detection is None and cfg.omni == P.OmniOptions(video=False, seed=7)


def test_to_wire_is_the_ga_session_and_reads_back() -> None:
    cfg = P.apply_update(
        P.SessionConfig(),
        {
            "instructions": "hi",
            "max_output_tokens": 99,
            "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "default"}},
        },
    )
    wire = P.to_wire(cfg, session_id="sess_1", model="minicpm-o-2.6")
    assert wire["type"] == "realtime" and wire["id"] == "sess_1"
    assert wire["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert wire["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert wire["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    json.dumps(wire)
    assert P.apply_update(P.SessionConfig(), wire) == cfg  # clients may echo the session back


def test_reference_audio_extension() -> None:
    ref = {"format": "pcm16", "rate": 16000, "data": B64}
    cfg = P.apply_update(P.SessionConfig(), {"audio": {"output": {"omni_reference_audio": ref}}})
    assert cfg.reference_audio == P.ReferenceAudio(b"\x01\x02\x03\x04", "pcm16", 16000)
    wire_ref = P.to_wire(cfg)["audio"]["output"]["omni_reference_audio"]
    assert wire_ref == {"format": "pcm16", "rate": 16000, "size_bytes": 4}  # not echoed in full
    cfg = P.apply_update(cfg, {"audio": {"output": {"omni_reference_audio": None}}})
    assert cfg.reference_audio is None


# ---------------------------------------------------------------- bad input
BAD = [  # (raw, code, param, words in the message)
    ("{not json", "invalid_json", None, "not valid JSON"),
    ('{"type": "response.create", "x": NaN}', "invalid_json", None, "NaN"),
    ("[1, 2]", "invalid_json", None, "must be a JSON object"),
    ({"event_id": "e"}, "missing_required_parameter", "type", "'type'"),
    ({"type": 5}, "invalid_type", "type", "expected a string"),
    ({"type": "input_audio_buffer.apend"}, "invalid_value", "type", "input_audio_buffer.append"),
    ({"type": "input_audio_buffer.append"}, "missing_required_parameter", "audio", "'audio'"),
    ({"type": "input_audio_buffer.append", "audio": 12}, "invalid_type", "audio", "an integer"),
    ({"type": "input_audio_buffer.append", "audio": "@@@"}, "invalid_value", "audio", "base64"),
    ({"type": "input_audio_buffer.append", "audio": ""}, "invalid_value", "audio", "empty"),
    ({"type": "input_audio_buffer.commit", "audio": B64}, "unknown_parameter", "audio", "Unknown"),
    ({"type": "input_image_buffer.append", "image": "a"}, "invalid_value", "image", "base64"),
    (
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": -1},
        "invalid_value",
        "audio_end_ms",
        "outside",
    ),
    (
        {"type": "conversation.item.truncate", "item_id": "i", "content_index": "0", "audio_end_ms": 5},
        "invalid_type",
        "content_index",
        "expected an integer",
    ),
    ({"type": "conversation.item.delete", "item_id": True}, "invalid_type", "item_id", "boolean"),
    (
        {"type": "conversation.item.create", "item": {"type": "function_call"}},
        "missing_required_parameter",
        "item.call_id",
        "call_id",
    ),
    (
        {"type": "conversation.item.create", "item": {"type": "mcp_call"}},
        "invalid_value",
        "item.type",
        "function_call_output",
    ),
    (
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
        },
        "invalid_value",
        "item.content[0].type",
        "input_text",
    ),
    (
        {"type": "response.create", "response": {"voice": "alloy"}},
        "unknown_parameter",
        "response.voice",
        "session.update",
    ),
    (
        {"type": "response.create", "response": {"max_output_tokens": 0}},
        "invalid_value",
        "response.max_output_tokens",
        "outside",
    ),
    (
        {"type": "response.create", "response": {"instructions": "shout"}},
        "unknown_parameter",
        "response.instructions",
        "system prompt",
    ),
    (
        {"type": "response.create", "response": {"conversation": "none"}},
        "invalid_value",
        "response.conversation",
        "'auto'",
    ),
    ({"type": "response.create", "response": {"temperature": 9}}, "invalid_value", "response.temperature", "outside"),
    ({"type": "session.update"}, "missing_required_parameter", "session", "'session'"),
    ({"type": "session.update", "session": {"bogus": 1}}, "unknown_parameter", "session.bogus", ""),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value", "session.type", "'realtime'"),
    (
        {"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}},
        "invalid_value",
        "session.audio.input.format.rate",
        "24000",
    ),
    (
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "eager"}}}},
        },
        "invalid_value",
        "session.audio.input.turn_detection.eagerness",
        "'high'",
    ),
    (
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "threshold": 0.5}}}},
        },
        "unknown_parameter",
        "session.audio.input.turn_detection.threshold",
        "",
    ),
    (
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}},
        },
        "unsupported_parameter",
        "session.audio.input.turn_detection.idle_timeout_ms",
        "never prompts",
    ),
    (
        {"type": "session.update", "session": {"audio": {"output": {"speed": 1.5}}}},
        "unsupported_parameter",
        "session.audio.output.speed",
        "speaking rate",
    ),
    (
        {
            "type": "session.update",
            "session": {"audio": {"input": {"transcription": {"model": "whisper-1", "prompt": "names: Ada"}}}},
        },
        "unsupported_parameter",
        "session.audio.input.transcription.prompt",
        "ASR prompt",
    ),
    (
        {"type": "session.update", "session": {"truncation": "disabled"}},
        "unsupported_parameter",
        "session.truncation",
        "slides",
    ),
    (
        {"type": "session.update", "session": {"turn_detection": {"type": "server_vad", "threshold": 2}}},
        "invalid_value",
        "session.turn_detection.threshold",
        "outside",
    ),
    (
        {
            "type": "session.update",
            "session": {"audio": {"output": {"omni_reference_audio": {"format": "pcm16", "data": B64}}}},
        },
        "missing_required_parameter",
        "session.audio.output.omni_reference_audio.rate",
        "rate",
    ),
    (
        {"type": "session.update", "session": {"tools": [{"type": "function"}]}},
        "missing_required_parameter",
        "session.tools[0].name",
        "name",
    ),
]


@pytest.mark.parametrize("raw,code,param,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_clear_protocol_error(raw: object, code: str, param: str | None, words: str) -> None:
    with pytest.raises(E.ProtocolError) as info:
        parse(raw)
    assert (info.value.code, info.value.param) == (code, param)
    assert words in info.value.message


def test_oversized_message_and_event_id_is_kept() -> None:
    with pytest.raises(E.ProtocolError) as info:
        parse({"type": "input_audio_buffer.append", "audio": B64 * 100}, max_bytes=200)
    assert info.value.code == "message_too_large" and "200" in info.value.message
    with pytest.raises(E.ProtocolError) as info:
        parse({"type": "conversation.item.delete", "event_id": "ev_9"})
    assert info.value.event_id == "ev_9"


# ---------------------------------------------------------------- server events and errors
ITEM_OUT = {
    "id": "item_1",
    "object": "realtime.item",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_audio", "transcript": "hi"}],
}
ERROR_OBJ = {"type": "invalid_request_error", "code": "invalid_value", "message": "m", "param": None, "event_id": None}
SAMPLE_ARGS = {
    "session": P.to_wire(P.SessionConfig(), "sess_1", "minicpm-o-2.6"),
    "item": ITEM_OUT,
    "response": P.response_object("resp_1", "completed", [ITEM_OUT]),
    "part": {"type": "output_audio", "transcript": "hi"},
    "error_obj": ERROR_OBJ,
    "audio_start_ms": 0,
    "audio_end_ms": 10,
    "item_id": "item_1",
    "previous_item_id": None,
    "content_index": 0,
    "output_index": 0,
    "response_id": "resp_1",
    "delta": "x",
    "transcript": "t",
    "text": "t",
    "audio_s": 1.5,
    "timings_ms": {"first_audio_ms": 1.0},
    "call_id": "call_1",
    "name": "get_weather",
    "arguments": '{"city": "Paris"}',
    "fps": 2.0,
    "frames_total": 4,
    "packs_total": 1,
}


def test_every_server_builder_makes_a_valid_openai_event() -> None:
    from event_types import openai_type_errors

    seen, events = set(), []
    for name, fn in inspect.getmembers(V, inspect.isfunction):
        if (
            fn.__module__ != V.__name__
            or name.startswith("_")
            or name
            in (
                "server_event",
                "item_object",
                "function_call_object",
                "function_call_output_object",
                "response_object",
                "new_id",
                "for_client",
                "content_part",
            )
        ):
            continue
        event = fn(**{k: SAMPLE_ARGS[k] for k in inspect.signature(fn).parameters})
        assert event["type"] in P.SERVER_EVENT_TYPES and event["event_id"].startswith("event_")
        json.dumps(event)
        seen.add(event["type"])
        events.append(event)
    assert seen == P.SERVER_EVENT_TYPES  # one builder per server event
    assert openai_type_errors(events) == []


def test_response_reasons_are_openai_values_and_extensions_need_opt_in() -> None:
    resp = P.response_object("resp_1", "cancelled", status_details={"type": "cancelled", "reason": "turn_detected"})
    assert resp["output"] == [] and "omni" not in resp
    for status, reason in (("cancelled", "client_truncated"), ("incomplete", "turn_detected")):
        with pytest.raises(AssertionError, match=f"bad {status} reason {reason!r}"):
            P.response_object("resp_1", status, status_details={"type": status, "reason": reason})
    with pytest.raises(AssertionError, match="bad response status 'done'"):
        P.response_object("resp_1", "done")
    timings = P.response_omni_timings("resp_1", {"first_audio_ms": 412.0})
    assert not P.for_client(timings, extensions=False) and P.for_client(timings, extensions=True)
    assert P.for_client(P.response_done(resp), extensions=False)
    part = P.response_content_part_added("resp_1", "item_1", 0, 0, {"type": "output_audio", "transcript": ""})
    assert part["part"] == {"type": "audio", "transcript": ""}


# What stock clients send, nulls and all: each parses (null is absent unless it means something).
STOCK = [
    {
        "type": "response.create",
        "response": {
            "instructions": None,
            "metadata": {"client_event_id": "c1"},
            "tools": None,
            "tool_choice": None,
            "modalities": None,
        },
    },
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "model": "gpt-realtime",
            "instructions": "Be kind.",
            "output_modalities": ["audio"],
            "tracing": "auto",
            "prompt": None,
            "tool_choice": "auto",
            "tools": [],
            "max_output_tokens": None,
            "truncation": "auto",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "noise_reduction": {"type": "near_field"},
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": None, "prompt": None},
                    "turn_detection": {
                        "type": "semantic_vad",
                        "eagerness": "medium",
                        "create_response": True,
                        "interrupt_response": True,
                        "idle_timeout_ms": None,
                    },
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin", "speed": 1.0},
            },
        },
    },
    {"type": "session.update", "session": {"transcription": None, "audio": {"output": {"turn_detection": None}}}},
    {
        "type": "conversation.item.create",
        "previous_item_id": None,
        "item": {
            "type": "message",
            "role": "user",
            "id": None,
            "status": None,
            "content": [{"type": "input_text", "text": "hi"}],
        },
    },
]


@pytest.mark.parametrize("raw", STOCK, ids=[r["type"] for r in STOCK])
def test_stock_client_messages_parse(raw: dict) -> None:
    assert type(parse(raw)).TYPE == raw["type"]


def test_semantic_vad_runs_as_server_vad_with_the_silence_of_its_eagerness() -> None:
    cfg = P.SessionConfig()
    for eagerness, silence_ms in (("low", 1200), ("high", 350), (None, 700)):
        td = {"type": "semantic_vad", **({"eagerness": eagerness} if eagerness else {})}
        cfg = P.apply_update(cfg, {"audio": {"input": {"turn_detection": td}}})
        assert cfg.turn_detection.silence_duration_ms == silence_ms
        assert P.to_wire(cfg)["audio"]["input"]["turn_detection"] == {
            "type": "semantic_vad",
            "eagerness": eagerness or "auto",
            "create_response": True,
            "interrupt_response": True,
        }
    cfg = P.apply_update(cfg, {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}})
    assert P.to_wire(cfg)["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500


def test_transcription_and_session_temperature() -> None:
    cfg = P.apply_update(
        P.SessionConfig(),
        {"audio": {"input": {"transcription": {"model": "whisper-1", "language": "zh"}}}, "temperature": 0.3},
    )
    assert cfg.transcription == P.Transcription("whisper-1", "zh") and cfg.temperature == 0.3
    assert P.to_wire(cfg)["audio"]["input"]["transcription"] == {"model": "whisper-1", "language": "zh"}
    cfg = P.apply_update(cfg, {"input_audio_transcription": None})  # beta: off again
    assert cfg.transcription is None


def test_error_events_and_close_codes() -> None:
    try:
        parse({"type": "nope", "event_id": "ev_1"})
    except E.ProtocolError as exc:
        event = E.to_error_event(exc)
    assert event["type"] == "error" and event["event_id"].startswith("event_")
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_value",
        "message": "Unknown event type 'nope'.",
        "param": "type",
        "event_id": "ev_1",
    }
    secret = E.to_error_event(RuntimeError("/home/x/secret.py line 3"), event_id="ev_2")["error"]
    assert secret["type"] == "server_error" and "secret" not in secret["message"]
    assert secret["event_id"] == "ev_2"
    group = ExceptionGroup("tg", [ValueError("x"), E.CapacityError("server_busy", "full")])
    assert E.to_error_event(group)["error"]["code"] == "server_busy"
    assert E.close_code(group) == E.CLOSE_TRY_AGAIN_LATER
    assert E.close_code(E.ProtocolError("c", "m")) is None  # recoverable: keep the socket
    assert E.close_code(E.MediaError("c", "m")) is None
    assert E.close_code(E.AuthError("invalid_api_key", "m")) == E.CLOSE_POLICY_VIOLATION
    assert E.close_code(E.ModelError("model_error", "m")) == E.CLOSE_INTERNAL_ERROR
    assert E.close_code(KeyError("x")) == E.CLOSE_INTERNAL_ERROR


def test_fragments_join_in_order_and_bound_their_size():
    from streaming.errors import ProtocolError
    from streaming.gateway.fragments import Reassembler

    def piece(i, n, data: bytes, mid="a", **extra):
        return json.dumps(
            {
                "type": "omni.fragment",
                "id": mid,
                "index": i,
                "count": n,
                "data": base64.b64encode(data).decode(),
                **extra,
            }
        )

    r = Reassembler(max_message_bytes=10)
    whole = '{"type":"response.cancel"}'
    assert r.push(whole) == whole  # not a fragment: as it came
    assert r.push(b"omni.fragment [") == b"omni.fragment ["  # not JSON: dispatch reports it
    assert r.push(piece(0, 2, "é".encode()[:1])) is None  # a character cut between pieces
    assert r.push(piece(1, 2, "é".encode()[1:] + b"!")) == "é!".encode()
    for bad_piece, code in [
        (piece(1, 2, b"x"), "fragment_out_of_order"),
        (piece(0, 2, b"x", extra=1), "unknown_parameter"),
        (piece(0, 0, b"x"), "invalid_value"),
        (piece(0, 1, b"x", mid=""), "invalid_value"),
        (piece(0, 1, b"0123456789!"), "message_too_large"),
        ('{"type":"omni.fragment","id":"a","index":0,"count":1,"data":"@@"}', "invalid_value"),
    ]:
        with pytest.raises(ProtocolError) as e:
            r.push(bad_piece)
        assert e.value.code == code, (bad_piece, e.value)
    assert r.push(piece(0, 3, b"01234")) is None
    with pytest.raises(ProtocolError) as e:  # 5 + 6 bytes: over the cap mid-way
        r.push(piece(1, 3, b"567890"))
    assert e.value.code == "message_too_large"
    with pytest.raises(ProtocolError):  # and the message was dropped
        r.push(piece(2, 3, b"x"))
    assert r.push(piece(0, 1, b"ok")) == b"ok"  # a new one starts clean
