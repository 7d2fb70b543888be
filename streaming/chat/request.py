"""A chat completion request as the chat layer sees it: typed values, media already decoded.

Owns the vocabulary between the gateway (gateway/chat_request.py parses OpenAI's JSON into these)
and the request's run (complete.py): messages of parts (text, a still image, 16-kHz audio, video
frames with their times), earlier calls and their results, the tools the reply may call
(omni.tools.spec.ToolSpec), the sampling knobs, the output wanted (text, or speech with a voice),
the family-specific switches (thinking on MiniCPM-V 4.5). No wire format: no JSON, base64 or
data URLs here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omni.tools.spec import ToolSpec


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Image:
    image: object  # an RGB PIL image


@dataclass(frozen=True)
class Audio:
    audio_16k: np.ndarray  # float32 mono


@dataclass(frozen=True)
class Frames:
    """Video as frames (the [ext] `video_frames` part): RGB PIL images and each one's time in the
    clip, in seconds from its start, non-decreasing."""

    frames: tuple
    times_s: tuple[float, ...]
    packing: int | None = None  # [ext] frames per pack on MiniCPM-V 4.5 (1-6); None: the card's rule


Part = Text | Image | Audio | Frames


@dataclass(frozen=True)
class ToolCall:
    """A call of an earlier assistant message, as the client sends it back."""

    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass(frozen=True)
class Message:
    role: str  # "system" (OpenAI's "developer" too) | "user" | "assistant" | "tool" (a call's result)
    parts: tuple[Part, ...]
    calls: tuple[ToolCall, ...] = ()  # an assistant message's calls
    call_id: str | None = None  # a tool message: the call it answers

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, Text))


@dataclass(frozen=True)
class Sampling:
    """None: the model's own default for that knob (the official streaming presets)."""

    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    top_k: int | None = None  # [ext] (vLLM's extra parameter)
    repetition_penalty: float | None = None  # [ext] (vLLM's extra parameter)
    seed: int | None = None


@dataclass(frozen=True)
class Speech:
    """Spoken output (`modalities` with "audio"): the voice name is kept but every built-in name
    speaks in the model's default voice; `reference_16k`, a clip to clone the voice of."""

    voice: str
    format: str  # "wav" | "pcm16": how the gateway encodes it
    reference_16k: np.ndarray | None = None


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    sampling: Sampling = Sampling()
    max_tokens: int | None = None  # None: the server's max_reply_tokens
    stop: tuple[str, ...] = ()
    speech: Speech | None = None  # None: text only
    thinking: bool = False  # MiniCPM-V 4.5's thinking mode (reasoning_effort, enable_thinking)
    tools: ToolSpec | None = None  # the tools the reply may call, and how (tool_choice); None: no tools
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    ignored: tuple[str, ...] = field(default=())  # accepted fields that change nothing (logged)
