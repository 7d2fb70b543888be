"""Session events -> the wire: the one adapter from the typed events of session/events.py to
OpenAI Realtime JSON, with reply audio encoded in the session's output format.

Owns, per connection: the session config last announced (which output format a new reply's audio
takes, whether [ext] events go out) and one audio encoder per live reply (G.711 resamples as one
stream across deltas). A WebRTC call sends no audio deltas: its outgoing track carries the speech.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ..session import events as E
from ..session.config import SessionConfig
from . import events as W
from .codecs import OutputAudioStream
from .errors import error_object, to_error_event
from .session_config import to_wire

SendJson = Callable[[dict[str, Any]], Awaitable[None]]
MODEL = "minicpm-o-2.6"
MODELS = {"o-2.6": MODEL, "v-4.5": "minicpm-v-4.5"}  # the session object's `model`, by family


class SendQueue(asyncio.Queue):
    """A connection's bounded send queue, strictly in order: with `asyncio.Queue.put` alone, an
    event put while an earlier one waits for room (a slow reader) can take the slot first, so a
    client could get an error before the `response.done` it follows, or a delta after it."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self._in_order = asyncio.Lock()  # fair: waiters are served first come, first served

    async def put(self, item) -> None:
        async with self._in_order:
            await super().put(item)


def part_wire(p: E.Part) -> dict[str, Any]:
    if p.type in ("input_text", "output_text"):
        return {"type": p.type, "text": p.text or ""}
    if p.type in ("input_audio", "output_audio"):
        return {"type": p.type, "transcript": p.transcript}
    return {"type": p.type}


def item_wire(item: E.AnyItem) -> dict[str, Any]:
    if isinstance(item, E.FunctionCall):
        return W.function_call_object(item.id, item.call_id, item.name, item.arguments, item.status)
    if isinstance(item, E.FunctionOutput):
        return W.function_call_output_object(item.id, item.call_id, item.output)
    return W.item_object(item.id, item.role, [part_wire(p) for p in item.parts], status=item.status)


def status_details(o: E.Outcome) -> dict[str, Any] | None:
    if o.status == "completed":
        return None
    if o.status == "failed":
        return {"type": "failed", "error": {"type": "server_error", "message": o.reason}}
    return {"type": o.status, "reason": o.reason}


class WireEvents:
    """Call it with each session event; it sends the OpenAI events that say the same thing."""

    def __init__(self, send_json: SendJson, wire_audio: bool = True, family: str = "o-2.6") -> None:
        self.send_json, self.wire_audio, self.family = send_json, wire_audio, family
        self.config = SessionConfig()  # the config last announced (session.created/updated)
        self.encoders: dict[str, OutputAudioStream] = {}

    async def __call__(self, ev: object) -> None:
        for obj in self.render(ev):
            await self.send(obj)

    async def send(self, obj: dict[str, Any]) -> None:
        """Any server event: [ext] types only reach a client that opted in (session.omni.events)."""
        if W.for_client(obj, self.config.omni.events):
            await self.send_json(obj)

    def render(self, ev: object) -> list[dict[str, Any]]:
        return _RENDER[type(ev)](self, ev)

    # ---- session and input ---------------------------------------------------------------
    def _session(self, ev: E.SessionStarted | E.SessionChanged) -> list[dict[str, Any]]:
        self.config = ev.config
        wire = to_wire(ev.config, session_id=ev.session_id, model=MODELS[self.family], family=self.family)
        return [W.session_created(wire) if isinstance(ev, E.SessionStarted) else W.session_updated(wire)]

    # ---- a response ----------------------------------------------------------------------
    def _started(self, ev: E.ResponseStarted) -> list[dict[str, Any]]:
        created = W.response_created(W.response_object(ev.response_id, "in_progress", metadata=ev.metadata))
        if ev.item is None:
            return [created]
        return [created, *self._message(E.MessageStarted(ev.response_id, ev.item, ev.previous_item_id))]

    def _message(self, ev: E.MessageStarted) -> list[dict[str, Any]]:
        if self.wire_audio and ev.item.parts[0].type == "output_audio":
            self.encoders[ev.response_id] = OutputAudioStream(self.config.output_format)
        item = item_wire(ev.item)
        return [
            W.conversation_item_added(item, ev.previous_item_id),
            W.response_output_item_added(ev.response_id, 0, item),
            W.response_content_part_added(ev.response_id, ev.item.id, 0, 0, item["content"][0]),
        ]

    def _text(self, ev: E.ResponseText) -> list[dict[str, Any]]:
        delta = W.response_output_audio_transcript_delta if ev.spoken else W.response_output_text_delta
        return [delta(ev.response_id, ev.item_id, 0, 0, ev.delta)]

    def _audio(self, ev: E.ResponseAudio) -> list[dict[str, Any]]:
        enc = self.encoders.get(ev.response_id)
        return self._delta(ev.response_id, ev.item_id, enc.push(ev.pcm_24k)) if enc else []

    @staticmethod
    def _delta(response_id: str, item_id: str, b64: str) -> list[dict[str, Any]]:
        # a G.711 resampler may hold a few ms back: no empty deltas
        return [W.response_output_audio_delta(response_id, item_id, 0, 0, b64)] if b64 else []

    def _closed(self, ev: E.MessageEnded) -> list[dict[str, Any]]:
        """The message item's closing events (audio, transcript or text, part, item)."""
        rid, iid = ev.response_id, ev.item.id
        enc = self.encoders.pop(rid, None)
        out = self._delta(rid, iid, enc.flush()) if enc is not None and ev.keep_audio_tail else []
        if ev.spoken:
            out += [
                W.response_output_audio_done(rid, iid, 0, 0),
                W.response_output_audio_transcript_done(rid, iid, 0, 0, ev.text),
            ]
        else:
            out.append(W.response_output_text_done(rid, iid, 0, 0, ev.text))
        item = item_wire(ev.item)
        return out + [
            W.response_content_part_done(rid, iid, 0, 0, item["content"][0]),
            W.response_output_item_done(rid, 0, item),
            W.conversation_item_done(item, None),
        ]

    def _ended(self, ev: E.ResponseEnded) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if ev.item is not None and not ev.closed:
            out = self._closed(E.MessageEnded(ev.response_id, ev.item, ev.text, ev.spoken, ev.keep_audio_tail))
        items = ([item_wire(ev.item)] if ev.item is not None else []) + [item_wire(c) for c in ev.calls]
        obj = W.response_object(
            ev.response_id,
            ev.outcome.status,
            items,
            status_details=status_details(ev.outcome),
            usage=ev.usage,
            metadata=ev.metadata,
        )
        return out + [W.response_done(obj)]

    # ---- a response's calls (§1.6 of docs/protocol.md's tool section) ------------------
    def _call_started(self, ev: E.CallStarted) -> list[dict[str, Any]]:
        item = item_wire(ev.call)
        return [
            W.response_output_item_added(ev.response_id, ev.output_index, item),
            W.conversation_item_added(item, ev.previous_item_id),  # Pipecat learns of a call here only
        ]

    def _call_arguments(self, ev: E.CallArguments) -> list[dict[str, Any]]:
        c = ev.call
        return [W.response_function_call_arguments_delta(ev.response_id, c.id, ev.output_index, c.call_id, ev.delta)]

    def _call_ended(self, ev: E.CallEnded) -> list[dict[str, Any]]:
        c, item = ev.call, item_wire(ev.call)
        # Only whole arguments are announced done: Pipecat runs a call on this event.
        done = c.status == "completed"
        out = [
            W.response_function_call_arguments_done(
                ev.response_id, c.id, ev.output_index, c.call_id, c.name, c.arguments
            )
        ]
        return (out if done else []) + [
            W.conversation_item_done(item, ev.previous_item_id),
            W.response_output_item_done(ev.response_id, ev.output_index, item),
        ]


