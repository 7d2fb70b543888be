"""Wire protocol: every client event parses, every server builder is well formed, bad input is
reported with a clear message and the offending param, and errors map to one error shape."""
from __future__ import annotations

import base64
import inspect
import json

import pytest

from streaming.gateway import errors as E
from streaming.gateway import protocol as P

B64 = base64.b64encode(b"\x01\x02\x03\x04").decode()


def parse(obj: object, max_bytes: int = P.DEFAULT_MAX_MESSAGE_BYTES) -> P.ClientEvent:
    raw = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
    return P.parse_client_event(raw, max_bytes)


# ---------------------------------------------------------------- every client event
ITEM = {"type": "message", "role": "user", "content": [
    {"type": "input_text", "text": "hi"},
    {"type": "input_audio", "audio": B64, "transcript": None},
    {"type": "input_image", "image_url": f"data:image/jpeg;base64,{B64}"}]}
ROUND_TRIP = [
    ({"type": "session.update", "session": {"instructions": "be brief"}},
     P.SessionUpdate("e", {"instructions": "be brief"})),
    ({"type": "input_audio_buffer.append", "audio": B64},
     P.InputAudioBufferAppend("e", b"\x01\x02\x03\x04")),
    ({"type": "input_audio_buffer.commit"}, P.InputAudioBufferCommit("e")),
    ({"type": "input_audio_buffer.clear"}, P.InputAudioBufferClear("e")),
    ({"type": "input_image_buffer.append", "image": B64},
     P.InputImageBufferAppend("e", b"\x01\x02\x03\x04")),
    ({"type": "conversation.item.create", "previous_item_id": "item_1", "item": ITEM},
     P.ConversationItemCreate("e", P.ConversationItem(None, "user", (
         P.ContentPart("input_text", text="hi"),
         P.ContentPart("input_audio", audio=b"\x01\x02\x03\x04"),
         P.ContentPart("input_image", image=b"\x01\x02\x03\x04"))), "item_1")),
    ({"type": "conversation.item.truncate", "item_id": "item_2", "content_index": 0,
      "audio_end_ms": 1500}, P.ConversationItemTruncate("e", "item_2", 0, 1500)),
    ({"type": "conversation.item.delete", "item_id": "item_3"},
     P.ConversationItemDelete("e", "item_3")),
    ({"type": "response.create", "response": {
        "output_modalities": ["text"], "max_output_tokens": 64, "temperature": 0.5,
        "conversation": "auto", "metadata": {"k": "v"}}},
     P.ResponseCreate("e", P.ResponseParams(("text",), 64, 0.5, {"k": "v"}))),
    ({"type": "response.cancel", "response_id": "resp_1"}, P.ResponseCancel("e", "resp_1")),
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
    beta = {"modalities": ["text", "audio"], "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_alaw", "voice": "alloy",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
            "max_response_output_tokens": 200, "input_audio_transcription": None}
    cfg = P.apply_update(P.SessionConfig(), beta)
    assert cfg.output_modalities == ("audio",)
    assert cfg.input_format.type == "audio/pcmu" and cfg.output_format.type == "audio/pcma"
    assert cfg.voice == "alloy" and cfg.max_output_tokens == 200
    assert cfg.turn_detection == P.ServerVad(silence_duration_ms=800)


def test_beta_assistant_text_part_and_response_aliases() -> None:
    ev = parse({"type": "conversation.item.create", "item": {
        "type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}]}})
    assert ev.item.content == (P.ContentPart("output_text", text="ok"),)
    ev = parse({"type": "response.create", "response": {
        "modalities": ["text"], "max_response_output_tokens": "inf"}})
    assert ev.response.output_modalities == ("text",) and ev.response.max_output_tokens == "inf"


# ---------------------------------------------------------------- session config
def test_partial_updates_merge() -> None:
    cfg = P.apply_update(P.SessionConfig(), {"type": "realtime", "instructions": "x", "audio": {
        "input": {"turn_detection": {"type": "server_vad", "threshold": 0.8}}}})
    cfg = P.apply_update(cfg, {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "prefix_padding_ms": 100}}}, "omni": {"seed": 7}})
    assert cfg.instructions == "x"
    assert cfg.turn_detection == P.ServerVad(threshold=0.8, prefix_padding_ms=100)
    assert cfg.omni == P.OmniOptions(video=True, seed=7)
    cfg = P.apply_update(cfg, {"audio": {"input": {"turn_detection": None}},
                               "omni": {"video": False}})
    assert cfg.turn_detection is None and cfg.omni == P.OmniOptions(video=False, seed=7)


def test_to_wire_is_the_ga_session_and_reads_back() -> None:
    cfg = P.apply_update(P.SessionConfig(), {"instructions": "hi", "max_output_tokens": 99,
                                             "audio": {"output": {"format": {"type": "audio/pcmu"},
                                                                  "voice": "default"}}})
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
    ({"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,
      "audio_end_ms": -1}, "invalid_value", "audio_end_ms", "outside"),
    ({"type": "conversation.item.truncate", "item_id": "i", "content_index": "0",
      "audio_end_ms": 5}, "invalid_type", "content_index", "expected an integer"),
    ({"type": "conversation.item.delete", "item_id": True}, "invalid_type", "item_id", "boolean"),
    ({"type": "conversation.item.create", "item": {"type": "function_call"}}, "invalid_value",
     "item.type", "function calling"),
    ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
        {"type": "output_text", "text": "x"}]}}, "invalid_value", "item.content[0].type",
     "input_text"),
    ({"type": "response.create", "response": {"voice": "alloy"}}, "unknown_parameter",
     "response.voice", "session.update"),
    ({"type": "response.create", "response": {"max_output_tokens": 0}}, "invalid_value",
     "response.max_output_tokens", "outside"),
    ({"type": "response.create", "response": {"instructions": "shout"}}, "unknown_parameter",
     "response.instructions", "system prompt"),
    ({"type": "response.create", "response": {"conversation": "none"}}, "invalid_value",
     "response.conversation", "'auto'"),
    ({"type": "response.create", "response": {"temperature": 9}}, "invalid_value",
     "response.temperature", "outside"),
    ({"type": "session.update"}, "missing_required_parameter", "session", "'session'"),
    ({"type": "session.update", "session": {"bogus": 1}}, "unknown_parameter", "session.bogus", ""),
    ({"type": "session.update", "session": {"type": "transcription"}}, "invalid_value",
     "session.type", "'realtime'"),
    ({"type": "session.update", "session": {"audio": {"input": {"format": {
        "type": "audio/pcm", "rate": 16000}}}}}, "invalid_value", "session.audio.input.format.rate",
     "24000"),
    ({"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "semantic_vad"}}}}}, "invalid_value", "session.audio.input.turn_detection.type",
     "server_vad"),
    ({"type": "session.update", "session": {"turn_detection": {"type": "server_vad",
                                                               "threshold": 2}}},
     "invalid_value", "session.turn_detection.threshold", "outside"),
    ({"type": "session.update", "session": {"audio": {"output": {"omni_reference_audio": {
        "format": "pcm16", "data": B64}}}}}, "missing_required_parameter",
     "session.audio.output.omni_reference_audio.rate", "rate"),
    ({"type": "session.update", "session": {"tools": [{"type": "function"}]}}, "invalid_value",
     "session.tools", "not supported"),
]


