"""The /v1/realtime wire protocol (OpenAI Realtime, GA event names), defined once for the server.

Owns: every client event the gateway accepts (frozen dataclasses, validated by
`parse_client_event`, beta aliases mapped to GA), one builder per server event (`server_event`
plus named helpers that add `type` and `event_id`), and re-exports the per-session
`SessionConfig` (session_config.py). Our extensions are namespaced: the `input_image_buffer.append` event,
`audio.output.omni_reference_audio`, the `omni` session options and `response.omni.timings`.
Does not own: decoding media (codecs.py), turning exceptions into `error` events (errors.py), or
what the session does with an event. docs/protocol.md is the page for humans.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import ProtocolError

# Server events live in events.py; re-exported so `protocol` names every message.
from .events import *
from .events import new_id

# The session object lives in session_config.py; re-exported so `protocol` names every message.
from ..session.config import ResponseParams
from .session_config import (
    AUDIO_FORMATS,
    G711_RATE_HZ,
    PCM_RATE_HZ,
    AudioFormat,
    OmniOptions,
    ReferenceAudio,
    ServerVad,
    SessionConfig,
    Transcription,
    apply_update,
    parse_max_tokens,
    parse_modalities,
    parse_tools,
    to_wire,
)
from .tool_config import parse_choice
from .tool_items import ITEM_TYPES, call_item
from .validate import JSON_NAMES, as_type, b64, bad, get_field, in_range, no_unknown, one_of

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a 30 s PCM16 reference clip is ~1.9 MB as base64


# ---------------------------------------------------------------- client events
@dataclass(frozen=True)
class SessionUpdate:
    TYPE: ClassVar[str] = "session.update"
    event_id: str | None
    session: Mapping[str, Any]  # already validated; merge it with apply_update


@dataclass(frozen=True)
class InputAudioBufferAppend:
    TYPE: ClassVar[str] = "input_audio_buffer.append"
    event_id: str | None
    audio: bytes  # in the session's input format; codecs.decode_input_audio turns it to 16 kHz


@dataclass(frozen=True)
class InputAudioBufferCommit:
    TYPE: ClassVar[str] = "input_audio_buffer.commit"
    event_id: str | None


@dataclass(frozen=True)
class InputAudioBufferClear:
    TYPE: ClassVar[str] = "input_audio_buffer.clear"
    event_id: str | None


@dataclass(frozen=True)
class InputImageBufferAppend:
    """Extension: one camera frame (JPEG/PNG/WebP), joined to the current 1-s unit."""

    TYPE: ClassVar[str] = "input_image_buffer.append"
    event_id: str | None
    image: bytes
    captured_ms: float | None = None  # when the client captured it (any monotonic clock); None: on arrival


@dataclass(frozen=True)
class ContentPart:
    type: str  # input_text | input_audio | input_image | output_text | output_audio
    text: str | None = None  # the text, or an audio part's transcript
    audio: bytes | None = None  # input_audio only, in the session's input format
    image: bytes | None = None  # input_image only, still encoded


@dataclass(frozen=True)
class ConversationItem:
    id: str | None
    role: str  # user | assistant | system ("" for function_call / function_call_output items)
    content: tuple[ContentPart, ...]
    type: str = "message"  # message | function_call | function_call_output
    call_id: str | None = None  # function_call, function_call_output
    name: str | None = None  # function_call
    arguments: str | None = None  # function_call: a JSON object as text
    output: str | None = None  # function_call_output


@dataclass(frozen=True)
class ConversationItemCreate:
    TYPE: ClassVar[str] = "conversation.item.create"
    event_id: str | None
    item: ConversationItem
    previous_item_id: str | None = None


@dataclass(frozen=True)
class ConversationItemTruncate:
    TYPE: ClassVar[str] = "conversation.item.truncate"
    event_id: str | None
    item_id: str
    content_index: int
    audio_end_ms: int  # what the client actually played; the rest is dropped from context


@dataclass(frozen=True)
class ConversationItemDelete:
    TYPE: ClassVar[str] = "conversation.item.delete"
    event_id: str | None
    item_id: str


@dataclass(frozen=True)
class ConversationItemRetrieve:
    TYPE: ClassVar[str] = "conversation.item.retrieve"
    event_id: str | None
    item_id: str


@dataclass(frozen=True)
class ResponseCreate:
    TYPE: ClassVar[str] = "response.create"
    event_id: str | None
    response: ResponseParams = ResponseParams()


@dataclass(frozen=True)
class ResponseCancel:
    TYPE: ClassVar[str] = "response.cancel"
    event_id: str | None
    response_id: str | None = None  # None: the response in progress


ClientEvent = (
    SessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | InputImageBufferAppend
    | ConversationItemCreate
    | ConversationItemTruncate
    | ConversationItemDelete
    | ConversationItemRetrieve
    | ResponseCreate
    | ResponseCancel
)

_PART_TYPES = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text", "output_audio"),
}
_BETA_PARTS = {"text": "output_text", "audio": "output_audio"}  # beta assistant content types


def _part(role: str, v: Any, p: str) -> ContentPart:
    o = as_type(v, dict, p)
    t: str = get_field(o, "type", str, p, required=True)
    if role == "assistant":
        t = _BETA_PARTS.get(t, t)
    one_of(t, _PART_TYPES[role], f"{p}.type")
    if t.endswith("_text"):
        no_unknown(o, {"type", "text"}, p)
        return ContentPart(t, text=get_field(o, "text", str, p, required=True))
    if t == "input_image":
        no_unknown(o, {"type", "image_url", "detail"}, p)
        url = get_field(o, "image_url", str, p, required=True)  # GA: a data URL
        return ContentPart(t, image=b64(url, f"{p}.image_url"))
    no_unknown(o, {"type", "audio", "transcript"}, p)
    if t == "output_audio":  # assistant audio re-enters the context as its transcript
        return ContentPart(t, text=get_field(o, "transcript", str, p, required=True))
    audio = b64(get_field(o, "audio", str, p, required=True), f"{p}.audio")
    return ContentPart(t, text=get_field(o, "transcript", str, p), audio=audio)


def _item(v: Any, p: str) -> ConversationItem:
    o = as_type(v, dict, p)
    kind = one_of(get_field(o, "type", str, p, required=True), ITEM_TYPES, f"{p}.type")
    if kind != "message":
        return call_item(kind, o, p)
    no_unknown(o, {"id", "type", "object", "role", "content", "status"}, p)
    role = one_of(get_field(o, "role", str, p, required=True), tuple(_PART_TYPES), f"{p}.role")
    parts = get_field(o, "content", list, p, required=True)
    if not parts:
        raise bad("invalid_value", f"Invalid value for '{p}.content': must not be empty.", f"{p}.content")
    content = tuple(_part(role, x, f"{p}.content[{i}]") for i, x in enumerate(parts))
    return ConversationItem(get_field(o, "id", str, p), role, content)


def _response_params(o: Mapping[str, Any]) -> ResponseParams:
    p = "response"
    for k in ("audio", "voice", "output_audio_format", "input", "instructions"):
        if o.get(k) is not None:  # silently ignoring these would send the wrong format, voice or persona
            raise bad(
                "unknown_parameter",
                f"'{p}.{k}' is not supported per response; set it with "
                "session.update (MiniCPM-o's instructions and voice are its system prompt, "
                "fixed for a context).",
                f"{p}.{k}",
            )
    no_unknown(
        o,
        {
            "output_modalities",
            "modalities",
            "max_output_tokens",
            "max_response_output_tokens",
            "conversation",
            "metadata",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "temperature",
        },
        p,
    )
    tools = parse_tools(None, o["tools"], f"{p}.tools")["tools"] if o.get("tools") is not None else None
    choice = parse_choice(o["tool_choice"], f"{p}.tool_choice") if o.get("tool_choice") is not None else None
    parallel = get_field(o, "parallel_tool_calls", bool, p)
    mods = next(
        (parse_modalities(o[k], f"{p}.{k}") for k in ("output_modalities", "modalities") if o.get(k) is not None), None
    )
    tok = next(
        (
            o[k] if o[k] == "inf" else parse_max_tokens(o[k], f"{p}.{k}")
            for k in ("max_output_tokens", "max_response_output_tokens")
            if o.get(k) is not None
        ),
        None,
    )
    # Out-of-band replies ("none") would need a second context: every reply joins this one.
    one_of(get_field(o, "conversation", str, p) or "auto", ("auto",), f"{p}.conversation")
    temp = get_field(o, "temperature", float, p)
    if temp is not None:
        in_range(temp, 0.05, 2.0, f"{p}.temperature")
    return ResponseParams(mods, tok, temp, get_field(o, "metadata", dict, p), tools, choice, parallel)


def _keys(o: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    no_unknown(o, {"type", "event_id", *names}, "")
    return o


def _bare(cls: Callable[[str | None], ClientEvent], o: Mapping[str, Any], eid: str | None) -> ClientEvent:
    _keys(o)
    return cls(eid)


def _session_update(o: Mapping[str, Any], eid: str | None) -> SessionUpdate:
    s = get_field(_keys(o, "session"), "session", dict, "", required=True)
    apply_update(SessionConfig(), s)  # validate now, so the error names this event
    return SessionUpdate(eid, s)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str | None], ClientEvent]] = {
    "session.update": _session_update,
    "input_audio_buffer.append": lambda o, e: InputAudioBufferAppend(
        e, b64(get_field(_keys(o, "audio"), "audio", str, "", required=True), "audio")
    ),
    "input_audio_buffer.commit": lambda o, e: _bare(InputAudioBufferCommit, o, e),
    "input_audio_buffer.clear": lambda o, e: _bare(InputAudioBufferClear, o, e),
    "input_image_buffer.append": lambda o, e: InputImageBufferAppend(
        e,
        b64(get_field(_keys(o, "image", "captured_ms"), "image", str, "", required=True), "image"),
        _captured_ms(o),
    ),
    "conversation.item.create": lambda o, e: ConversationItemCreate(
        e,
        _item(get_field(_keys(o, "item", "previous_item_id"), "item", dict, "", required=True), "item"),
        get_field(o, "previous_item_id", str, ""),
    ),
    "conversation.item.truncate": lambda o, e: _truncate(_keys(o, "item_id", "content_index", "audio_end_ms"), e),
    "conversation.item.delete": lambda o, e: ConversationItemDelete(
        e, get_field(_keys(o, "item_id"), "item_id", str, "", required=True)
    ),
    "conversation.item.retrieve": lambda o, e: ConversationItemRetrieve(
        e, get_field(_keys(o, "item_id"), "item_id", str, "", required=True)
    ),
    "response.create": lambda o, e: ResponseCreate(
        e, _response_params(get_field(_keys(o, "response"), "response", dict, "") or {})
    ),
    "response.cancel": lambda o, e: ResponseCancel(e, get_field(_keys(o, "response_id"), "response_id", str, "")),
}


def _captured_ms(o: Mapping[str, Any]) -> float | None:
    t = get_field(o, "captured_ms", float, "")
    if t is not None and not (math.isfinite(t) and 0 <= t < 1e15):
        raise bad("invalid_value", "Invalid value for 'captured_ms': a finite time in ms, 0 or more.", "captured_ms")
    return None if t is None else float(t)


def _truncate(o: Mapping[str, Any], eid: str | None) -> ConversationItemTruncate:
    ci = get_field(o, "content_index", int, "", required=True)
    end = get_field(o, "audio_end_ms", int, "", required=True)
    in_range(ci, 0, 1_000, "content_index")
    in_range(end, 0, 24 * 3600 * 1000, "audio_end_ms")
    return ConversationItemTruncate(eid, get_field(o, "item_id", str, "", required=True), ci, end)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_client_event(raw: str | bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ClientEvent:
    """Parse and validate one client event (a WebSocket text frame or data-channel message).

    Raises:
        ProtocolError: with an OpenAI-style code, a message naming the problem, the offending
            `param`, and the client's `event_id` when it could be read.
    """
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise bad("message_too_large", f"Message is {size} bytes; the limit is {max_bytes}.", None)
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad("invalid_json", f"Message is not valid JSON: {e}.", None) from None
    except RecursionError:
        raise bad("invalid_json", "Message is not valid JSON here: it is nested too deeply.", None) from None
    if not isinstance(obj, dict):
        raise bad(
            "invalid_json", f"A client event must be a JSON object, got {JSON_NAMES.get(type(obj), 'a value')}.", None
        )
    eid = get_field(obj, "event_id", str, "")
    try:
        etype = get_field(obj, "type", str, "", required=True)
        if etype not in _PARSERS:
            near = difflib.get_close_matches(etype, _PARSERS, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise bad("invalid_value", f"Unknown event type '{etype}'.{hint}", "type")
        return _PARSERS[etype](obj, eid)
    except ProtocolError as e:
        e.event_id = eid
        raise
