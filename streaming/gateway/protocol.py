"""The /v1/realtime wire protocol (OpenAI Realtime, GA event names), defined once for the server.

Owns: every client event the gateway accepts (frozen dataclasses, validated by
`parse_client_event`, beta aliases mapped to GA), one builder per server event (`server_event`
plus named helpers that add `type` and `event_id`), and the per-session `SessionConfig` with
`apply_update` / `to_wire`. Our extensions are namespaced: the `input_image_buffer.append` event,
`audio.output.omni_reference_audio`, the `omni` session options and `response.omni.timings`.
Does not own: decoding media (codecs.py), turning exceptions into `error` events (errors.py), or
what the session does with an event. docs/protocol.md is the page for humans.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import difflib
import json
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import ProtocolError

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a 30 s PCM16 reference clip is ~1.9 MB as base64
PCM_RATE_HZ = 24_000  # the only `audio/pcm` rate OpenAI Realtime defines
G711_RATE_HZ = 8_000
MAX_INSTRUCTIONS_CHARS = 32_000
MAX_OUTPUT_TOKENS = 4_096
AUDIO_FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}


def new_id(prefix: str) -> str:
    """An OpenAI-style id such as `event_3f2a...`, `item_...`, `resp_...`, `sess_...`."""
    return f"{prefix}_{secrets.token_hex(8)}"


# ---------------------------------------------------------------- validation helpers
_JSON_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "an object", list: "an array", type(None): "null"}


def _bad(code: str, message: str, param: str | None) -> ProtocolError:
    return ProtocolError(code, message, param)


def _as(v: Any, kind: type, p: str) -> Any:
    """Check a value against a JSON type: int is never bool, float accepts int."""
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
        got = _JSON_NAMES.get(type(v), type(v).__name__)
        raise _bad("invalid_type", f"Invalid type for '{p}': expected {_JSON_NAMES[kind]}, "
                   f"but got {got} instead.", p)
    return v


def _get(obj: Mapping[str, Any], key: str, kind: type, path: str, required: bool = False) -> Any:
    """obj[key] type-checked; an absent or null optional field is None (as in OpenAI's API)."""
    p = f"{path}.{key}" if path else key
    if obj.get(key) is None and not required:
        return None
    if key not in obj:
        raise _bad("missing_required_parameter", f"Missing required parameter: '{p}'.", p)
    return _as(obj[key], kind, p)


def _in_range(v: float, lo: float, hi: float, p: str) -> None:
    if not lo <= v <= hi:
        raise _bad("invalid_value", f"Invalid value for '{p}': {v} is outside [{lo}, {hi}].", p)


def _one_of(v: str, allowed: tuple[str, ...], p: str) -> str:
    if v not in allowed:
        raise _bad("invalid_value", f"Invalid value for '{p}': '{v}'. Supported values are: "
                   + ", ".join(f"'{a}'" for a in allowed) + ".", p)
    return v


def _no_unknown(obj: Mapping[str, Any], allowed: Collection[str], path: str) -> None:
    for k in obj:
        if k not in allowed:
            p = f"{path}.{k}" if path else k
            raise _bad("unknown_parameter", f"Unknown parameter: '{p}'.", p)


def _b64(v: str, p: str) -> bytes:
    """Decode base64 (a `data:...;base64,` prefix is allowed); empty payloads are an error."""
    if v.startswith("data:") and ";base64," in v:
        v = v.split(";base64,", 1)[1]
    try:
        data = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _bad("invalid_value", f"Invalid base64 in '{p}': {e}.", p) from None
    if not data:
        raise _bad("invalid_value", f"Invalid value for '{p}': the payload is empty.", p)
    return data


# ---------------------------------------------------------------- session configuration
@dataclass(frozen=True)
class AudioFormat:
    """`audio/pcm` (PCM16 LE, 24 kHz, mono) or G.711 `audio/pcmu` / `audio/pcma` (8 kHz)."""

    type: str = "audio/pcm"

    @property
    def rate_hz(self) -> int:
        return PCM_RATE_HZ if self.type == "audio/pcm" else G711_RATE_HZ


@dataclass(frozen=True)
class ServerVad:
    """`server_vad` turn detection; defaults are OpenAI's (the server may override them)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True


@dataclass(frozen=True)
class ReferenceAudio:
    """Extension: a voice-clone clip, still encoded (codecs.read_wav_any decodes and checks it)."""

    data: bytes
    format: str  # "wav" (any soundfile-readable file) or "pcm16" (raw LE at rate_hz)
    rate_hz: int | None = None


@dataclass(frozen=True)
class OmniOptions:
    """Extension `session.omni`: camera frames on/off and a sampling seed (None = random)."""

    video: bool = True
    seed: int | None = None


@dataclass(frozen=True)
class SessionConfig:
    """Everything a client can set with `session.update`."""

    instructions: str = ""
    output_modalities: tuple[str, ...] = ("audio",)  # audio always comes with its transcript
    input_format: AudioFormat = AudioFormat()
    output_format: AudioFormat = AudioFormat()
    turn_detection: ServerVad | None = ServerVad()
    voice: str = "default"
    reference_audio: ReferenceAudio | None = None
    max_output_tokens: int | None = None  # None = "inf" (the server's max_reply_tokens still caps)
    omni: OmniOptions = OmniOptions()


def _format(v: Any, p: str) -> AudioFormat:
    if isinstance(v, str):  # beta: "pcm16" | "g711_ulaw" | "g711_alaw"
        return AudioFormat(_BETA_FORMATS[_one_of(v, tuple(_BETA_FORMATS), p)])
    obj = _as(v, dict, p)
    _no_unknown(obj, {"type", "rate"}, p)
    fmt = AudioFormat(_one_of(_get(obj, "type", str, p, required=True), AUDIO_FORMATS,
                              f"{p}.type"))
    rate = _get(obj, "rate", int, p)
    if rate is not None and rate != fmt.rate_hz:
        raise _bad("invalid_value", f"Invalid value for '{p}.rate': {fmt.type} is {fmt.rate_hz} Hz "
                   f"here, got {rate}.", f"{p}.rate")
    return fmt


_VAD_LIMITS = {"threshold": (float, 0.0, 1.0), "prefix_padding_ms": (int, 0, 10_000),
               "silence_duration_ms": (int, 1, 10_000), "create_response": (bool, 0, 1),
               "interrupt_response": (bool, 0, 1)}


def _turn_detection(cur: ServerVad | None, v: Any, p: str) -> ServerVad | None:
    if v is None:
        return None  # manual turns: the client commits and asks for responses
    obj = _as(v, dict, p)
    _no_unknown(obj, {*_VAD_LIMITS, "type", "idle_timeout_ms"}, p)
    _one_of(_get(obj, "type", str, p, required=True), ("server_vad",), f"{p}.type")
    changes = {}
    for name, (kind, lo, hi) in _VAD_LIMITS.items():
        if (val := _get(obj, name, kind, p)) is not None:
            _in_range(val, lo, hi, f"{p}.{name}")
            changes[name] = val
    # Missing fields keep the current values (OpenAI's defaults if VAD was off).
    return dataclasses.replace(cur or ServerVad(), **changes)


def _reference(v: Any, p: str) -> ReferenceAudio | None:
    if v is None:
        return None  # back to the model's default voice
    obj = _as(v, dict, p)
    _no_unknown(obj, {"data", "format", "rate"}, p)
    fmt = _one_of(_get(obj, "format", str, p, required=True), ("wav", "pcm16"), f"{p}.format")
    data = _b64(_get(obj, "data", str, p, required=True), f"{p}.data")
    rate = _get(obj, "rate", int, p, required=fmt == "pcm16")
    if rate is not None:
        _in_range(rate, 8_000, 48_000, f"{p}.rate")
    return ReferenceAudio(data, fmt, rate)


def _modalities(v: Any, p: str) -> tuple[str, ...]:
    items = _as(v, list, p)
    for i, m in enumerate(items):
        _one_of(_as(m, str, f"{p}[{i}]"), ("audio", "text"), f"{p}[{i}]")
    if not items:
        raise _bad("invalid_value", f"Invalid value for '{p}': must not be empty.", p)
    return ("audio",) if "audio" in items else ("text",)  # beta ["text","audio"] == GA ["audio"]


def _max_tokens(v: Any, p: str) -> int | None:
    if v == "inf":
        return None
    n: int = _as(v, int, p)
    _in_range(n, 1, MAX_OUTPUT_TOKENS, p)
    return n


def _instructions(v: Any, p: str) -> str:
    s: str = _as(v, str, p)
    if len(s) > MAX_INSTRUCTIONS_CHARS:
        raise _bad("invalid_value", f"'{p}' is {len(s)} characters; the limit is "
                   f"{MAX_INSTRUCTIONS_CHARS}.", p)
    return s


def _voice(v: Any, p: str) -> str:
    s: str = _as(v, str, p)  # any name is kept; all built-in names use the model's voice
    if not 0 < len(s) <= 64:
        raise _bad("invalid_value", f"Invalid value for '{p}': 1 to 64 characters.", p)
    return s


def _omni(cur: OmniOptions, v: Any, p: str) -> OmniOptions:
    obj = _as(v, dict, p)
    _no_unknown(obj, {"video", "seed"}, p)
    video = _get(obj, "video", bool, p)
    seed = cur.seed
    if "seed" in obj:  # null clears the seed (random sampling again)
        seed = _get(obj, "seed", int, p)
        if seed is not None:
            _in_range(seed, 0, 2**63 - 1, f"{p}.seed")
    return OmniOptions(cur.video if video is None else video, seed)


def _tools(c: SessionConfig | None, v: Any, p: str) -> dict[str, Any]:
    if _as(v, list, p):
        raise _bad("invalid_value", f"'{p}': function tools are not supported by this model.", p)
    return {}


def _session_type(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
    _one_of(_as(v, str, p), ("realtime",), p)  # "transcription" sessions are not offered
    return {}


# A field handler validates one wire field and returns the SessionConfig fields it changes.
_Field = Callable[[SessionConfig, Any, str], dict[str, Any]]


def _ignored(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
    return {}  # accepted so stock OpenAI clients work; no effect on this model


def _to(name: str, parse: Callable[[Any, str], Any]) -> _Field:
    return lambda c, v, p: {name: parse(v, p)}


def _table(table: Mapping[str, _Field]) -> _Field:
    """A handler for a nested object: unknown keys are errors, known ones go to their handler."""
    def handle(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
        obj = _as(v, dict, p)
        _no_unknown(obj, table.keys(), p)
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(table[key](c, value, f"{p}.{key}"))
        return out
    return handle


_TURN: _Field = lambda c, v, p: {"turn_detection": _turn_detection(c.turn_detection, v, p)}
_AUDIO = _table({
    "input": _table({"format": _to("input_format", _format), "turn_detection": _TURN,
                     "transcription": _ignored, "noise_reduction": _ignored}),
    "output": _table({"format": _to("output_format", _format), "voice": _to("voice", _voice),
                      "speed": _ignored,
                      "omni_reference_audio": _to("reference_audio", _reference)}),
})
_SESSION = _table({
    "type": _session_type,
    "instructions": _to("instructions", _instructions),
    "output_modalities": _to("output_modalities", _modalities),
    "max_output_tokens": _to("max_output_tokens", _max_tokens),
    "audio": _AUDIO,
    "omni": lambda c, v, p: {"omni": _omni(c.omni, v, p)},
    "tools": _tools,
    # beta aliases: the top-level session fields that preceded the GA `audio` object
    "modalities": _to("output_modalities", _modalities),
    "max_response_output_tokens": _to("max_output_tokens", _max_tokens),
    "input_audio_format": _to("input_format", _format),
    "output_audio_format": _to("output_format", _format),
    "turn_detection": _TURN,
    "voice": _to("voice", _voice),
    **{k: _ignored for k in ("id", "object", "model", "tool_choice", "temperature", "tracing",
                             "include", "prompt", "truncation", "expires_at", "speed",
                             "input_audio_transcription", "input_audio_noise_reduction")},
})


def apply_update(config: SessionConfig, session: Mapping[str, Any]) -> SessionConfig:
    """Validate a (partial) session object, GA or beta shaped, and merge it into `config`.

    Absent fields keep their value; `turn_detection: null` disables VAD (manual commits);
    `omni_reference_audio: null` returns to the default voice. Raises ProtocolError naming the
    offending `session.…` param.
    """
    return dataclasses.replace(config, **_SESSION(config, session, "session"))


def _format_wire(f: AudioFormat) -> dict[str, Any]:
    return {"type": f.type, "rate": f.rate_hz} if f.type == "audio/pcm" else {"type": f.type}


def to_wire(config: SessionConfig, session_id: str | None = None,
            model: str | None = None) -> dict[str, Any]:
    """The GA session object for `session.created` / `session.updated`.

    The reference clip itself is not echoed, only its format and size.
    """
    td = config.turn_detection
    ref = config.reference_audio
    wire: dict[str, Any] = {
        "type": "realtime", "object": "realtime.session",
        "instructions": config.instructions,
        "output_modalities": list(config.output_modalities),
        "max_output_tokens": config.max_output_tokens or "inf",
        "audio": {
            "input": {"format": _format_wire(config.input_format), "transcription": None,
                      "noise_reduction": None,
                      "turn_detection": None if td is None else
                      {"type": "server_vad", **dataclasses.asdict(td)}},
            "output": {"format": _format_wire(config.output_format), "voice": config.voice,
                       "speed": 1.0, "omni_reference_audio": None if ref is None else
                       {"format": ref.format, "rate": ref.rate_hz, "size_bytes": len(ref.data)}},
        },
        "tools": [], "tool_choice": "auto",
        "omni": dataclasses.asdict(config.omni),
    }
    if session_id is not None:
        wire["id"] = session_id
    if model is not None:
        wire["model"] = model
    return wire


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


@dataclass(frozen=True)
class ContentPart:
    type: str  # input_text | input_audio | input_image | output_text | output_audio
    text: str | None = None  # the text, or an audio part's transcript
    audio: bytes | None = None  # input_audio only, in the session's input format
    image: bytes | None = None  # input_image only, still encoded


@dataclass(frozen=True)
class ConversationItem:
    id: str | None
    role: str  # user | assistant | system
    content: tuple[ContentPart, ...]


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
class ResponseParams:
    """Per-response overrides; None means "use the session's"."""
    instructions: str | None = None
    output_modalities: tuple[str, ...] | None = None
    max_output_tokens: int | str | None = None  # "inf": no cap but the server's
    conversation: str = "auto"  # "none": out-of-band, the reply is not added to the conversation
    metadata: Mapping[str, Any] | None = None


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


ClientEvent = (SessionUpdate | InputAudioBufferAppend | InputAudioBufferCommit
               | InputAudioBufferClear | InputImageBufferAppend | ConversationItemCreate
               | ConversationItemTruncate | ConversationItemDelete | ResponseCreate
               | ResponseCancel)

_PART_TYPES = {"user": ("input_text", "input_audio", "input_image"), "system": ("input_text",),
               "assistant": ("output_text", "output_audio")}
_BETA_PARTS = {"text": "output_text", "audio": "output_audio"}  # beta assistant content types


def _part(role: str, v: Any, p: str) -> ContentPart:
    o = _as(v, dict, p)
    t = _get(o, "type", str, p, required=True)
    if role == "assistant":
        t = _BETA_PARTS.get(t, t)
    _one_of(t, _PART_TYPES[role], f"{p}.type")
    if t.endswith("_text"):
        _no_unknown(o, {"type", "text"}, p)
        return ContentPart(t, text=_get(o, "text", str, p, required=True))
    if t == "input_image":
        _no_unknown(o, {"type", "image_url", "detail"}, p)
        url = _get(o, "image_url", str, p, required=True)  # GA: a data URL
        return ContentPart(t, image=_b64(url, f"{p}.image_url"))
    _no_unknown(o, {"type", "audio", "transcript"}, p)
    if t == "output_audio":  # assistant audio re-enters the context as its transcript
        return ContentPart(t, text=_get(o, "transcript", str, p, required=True))
    audio = _b64(_get(o, "audio", str, p, required=True), f"{p}.audio")
    return ContentPart(t, text=_get(o, "transcript", str, p), audio=audio)


def _item(v: Any, p: str) -> ConversationItem:
    o = _as(v, dict, p)
    _no_unknown(o, {"id", "type", "object", "role", "content", "status"}, p)
    if _get(o, "type", str, p, required=True) != "message":
        raise _bad("invalid_value", f"Invalid value for '{p}.type': only 'message' items are "
                   "supported (this model has no function calling).", f"{p}.type")
    role = _one_of(_get(o, "role", str, p, required=True), tuple(_PART_TYPES), f"{p}.role")
    parts = _get(o, "content", list, p, required=True)
    if not parts:
        raise _bad("invalid_value", f"Invalid value for '{p}.content': must not be empty.",
                   f"{p}.content")
    content = tuple(_part(role, x, f"{p}.content[{i}]") for i, x in enumerate(parts))
    return ConversationItem(_get(o, "id", str, p), role, content)


def _response_params(o: Mapping[str, Any]) -> ResponseParams:
    p = "response"
    for k in ("audio", "voice", "output_audio_format", "input"):
        if k in o:  # silently ignoring these would send the wrong format or voice
            raise _bad("unknown_parameter", f"'{p}.{k}' is not supported per response; "
                       "set audio options with session.update.", f"{p}.{k}")
    _no_unknown(o, {"instructions", "output_modalities", "modalities", "max_output_tokens",
                    "max_response_output_tokens", "conversation", "metadata", "tools",
                    "tool_choice", "temperature"}, p)
    if o.get("tools"):
        _tools(None, o["tools"], f"{p}.tools")
    mods = next((_modalities(o[k], f"{p}.{k}") for k in ("output_modalities", "modalities")
                 if o.get(k) is not None), None)
    tok = next((o[k] if o[k] == "inf" else _max_tokens(o[k], f"{p}.{k}")
                for k in ("max_output_tokens", "max_response_output_tokens")
                if o.get(k) is not None), None)
    conv = _get(o, "conversation", str, p) or "auto"
    _one_of(conv, ("auto", "none"), f"{p}.conversation")
    instr = o.get("instructions")
    instr = None if instr is None else _instructions(instr, f"{p}.instructions")
    return ResponseParams(instr, mods, tok, conv, _get(o, "metadata", dict, p))


def _keys(o: Mapping[str, Any], *names: str) -> Mapping[str, Any]:
    _no_unknown(o, {"type", "event_id", *names}, "")
    return o


def _bare(cls: Callable[[str | None], ClientEvent], o: Mapping[str, Any],
          eid: str | None) -> ClientEvent:
    _keys(o)
    return cls(eid)


def _session_update(o: Mapping[str, Any], eid: str | None) -> SessionUpdate:
    s = _get(_keys(o, "session"), "session", dict, "", required=True)
    apply_update(SessionConfig(), s)  # validate now, so the error names this event
    return SessionUpdate(eid, s)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str | None], ClientEvent]] = {
    "session.update": _session_update,
    "input_audio_buffer.append": lambda o, e: InputAudioBufferAppend(
        e, _b64(_get(_keys(o, "audio"), "audio", str, "", required=True), "audio")),
    "input_audio_buffer.commit": lambda o, e: _bare(InputAudioBufferCommit, o, e),
    "input_audio_buffer.clear": lambda o, e: _bare(InputAudioBufferClear, o, e),
    "input_image_buffer.append": lambda o, e: InputImageBufferAppend(
        e, _b64(_get(_keys(o, "image"), "image", str, "", required=True), "image")),
    "conversation.item.create": lambda o, e: ConversationItemCreate(
        e, _item(_get(_keys(o, "item", "previous_item_id"), "item", dict, "", required=True),
                 "item"), _get(o, "previous_item_id", str, "")),
    "conversation.item.truncate": lambda o, e: _truncate(
        _keys(o, "item_id", "content_index", "audio_end_ms"), e),
    "conversation.item.delete": lambda o, e: ConversationItemDelete(
        e, _get(_keys(o, "item_id"), "item_id", str, "", required=True)),
    "response.create": lambda o, e: ResponseCreate(
        e, _response_params(_get(_keys(o, "response"), "response", dict, "") or {})),
    "response.cancel": lambda o, e: ResponseCancel(
        e, _get(_keys(o, "response_id"), "response_id", str, "")),
}


def _truncate(o: Mapping[str, Any], eid: str | None) -> ConversationItemTruncate:
    ci = _get(o, "content_index", int, "", required=True)
    end = _get(o, "audio_end_ms", int, "", required=True)
    _in_range(ci, 0, 1_000, "content_index")
    _in_range(end, 0, 24 * 3600 * 1000, "audio_end_ms")
    return ConversationItemTruncate(eid, _get(o, "item_id", str, "", required=True), ci, end)


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
        raise _bad("message_too_large", f"Message is {size} bytes; the limit is {max_bytes}.", None)
    try:
        obj = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad("invalid_json", f"Message is not valid JSON: {e}.", None) from None
    if not isinstance(obj, dict):
        raise _bad("invalid_json", "A client event must be a JSON object, "
                   f"got {_JSON_NAMES.get(type(obj), 'a value')}.", None)
    eid = _get(obj, "event_id", str, "")
    try:
        etype = _get(obj, "type", str, "", required=True)
        if etype not in _PARSERS:
            near = difflib.get_close_matches(etype, _PARSERS, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise _bad("invalid_value", f"Unknown event type '{etype}'.{hint}", "type")
        return _PARSERS[etype](obj, eid)
    except ProtocolError as e:
        e.event_id = eid
        raise


# ---------------------------------------------------------------- server events
RESPONSE_STATUSES = ("in_progress", "completed", "cancelled", "incomplete", "failed")
SERVER_EVENT_TYPES = frozenset({
    "error", "session.created", "session.updated",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed", "input_audio_buffer.cleared",
    "conversation.item.added", "conversation.item.done", "conversation.item.truncated",
    "conversation.item.deleted", "response.created", "response.done",
    "response.output_item.added", "response.output_item.done",
    "response.content_part.added", "response.content_part.done",
    "response.output_audio.delta", "response.output_audio.done",
    "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.output_text.delta", "response.output_text.done",
})


def server_event(event_type: str, /, **fields: Any) -> dict[str, Any]:
    """Any server event: `type`, a fresh `event_id`, then the fields as given."""
    assert event_type in SERVER_EVENT_TYPES, f"not a server event: {event_type!r}"
    return {"type": event_type, "event_id": new_id("event"), **fields}


def item_object(item_id: str, role: str, content: list[dict[str, Any]],
                status: str = "completed") -> dict[str, Any]:
    """A GA conversation item (`message`), e.g. content `[{"type": "output_audio", ...}]`."""
    return {"id": item_id, "object": "realtime.item", "type": "message", "status": status,
            "role": role, "content": content}


def response_object(response_id: str, status: str, output: list[dict[str, Any]] | None = None,
                    status_details: dict[str, Any] | None = None,
                    usage: dict[str, Any] | None = None,
                    timings_ms: Mapping[str, float] | None = None) -> dict[str, Any]:
    """A GA response; our timing figures go under the `omni` extension key, all in ms."""
    assert status in RESPONSE_STATUSES, f"bad response status {status!r}"
    assert all(k.endswith("_ms") for k in timings_ms or {}), "timing names carry their unit"
    obj = {"id": response_id, "object": "realtime.response", "status": status,
           "status_details": status_details, "output": output or [], "usage": usage}
    if timings_ms is not None:
        obj["omni"] = {"timings": dict(timings_ms)}
    return obj


def _pos(response_id: str, item_id: str, output_index: int, content_index: int) -> dict[str, Any]:
    return {"response_id": response_id, "item_id": item_id, "output_index": output_index,
            "content_index": content_index}


def error(error_obj: dict[str, Any]) -> dict[str, Any]:
    """Build via errors.to_error_event, the one place exceptions become this event."""
    return server_event("error", error=error_obj)


def session_created(session: dict[str, Any]) -> dict[str, Any]:
    return server_event("session.created", session=session)


def session_updated(session: dict[str, Any]) -> dict[str, Any]:
    return server_event("session.updated", session=session)


def speech_started(audio_start_ms: int, item_id: str) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms,
                        item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms,
                        item_id=item_id)


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None) -> dict[str, Any]:
    return server_event("input_audio_buffer.committed", item_id=item_id,
                        previous_item_id=previous_item_id)


def input_audio_buffer_cleared() -> dict[str, Any]:
    return server_event("input_audio_buffer.cleared")


def conversation_item_added(item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
    return server_event("conversation.item.added", item=item, previous_item_id=previous_item_id)


def conversation_item_done(item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
    return server_event("conversation.item.done", item=item, previous_item_id=previous_item_id)


def conversation_item_truncated(item_id: str, content_index: int,
                                audio_end_ms: int) -> dict[str, Any]:
    return server_event("conversation.item.truncated", item_id=item_id,
                        content_index=content_index, audio_end_ms=audio_end_ms)


def conversation_item_deleted(item_id: str) -> dict[str, Any]:
    return server_event("conversation.item.deleted", item_id=item_id)


def response_created(response: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.created", response=response)


def response_done(response: dict[str, Any]) -> dict[str, Any]:
    """The last event of a response; nothing for `response["id"]` is sent after it."""
    return server_event("response.done", response=response)


def response_output_item_added(response_id: str, output_index: int,
                               item: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.output_item.added", response_id=response_id,
                        output_index=output_index, item=item)


def response_output_item_done(response_id: str, output_index: int,
                              item: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.output_item.done", response_id=response_id,
                        output_index=output_index, item=item)


def response_content_part_added(response_id: str, item_id: str, output_index: int,
                                content_index: int, part: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.content_part.added", part=part,
                        **_pos(response_id, item_id, output_index, content_index))


def response_content_part_done(response_id: str, item_id: str, output_index: int,
                               content_index: int, part: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.content_part.done", part=part,
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_audio_delta(response_id: str, item_id: str, output_index: int,
                                content_index: int, delta: str) -> dict[str, Any]:
    """`delta`: base64 audio in the session's output format (codecs.encode_output_audio)."""
    return server_event("response.output_audio.delta", delta=delta,
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_audio_done(response_id: str, item_id: str, output_index: int,
                               content_index: int) -> dict[str, Any]:
    return server_event("response.output_audio.done",
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_audio_transcript_delta(response_id: str, item_id: str, output_index: int,
                                           content_index: int, delta: str) -> dict[str, Any]:
    return server_event("response.output_audio_transcript.delta", delta=delta,
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_audio_transcript_done(response_id: str, item_id: str, output_index: int,
                                          content_index: int, transcript: str) -> dict[str, Any]:
    return server_event("response.output_audio_transcript.done", transcript=transcript,
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_text_delta(response_id: str, item_id: str, output_index: int,
                               content_index: int, delta: str) -> dict[str, Any]:
    return server_event("response.output_text.delta", delta=delta,
                        **_pos(response_id, item_id, output_index, content_index))


def response_output_text_done(response_id: str, item_id: str, output_index: int,
                              content_index: int, text: str) -> dict[str, Any]:
    return server_event("response.output_text.done", text=text,
                        **_pos(response_id, item_id, output_index, content_index))