@pytest.mark.parametrize("raw,code,param,words", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_a_clear_protocol_error(raw: object, code: str, param: str | None,
                                             words: str) -> None:
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
SAMPLE_ARGS = {"session": {}, "item": {}, "response": {}, "part": {}, "error_obj": {},
               "audio_start_ms": 0, "audio_end_ms": 10, "item_id": "item_1",
               "previous_item_id": None, "content_index": 0, "output_index": 0,
               "response_id": "resp_1", "delta": "x", "transcript": "t", "text": "t"}


def test_every_server_builder_has_type_and_event_id() -> None:
    seen = set()
    for name, fn in inspect.getmembers(P, inspect.isfunction):
        if fn.__module__ != P.__name__ or name.startswith("_") or name in (
                "server_event", "item_object", "response_object", "new_id", "apply_update",
                "to_wire", "parse_client_event"):
            continue
        event = fn(**{k: SAMPLE_ARGS[k] for k in inspect.signature(fn).parameters})
        assert event["type"] in P.SERVER_EVENT_TYPES and event["event_id"].startswith("event_")
        json.dumps(event)
        seen.add(event["type"])
    assert seen == P.SERVER_EVENT_TYPES  # one builder per server event


def test_response_object_carries_timings_extension() -> None:
    resp = P.response_object("resp_1", "cancelled", status_details={
        "type": "cancelled", "reason": "turn_detected"}, timings_ms={"first_audio_ms": 412.0})
    assert resp["omni"] == {"timings": {"first_audio_ms": 412.0}} and resp["output"] == []
    with pytest.raises(AssertionError):
        P.response_object("resp_1", "done")


def test_error_events_and_close_codes() -> None:
    try:
        parse({"type": "nope", "event_id": "ev_1"})
    except E.ProtocolError as exc:
        event = E.to_error_event(exc)
    assert event["type"] == "error" and event["event_id"].startswith("event_")
    assert event["error"] == {"type": "invalid_request_error", "code": "invalid_value",
                              "message": "Unknown event type 'nope'.", "param": "type",
                              "event_id": "ev_1"}
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