_RENDER: dict[type, Callable[[WireEvents, Any], list[dict[str, Any]]]] = {
    E.SessionStarted: WireEvents._session,
    E.SessionChanged: WireEvents._session,
    E.SpeechBegan: lambda _, ev: [W.speech_started(ev.audio_start_ms, ev.item_id)],
    E.SpeechEnded: lambda _, ev: [W.speech_stopped(ev.audio_end_ms, ev.item_id)],
    E.InputCommitted: lambda _, ev: [W.input_audio_buffer_committed(ev.item_id, ev.previous_item_id)],
    E.InputCleared: lambda _, ev: [W.input_audio_buffer_cleared()],
    E.ItemAdded: lambda _, ev: [W.conversation_item_added(item_wire(ev.item), ev.previous_item_id)],
    E.ItemDone: lambda _, ev: [W.conversation_item_done(item_wire(ev.item), ev.previous_item_id)],
    E.ItemTruncated: lambda _, ev: [W.conversation_item_truncated(ev.item_id, ev.content_index, ev.audio_end_ms)],
    E.ItemDeleted: lambda _, ev: [W.conversation_item_deleted(ev.item_id)],
    E.ItemRetrieved: lambda _, ev: [W.conversation_item_retrieved(item_wire(ev.item))],
    E.ResponseStarted: WireEvents._started,
    E.MessageStarted: WireEvents._message,
    E.MessageEnded: WireEvents._closed,
    E.CallStarted: WireEvents._call_started,
    E.CallArguments: WireEvents._call_arguments,
    E.CallEnded: WireEvents._call_ended,
    E.ResponseText: WireEvents._text,
    E.ResponseAudio: WireEvents._audio,
    E.ResponseEnded: WireEvents._ended,
    E.ReasoningText: lambda _, ev: [W.response_reasoning_text_delta(ev.response_id, ev.item_id, ev.delta)],
    E.ReasoningDone: lambda _, ev: [W.response_reasoning_text_done(ev.response_id, ev.item_id, ev.text)],
    E.VideoStats: lambda _, ev: [W.omni_video_stats(ev.fps, ev.frames_total, ev.packs_total)],
    E.ResponseTimings: lambda _, ev: [W.response_omni_timings(ev.response_id, ev.timings_ms)],
    E.TranscriptText: lambda _, ev: [W.transcription_delta(ev.item_id, ev.delta)],
    E.TranscriptDone: lambda _, ev: [W.transcription_completed(ev.item_id, ev.transcript, ev.audio_s)],
    E.TranscriptFailed: lambda _, ev: [W.transcription_failed(ev.item_id, error_object(ev.error))],
    E.Failed: lambda _, ev: [to_error_event(ev.error)],
}
