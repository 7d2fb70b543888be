"""The session object: what `session.update` may set and what `session.created/updated` show.

Owns the parsing of `SessionConfig` (the values are in session/config.py): `apply_update`
(validate + merge a partial GA or beta session object) and `to_wire` (the GA session object). Extensions: `audio.output.omni_reference_audio`
(a voice-clone clip) and `omni` (camera on/off, sampling seed)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

# The values themselves are the session's (session/config.py); parsing them is the gateway's.
from ..session.config import (
    G711_RATE_HZ,
    PCM_RATE_HZ,
    AudioFormat,
    OmniOptions,
    ReferenceAudio,
    ServerVad,
    SessionConfig,
    Transcription,
)
from .tool_config import check_choice, choice_wire, parse_choice, tools_wire
from .tool_config import parse_tools as _parse_tools
from .validate import as_type, b64, bad, get_field, in_range, no_unknown, one_of

MAX_INSTRUCTIONS_CHARS = 32_000
MAX_OUTPUT_TOKENS = 4_096
AUDIO_FORMATS = ("audio/pcm", "audio/pcmu", "audio/pcma")
_BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}

# semantic_vad has no end-of-turn model here: its eagerness becomes the silence that ends a turn
# (low waits longest, like OpenAI's; auto is medium).
# session.omni fields only MiniCPM-V 4.5 sessions take: (type, lowest, highest)
V45_OMNI = {"video_fps": (int, 1, 6), "video_pack_frames": (int, 1, 6), "thinking": (bool, 0, 1)}
SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}


def _format(v: Any, p: str) -> AudioFormat:
    if isinstance(v, str):  # beta: "pcm16" | "g711_ulaw" | "g711_alaw"
        return AudioFormat(_BETA_FORMATS[one_of(v, tuple(_BETA_FORMATS), p)])
    obj = as_type(v, dict, p)
    no_unknown(obj, {"type", "rate"}, p)
    fmt = AudioFormat(one_of(get_field(obj, "type", str, p, required=True), AUDIO_FORMATS, f"{p}.type"))
    rate = get_field(obj, "rate", int, p)
    if rate is not None and rate != fmt.rate_hz:
        raise bad(
            "invalid_value",
            f"Invalid value for '{p}.rate': {fmt.type} is {fmt.rate_hz} Hz here, got {rate}.",
            f"{p}.rate",
        )
    return fmt


_VAD_LIMITS = {
    "threshold": (float, 0.0, 1.0),
    "prefix_padding_ms": (int, 0, 10_000),
    "silence_duration_ms": (int, 1, 10_000),
    "create_response": (bool, 0, 1),
    "interrupt_response": (bool, 0, 1),
}
_SEMANTIC_FIELDS = ("create_response", "interrupt_response")


def _turn_detection(cur: ServerVad | None, v: Any, p: str) -> ServerVad | None:
    if v is None:
        return None  # manual turns: the client commits and asks for responses
    obj = as_type(v, dict, p)
    kind = one_of(get_field(obj, "type", str, p, required=True), ("server_vad", "semantic_vad"), f"{p}.type")
    if obj.get("idle_timeout_ms") is not None:
        raise bad(
            "unsupported_parameter",
            f"'{p}.idle_timeout_ms' is not supported: this server "
            "never prompts the user after silence; leave it out or null.",
            f"{p}.idle_timeout_ms",
        )
    base = cur or ServerVad()
    if kind == "semantic_vad":
        no_unknown(obj, {*_SEMANTIC_FIELDS, "type", "eagerness", "idle_timeout_ms"}, p)
        eager = one_of(get_field(obj, "eagerness", str, p) or "auto", tuple(SEMANTIC_SILENCE_MS), f"{p}.eagerness")
        changes: dict[str, Any] = {"eagerness": eager, "silence_duration_ms": SEMANTIC_SILENCE_MS[eager]}
        limits = {k: _VAD_LIMITS[k] for k in _SEMANTIC_FIELDS}
    else:
        no_unknown(obj, {*_VAD_LIMITS, "type", "idle_timeout_ms"}, p)
        changes, limits = {"eagerness": None}, _VAD_LIMITS
        if base.eagerness is not None:  # from semantic to server VAD: OpenAI's silence unless given
            changes["silence_duration_ms"] = ServerVad().silence_duration_ms
    for name, (kind_, lo, hi) in limits.items():
        if (val := get_field(obj, name, kind_, p)) is not None:
            in_range(val, lo, hi, f"{p}.{name}")
            changes[name] = val
    # Missing fields keep the current values (OpenAI's defaults if VAD was off).
    return dataclasses.replace(base, **changes)


def _transcription(c: "SessionConfig", v: Any, p: str) -> dict[str, Any]:
    if v is None:
        return {"transcription": None}
    obj = as_type(v, dict, p)
    no_unknown(obj, {"model", "language", "prompt"}, p)
    if get_field(obj, "prompt", str, p):  # "" and null are absent
        raise bad(
            "unsupported_parameter",
            f"'{p}.prompt' is not supported: MiniCPM-o transcribes with its own ASR prompt; leave it out or empty.",
            f"{p}.prompt",
        )
    model = get_field(obj, "model", str, p) or Transcription.model
    lang = get_field(obj, "language", str, p) or None
    if lang is not None and not 2 <= len(lang) <= 16:
        raise bad(
            "invalid_value", f"Invalid value for '{p}.language': an ISO-639-1 code such as 'en'.", f"{p}.language"
        )
    return {"transcription": Transcription(model[:64], lang)}


def _unsupported(why: str, allowed: tuple = ()) -> Callable[[Any, Any, str], dict[str, Any]]:
    """A field this model cannot honour: its null (or a value in `allowed`) is accepted, anything
    else is named in an error rather than silently dropped."""

    def handle(c: Any, v: Any, p: str) -> dict[str, Any]:
        if v is not None and v not in allowed:
            raise bad("unsupported_parameter", f"'{p}' is not supported: {why}.", p)
        return {}

    return handle


def _temperature(c: "SessionConfig", v: Any, p: str) -> dict[str, Any]:
    t = as_type(v, float, p)
    in_range(t, 0.05, 2.0, p)
    return {"temperature": t}


def reference_audio(v: Any, p: str) -> ReferenceAudio | None:
    """[ext] `omni_reference_audio` at `p`: the voice-clone clip (realtime sessions, chat completions)."""
    if v is None:
        return None  # back to the model's default voice
    obj = as_type(v, dict, p)
    no_unknown(obj, {"data", "format", "rate"}, p)
    fmt = one_of(get_field(obj, "format", str, p, required=True), ("wav", "pcm16"), f"{p}.format")
    data = b64(get_field(obj, "data", str, p, required=True), f"{p}.data")
    rate = get_field(obj, "rate", int, p, required=fmt == "pcm16")
    if rate is not None:
        in_range(rate, 8_000, 48_000, f"{p}.rate")
    return ReferenceAudio(data, fmt, rate)


def parse_modalities(v: Any, p: str) -> tuple[str, ...]:
    items = as_type(v, list, p)
    for i, m in enumerate(items):
        one_of(as_type(m, str, f"{p}[{i}]"), ("audio", "text"), f"{p}[{i}]")
    if not items:
        raise bad("invalid_value", f"Invalid value for '{p}': must not be empty.", p)
    return ("audio",) if "audio" in items else ("text",)  # beta ["text","audio"] == GA ["audio"]


def parse_max_tokens(v: Any, p: str) -> int | None:
    if v == "inf":
        return None
    n: int = as_type(v, int, p)
    in_range(n, 1, MAX_OUTPUT_TOKENS, p)
    return n


def parse_instructions(v: Any, p: str) -> str:
    s: str = as_type(v, str, p)
    if len(s) > MAX_INSTRUCTIONS_CHARS:
        raise bad("invalid_value", f"'{p}' is {len(s)} characters; the limit is {MAX_INSTRUCTIONS_CHARS}.", p)
    return s


def _voice(v: Any, p: str) -> str:
    s: str = as_type(v, str, p)  # any name is kept; all built-in names use the model's voice
    if not 0 < len(s) <= 64:
        raise bad("invalid_value", f"Invalid value for '{p}': 1 to 64 characters.", p)
    return s


def _omni(cur: OmniOptions, v: Any, p: str) -> OmniOptions:
    obj = as_type(v, dict, p)
    no_unknown(obj, {"video", "seed", "events", *V45_OMNI}, p)
    video, events = get_field(obj, "video", bool, p), get_field(obj, "events", bool, p)
    seed = cur.seed
    if "seed" in obj:  # null clears the seed (random sampling again)
        seed = get_field(obj, "seed", int, p)
        if seed is not None:
            in_range(seed, 0, 2**63 - 1, f"{p}.seed")
    v45: dict[str, Any] = {}
    for name, (kind, lo, hi) in V45_OMNI.items():  # MiniCPM-V 4.5's (gateway/v45_config.py checks the family)
        if (val := get_field(obj, name, kind, p)) is not None:
            if kind is int:
                in_range(val, lo, hi, f"{p}.{name}")
            v45[name] = val
    return dataclasses.replace(
        cur,
        video=cur.video if video is None else video,
        seed=seed,
        events=cur.events if events is None else events,
        **v45,
    )


def parse_tools(c: SessionConfig | None, v: Any, p: str) -> dict[str, Any]:
    return {"tools": _parse_tools(v, p)}


def _tool_choice(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
    choice, name = parse_choice(v, p)
    return {"tool_choice": choice, "tool_name": name}


def _session_type(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
    one_of(as_type(v, str, p), ("realtime",), p)  # "transcription" sessions are not offered
    return {}


# A field handler validates one wire field and returns the SessionConfig fields it changes.
_Field = Callable[[SessionConfig, Any, str], dict[str, Any]]


def _ignored(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
    return {}  # accepted so stock clients work; nothing here for this model to do (docs/protocol.md)


def _to(name: str, parse: Callable[[Any, str], Any]) -> _Field:
    return lambda c, v, p: {name: parse(v, p)}


# Where a null means something (OpenAI's own meaning); any other null field is absent.
_NULL_MEANS = frozenset({"turn_detection", "omni_reference_audio", "transcription", "input_audio_transcription"})


def _table(table: Mapping[str, _Field]) -> _Field:
    """A handler for a nested object: unknown keys are errors, known ones go to their handler."""

    def handle(c: SessionConfig, v: Any, p: str) -> dict[str, Any]:
        obj = as_type(v, dict, p)
        no_unknown(obj, table.keys(), p)
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if key in table and (value is not None or key in _NULL_MEANS):
                out.update(table[key](c, value, f"{p}.{key}"))
        return out

    return handle


_TURN: _Field = lambda c, v, p: {"turn_detection": _turn_detection(c.turn_detection, v, p)}
# Accepted, though there is no noise-reduction stage: the model hears the audio as sent, and the
# session object echoes `noise_reduction: null` to say so. Refusing it would end Pipecat's stock
# setup (near_field), whose client treats any error as fatal.
_NOISE = _ignored
_SPEED = _unsupported("the speech head has one speaking rate", (1, 1.0))
_AUDIO = _table(
    {
        "input": _table(
            {
                "format": _to("input_format", _format),
                "turn_detection": _TURN,
                "transcription": _transcription,
                "noise_reduction": _NOISE,
            }
        ),
        "output": _table(
            {
                "format": _to("output_format", _format),
                "voice": _to("voice", _voice),
                "speed": _SPEED,
                "omni_reference_audio": _to("reference_audio", reference_audio),
            }
        ),
    }
)
_SESSION = _table(
    {
        "type": _session_type,
        "instructions": _to("instructions", parse_instructions),
        "output_modalities": _to("output_modalities", parse_modalities),
        "max_output_tokens": _to("max_output_tokens", parse_max_tokens),
        "audio": _AUDIO,
        "omni": lambda c, v, p: {"omni": _omni(c.omni, v, p)},
        "tools": parse_tools,
        "temperature": _temperature,
        "prompt": _unsupported("stored prompts live on OpenAI's platform; send `instructions`"),
        "truncation": _unsupported("the context slides out its oldest turns (max_context_tokens)", ("auto",)),
        "tool_choice": _tool_choice,
        "parallel_tool_calls": lambda c, v, p: {"parallel_tool_calls": as_type(v, bool, p)},
        # beta aliases: the top-level session fields that preceded the GA `audio` object
        "modalities": _to("output_modalities", parse_modalities),
        "max_response_output_tokens": _to("max_output_tokens", parse_max_tokens),
        "input_audio_format": _to("input_format", _format),
        "output_audio_format": _to("output_format", _format),
        "turn_detection": _TURN,
        "voice": _to("voice", _voice),
        "input_audio_transcription": _transcription,
        "input_audio_noise_reduction": _NOISE,
        "speed": _SPEED,
        # Names and bookkeeping of OpenAI's platform (traces, included log data, ids): nothing to honour.
        **{k: _ignored for k in ("id", "object", "model", "tracing", "include", "expires_at")},
    }
)


def apply_update(config: SessionConfig, session: Mapping[str, Any]) -> SessionConfig:
    """Validate a (partial) session object, GA or beta shaped, and merge it into `config`.

    Absent fields keep their value; `turn_detection: null` disables VAD (manual commits);
    `omni_reference_audio: null` returns to the default voice. Raises ProtocolError naming the
    offending `session.…` param.
    """
    new = dataclasses.replace(config, **_SESSION(config, session, "session"))
    check_choice(new.tool_choice, new.tool_name, new.tools, "session.tool_choice")
    return new


def _format_wire(f: AudioFormat) -> dict[str, Any]:
    return {"type": f.type, "rate": f.rate_hz} if f.type == "audio/pcm" else {"type": f.type}


def _turn_wire(td: ServerVad | None) -> dict[str, Any] | None:
    if td is None:
        return None
    if td.eagerness is not None:
        return {
            "type": "semantic_vad",
            "eagerness": td.eagerness,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    fields = dataclasses.asdict(td)
    del fields["eagerness"]
    return {"type": "server_vad", **fields}


def to_wire(
    config: SessionConfig, session_id: str | None = None, model: str | None = None, family: str = "o-2.6"
) -> dict[str, Any]:
    """The GA session object for `session.created` / `session.updated`.

    The reference clip itself is not echoed, only its format and size; `omni`'s MiniCPM-V 4.5
    fields only on that family's sessions.
    """
    ref, tr = config.reference_audio, config.transcription
    wire: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "instructions": config.instructions,
        "output_modalities": list(config.output_modalities),
        "max_output_tokens": config.max_output_tokens or "inf",
        "audio": {
            "input": {
                "format": _format_wire(config.input_format),
                "transcription": None
                if tr is None
                else {"model": tr.model, **({"language": tr.language} if tr.language else {})},
                "noise_reduction": None,
                "turn_detection": _turn_wire(config.turn_detection),
            },
            "output": {
                "format": _format_wire(config.output_format),
                "voice": config.voice,
                "speed": 1.0,
                "omni_reference_audio": None
                if ref is None
                else {"format": ref.format, "rate": ref.rate_hz, "size_bytes": len(ref.data)},
            },
        },
        "tools": tools_wire(config.tools),
        "tool_choice": choice_wire(config.tool_choice, config.tool_name),
        "omni": {k: v for k, v in dataclasses.asdict(config.omni).items() if family == "v-4.5" or k not in V45_OMNI},
    }
    if session_id is not None:
        wire["id"] = session_id
    if model is not None:
        wire["model"] = model
    return wire
