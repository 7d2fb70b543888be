"""What a session tells its connection: typed internal events (frozen dataclasses), one per thing
that happened, in the order it happened. The gateway's adapter (gateway/outbound.py) is the one
place they become OpenAI JSON, base64 and wire audio; the session never builds a wire event.

Items and responses are plain values here: `Item` is a conversation item as the session knows it,
`Outcome` says how a response ended. Output and content indices are always 0 (one item of one
part per response), so they are not carried.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Part:
    """One content part: input_text / output_text carry `text`, input_audio / output_audio a
    `transcript` (None until known), input_image nothing."""

    type: str
    text: str | None = None
    transcript: str | None = None


@dataclass(frozen=True)
class Item:
    id: str
    role: str  # "user" | "assistant" | "system"
    parts: tuple[Part, ...]
    status: str = "completed"  # "in_progress" | "completed" | "incomplete"

    def with_transcript(self, transcript: str) -> Item:
        """The item with its first (audio) part's transcript filled in."""
        first = replace(self.parts[0], transcript=transcript)
        return replace(self, parts=(first, *self.parts[1:]))


@dataclass(frozen=True)
class FunctionCall:
    """A `function_call` item: the model's (or one the client added), `arguments` a JSON object
    as text (partial while `in_progress`)."""

    id: str
    call_id: str
    name: str
    arguments: str = ""
    status: str = "completed"  # "in_progress" | "completed" | "incomplete"
    role = None  # not a message: truncate and the like never take it


@dataclass(frozen=True)
class FunctionOutput:
    """A `function_call_output` item: the client's result of a call."""

    id: str
    call_id: str
    output: str
    role = None


AnyItem = Item | FunctionCall | FunctionOutput


@dataclass(frozen=True)
class Outcome:
    """How a response ended: status completed / incomplete / cancelled / failed, and why."""

    status: str
    reason: str | None = None


# ---- session and input -------------------------------------------------------------------
@dataclass(frozen=True)
class SessionStarted:
    session_id: str
    config: Any  # the SessionConfig now in force


@dataclass(frozen=True)
class SessionChanged:
    session_id: str
    config: Any


@dataclass(frozen=True)
class SpeechBegan:
    item_id: str
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechEnded:
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True)
class InputCommitted:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True)
class InputCleared:
    pass


# ---- the conversation's items ------------------------------------------------------------
@dataclass(frozen=True)
class ItemAdded:
    item: AnyItem
    previous_item_id: str | None


@dataclass(frozen=True)
class ItemDone:
    item: AnyItem
    previous_item_id: str | None


@dataclass(frozen=True)
class ItemTruncated:
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True)
class ItemDeleted:
    item_id: str


@dataclass(frozen=True)
class ItemRetrieved:
    item: AnyItem


# ---- a response --------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponseStarted:
    response_id: str
    item: Item | None  # its (in-progress) message item; None: it has none yet (tools)
    previous_item_id: str | None
    metadata: dict | None = None


@dataclass(frozen=True)
class MessageStarted:
    """The response's message item opens late: a reply that may call tools opens it with its
    first text or audio (a reply that only calls has none)."""

    response_id: str
    item: Item
    previous_item_id: str | None


@dataclass(frozen=True)
class MessageEnded:
    """The response's message item closes before its calls (the speech stopped at the call)."""

    response_id: str
    item: Item
    text: str
    spoken: bool
    keep_audio_tail: bool = True


@dataclass(frozen=True)
class CallStarted:
    """A call of the response begins (its name known, its arguments empty): output item
    `output_index`, added to the conversation after `previous_item_id`."""

    response_id: str
    output_index: int
    call: FunctionCall
    previous_item_id: str | None


@dataclass(frozen=True)
class CallArguments:
    response_id: str
    output_index: int
    call: FunctionCall  # as it is now
    delta: str


@dataclass(frozen=True)
class CallEnded:
    """The call is whole (completed) or was cut (incomplete: cancelled, or the token cap)."""

    response_id: str
    output_index: int
    call: FunctionCall
    previous_item_id: str | None


@dataclass(frozen=True)
class ResponseText:
    """A piece of the reply's text: the audio transcript when it speaks, else the text."""

    response_id: str
    item_id: str
    delta: str
    spoken: bool


@dataclass(frozen=True)
class ResponseAudio:
    """24 kHz float32 reply speech; the gateway encodes it for the wire (or the WebRTC track
    carries it, and this is not sent)."""

    response_id: str
    item_id: str
    pcm_24k: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ResponseEnded:
    """The closing events, then `response.done`: `item` as it ended, `text` all of it.
    `keep_audio_tail`: audio held back by an encoder still goes out (not when cancelled)."""

    response_id: str
    item: Item | None  # its message item (None: it had none)
    text: str
    spoken: bool
    outcome: Outcome
    metadata: dict | None = None
    keep_audio_tail: bool = True
    calls: tuple[FunctionCall, ...] = ()  # after the message in the response's output, each ended
    closed: bool = False  # the message item was closed already (MessageEnded)
    usage: dict | None = None  # token counts: input_tokens, output_tokens (None: not counted)


@dataclass(frozen=True)
class ReasoningText:
    """[ext] a piece of a thinking reply's reasoning (MiniCPM-V 4.5), never part of its text."""

    response_id: str
    item_id: str
    delta: str


@dataclass(frozen=True)
class ReasoningDone:
    response_id: str
    item_id: str
    text: str


@dataclass(frozen=True)
class VideoStats:
    """[ext] camera frames reaching the model: a second's rate over the last 2 s, totals."""

    fps: float
    frames_total: int
    packs_total: int


@dataclass(frozen=True)
class ResponseTimings:
    """[ext] the reply's timing figures, each name ending in _ms."""

    response_id: str
    timings_ms: dict[str, float]


# ---- transcripts of the user's turns and errors ------------------------------------------
@dataclass(frozen=True)
class TranscriptText:
    item_id: str
    delta: str


@dataclass(frozen=True)
class TranscriptDone:
    item_id: str
    transcript: str
    audio_s: float


@dataclass(frozen=True)
class TranscriptFailed:
    item_id: str
    error: BaseException


@dataclass(frozen=True)
class Failed:
    """Work outside a client message failed (a reply step); the session goes on."""

    error: BaseException
