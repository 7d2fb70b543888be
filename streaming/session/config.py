"""A session's settings as plain typed values: what `session.update` may set, already parsed.

The gateway parses and validates the wire (gateway/session_config.py `apply_update`, `to_wire`);
the session only reads these frozen dataclasses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni.tools.spec import Tool

PCM_RATE_HZ = 24_000  # the only `audio/pcm` rate OpenAI Realtime defines
G711_RATE_HZ = 8_000


@dataclass(frozen=True)
class AudioFormat:
    """`audio/pcm` (PCM16 LE, 24 kHz, mono) or G.711 `audio/pcmu` / `audio/pcma` (8 kHz)."""

    type: str = "audio/pcm"

    @property
    def rate_hz(self) -> int:
        return PCM_RATE_HZ if self.type == "audio/pcm" else G711_RATE_HZ


@dataclass(frozen=True)
class ServerVad:
    """Turn detection on the server's VAD; defaults are OpenAI's (the server may override them).

    `eagerness` set: the client asked for `semantic_vad`, which runs as this VAD with the
    silence that eagerness maps to (`SEMANTIC_SILENCE_MS`) and is echoed as `semantic_vad`."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str | None = None


@dataclass(frozen=True)
class Transcription:
    """`audio.input.transcription`: the user's turns transcribed by MiniCPM-o itself."""

    model: str = "minicpm-o-2.6"  # any name is kept and echoed; the model is always this one
    language: str | None = None  # "zh" picks the official Chinese ASR prompt, else English


@dataclass(frozen=True)
class ReferenceAudio:
    """Extension: a voice-clone clip, still encoded (codecs.read_wav_any decodes and checks it)."""

    data: bytes
    format: str  # "wav" (any soundfile-readable file) or "pcm16" (raw LE at rate_hz)
    rate_hz: int | None = None


@dataclass(frozen=True)
class OmniOptions:
    """Extension `session.omni`: camera frames on/off, a sampling seed (None = random), and
    whether this client takes [ext] event types (`events`; stock clients never see them).
    MiniCPM-V 4.5 only (o-2.6 keeps the defaults): camera frames a second that reach the model
    (`video_fps`), frames per pack of 64 tokens (`video_pack_frames`), thinking replies."""

    video: bool = True
    seed: int | None = None
    events: bool = False
    video_fps: int = 2
    video_pack_frames: int = 3
    thinking: bool = False


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
    transcription: Transcription | None = None
    temperature: float | None = None  # the LLM's sampling temperature (None: the official 0.7)
    tools: tuple[Tool, ...] = ()  # function tools (omni.tools)
    tool_choice: str = "auto"  # auto | none | required | function (a named one: tool_name)
    tool_name: str | None = None
    parallel_tool_calls: bool = True


@dataclass(frozen=True)
class ResponseParams:
    """Per-response overrides; None means "use the session's"."""

    output_modalities: tuple[str, ...] | None = None
    max_output_tokens: int | str | None = None  # "inf": no cap but the server's
    temperature: float | None = None  # the LLM's sampling temperature for this reply
    metadata: Mapping[str, Any] | None = None  # echoed on the response object
    tools: tuple[Tool, ...] | None = None  # this response's tools instead of the session's
    tool_choice: tuple[str, str | None] | None = None  # (choice, name), as SessionConfig's
    parallel_tool_calls: bool | None = None
