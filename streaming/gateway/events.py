"""Server events of the /v1/realtime protocol: one builder per event, each adding `type` and a
fresh `event_id`, so every event the server sends is made here.

Owns: the event types the server may send (`OPENAI_EVENT_TYPES`, the ones stock clients know, and
`EXTENSION_EVENT_TYPES`, sent only to sessions that opt in with `session.omni.events`), the GA
item and response objects, and the builders. Every event validates against the `openai` SDK's
realtime types (tests/streaming/test_protocol.py, test_compat.py and the suite-wide check in
tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..ids import new_id


RESPONSE_STATUSES = ("in_progress", "completed", "cancelled", "incomplete", "failed")
# Why a response did not complete: the values OpenAI's types allow (SDKs reject any other).
RESPONSE_REASONS = {
    "cancelled": ("client_cancelled", "turn_detected"),
    "incomplete": ("max_output_tokens", "content_filter"),
}
OPENAI_EVENT_TYPES = frozenset(
    {
        "error",
        "session.created",
        "session.updated",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "input_audio_buffer.cleared",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.truncated",
        "conversation.item.deleted",
        "conversation.item.retrieved",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.input_audio_transcription.failed",
        "response.created",
        "response.done",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)
# [ext] events: only for sessions that set `session.omni.events` (a stock client's receive loop
# may stop on a type it does not know). The gateway's sender drops them for everyone else.
EXTENSION_EVENT_TYPES = frozenset(
    {
        "response.omni.timings",
        "omni.heartbeat",
        "response.reasoning_text.delta",  # MiniCPM-V 4.5's thinking (named as in OpenAI's Responses API)
        "response.reasoning_text.done",
        "omni.video.stats",
    }
)
SERVER_EVENT_TYPES = OPENAI_EVENT_TYPES | EXTENSION_EVENT_TYPES


def for_client(event: Mapping[str, Any], extensions: bool) -> bool:
    """Whether a client gets `event`: OpenAI types always, [ext] types only if it opted in."""
    return extensions or event["type"] in OPENAI_EVENT_TYPES


def server_event(event_type: str, /, **fields: Any) -> dict[str, Any]:
    """Any server event: `type`, a fresh `event_id`, then the fields as given."""
    assert event_type in SERVER_EVENT_TYPES, f"not a server event: {event_type!r}"
    return {"type": event_type, "event_id": new_id("event"), **fields}


def item_object(item_id: str, role: str, content: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    """A GA conversation item (`message`), e.g. content `[{"type": "output_audio", ...}]`."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": role,
        "content": content,
    }


def function_call_object(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    """A GA `function_call` item (`arguments`: the JSON object as text, "" until it streams)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def function_call_output_object(item_id: str, call_id: str, output: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }


def response_object(
    response_id: str,
    status: str,
    output: list[dict[str, Any]] | None = None,
    status_details: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A GA response (timing figures go in the `response.omni.timings` extension event)."""
    assert status in RESPONSE_STATUSES, f"bad response status {status!r}"
    reason = (status_details or {}).get("reason")
    assert reason is None or reason in RESPONSE_REASONS.get(status, ()), f"bad {status} reason {reason!r}"
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "status_details": status_details,
        "output": output or [],
        "usage": usage,
        "metadata": dict(metadata) if metadata is not None else None,
    }


def _pos(response_id: str, item_id: str, output_index: int, content_index: int) -> dict[str, Any]:
    return {
        "response_id": response_id,
        "item_id": item_id,
        "output_index": output_index,
        "content_index": content_index,
    }


def error(error_obj: dict[str, Any]) -> dict[str, Any]:
    """Build via errors.to_error_event, the one place exceptions become this event."""
    return server_event("error", error=error_obj)


def session_created(session: dict[str, Any]) -> dict[str, Any]:
    return server_event("session.created", session=session)


def session_updated(session: dict[str, Any]) -> dict[str, Any]:
    return server_event("session.updated", session=session)


def speech_started(audio_start_ms: int, item_id: str) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id)


def speech_stopped(audio_end_ms: int, item_id: str) -> dict[str, Any]:
    return server_event("input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id)


def input_audio_buffer_committed(item_id: str, previous_item_id: str | None) -> dict[str, Any]:
    return server_event("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id)


def input_audio_buffer_cleared() -> dict[str, Any]:
    return server_event("input_audio_buffer.cleared")


def conversation_item_added(item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
    return server_event("conversation.item.added", item=item, previous_item_id=previous_item_id)


def conversation_item_done(item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
    return server_event("conversation.item.done", item=item, previous_item_id=previous_item_id)


def conversation_item_truncated(item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
    return server_event(
        "conversation.item.truncated", item_id=item_id, content_index=content_index, audio_end_ms=audio_end_ms
    )


def response_created(response: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.created", response=response)


def response_done(response: dict[str, Any]) -> dict[str, Any]:
    """The last event of a response; nothing for `response["id"]` is sent after it."""
    return server_event("response.done", response=response)


def response_output_item_added(response_id: str, output_index: int, item: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.output_item.added", response_id=response_id, output_index=output_index, item=item)


def response_output_item_done(response_id: str, output_index: int, item: dict[str, Any]) -> dict[str, Any]:
    return server_event("response.output_item.done", response_id=response_id, output_index=output_index, item=item)


def content_part(item_part: Mapping[str, Any]) -> dict[str, Any]:
    """The `part` of response.content_part.*: an item's `output_audio`/`output_text` part as
    `audio`/`text` (the response-part names of OpenAI's types)."""
    return {**item_part, "type": item_part["type"].removeprefix("output_")}


def response_content_part_added(
    response_id: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> dict[str, Any]:
    return server_event(
        "response.content_part.added",
        part=content_part(part),
        **_pos(response_id, item_id, output_index, content_index),
    )


def response_content_part_done(
    response_id: str, item_id: str, output_index: int, content_index: int, part: dict[str, Any]
) -> dict[str, Any]:
    return server_event(
        "response.content_part.done", part=content_part(part), **_pos(response_id, item_id, output_index, content_index)
    )


def response_output_audio_delta(
    response_id: str, item_id: str, output_index: int, content_index: int, delta: str
) -> dict[str, Any]:
    """`delta`: base64 audio in the session's output format (codecs.OutputAudioStream)."""
    return server_event(
        "response.output_audio.delta", delta=delta, **_pos(response_id, item_id, output_index, content_index)
    )


def response_output_audio_done(response_id: str, item_id: str, output_index: int, content_index: int) -> dict[str, Any]:
    return server_event("response.output_audio.done", **_pos(response_id, item_id, output_index, content_index))


def response_output_audio_transcript_delta(
    response_id: str, item_id: str, output_index: int, content_index: int, delta: str
) -> dict[str, Any]:
    return server_event(
        "response.output_audio_transcript.delta", delta=delta, **_pos(response_id, item_id, output_index, content_index)
    )


def response_output_audio_transcript_done(
    response_id: str, item_id: str, output_index: int, content_index: int, transcript: str
) -> dict[str, Any]:
    return server_event(
        "response.output_audio_transcript.done",
        transcript=transcript,
        **_pos(response_id, item_id, output_index, content_index),
    )


def response_output_text_delta(
    response_id: str, item_id: str, output_index: int, content_index: int, delta: str
) -> dict[str, Any]:
    return server_event(
        "response.output_text.delta", delta=delta, **_pos(response_id, item_id, output_index, content_index)
    )


def response_output_text_done(
    response_id: str, item_id: str, output_index: int, content_index: int, text: str
) -> dict[str, Any]:
    return server_event(
        "response.output_text.done", text=text, **_pos(response_id, item_id, output_index, content_index)
    )


def response_function_call_arguments_delta(
    response_id: str, item_id: str, output_index: int, call_id: str, delta: str
) -> dict[str, Any]:
    return server_event(
        "response.function_call_arguments.delta",
        response_id=response_id,
        item_id=item_id,
        output_index=output_index,
        call_id=call_id,
        delta=delta,
    )


def response_function_call_arguments_done(
    response_id: str, item_id: str, output_index: int, call_id: str, name: str, arguments: str
) -> dict[str, Any]:
    return server_event(
        "response.function_call_arguments.done",
        response_id=response_id,
        item_id=item_id,
        output_index=output_index,
        call_id=call_id,
        name=name,
        arguments=arguments,
    )


def conversation_item_deleted(item_id: str) -> dict[str, Any]:
    return server_event("conversation.item.deleted", item_id=item_id)


def conversation_item_retrieved(item: dict[str, Any]) -> dict[str, Any]:
    return server_event("conversation.item.retrieved", item=item)


def transcription_delta(item_id: str, delta: str) -> dict[str, Any]:
    """Part of a user audio item's transcript (`content_index` 0: a turn is one audio part)."""
    return server_event(
        "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=delta
    )


def transcription_completed(item_id: str, transcript: str, audio_s: float) -> dict[str, Any]:
    return server_event(
        "conversation.item.input_audio_transcription.completed",
        item_id=item_id,
        content_index=0,
        transcript=transcript,
        usage={"type": "duration", "seconds": round(audio_s, 3)},
    )


def transcription_failed(item_id: str, error_obj: dict[str, Any]) -> dict[str, Any]:
    """`error_obj`: errors.error_object of the exception (type, code, message, param)."""
    return server_event(
        "conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0, error=error_obj
    )


def response_omni_timings(response_id: str, timings_ms: Mapping[str, float]) -> dict[str, Any]:
    """[ext] Right after response.done: the reply's timing figures, each name ending in _ms."""
    assert all(k.endswith("_ms") for k in timings_ms), "timing names carry their unit"
    return server_event("response.omni.timings", response_id=response_id, timings=dict(timings_ms))


def omni_heartbeat() -> dict[str, Any]:
    """[ext] Sent every HEARTBEAT_S to an opted-in client: its page can tell a dead server from a quiet one."""
    return server_event("omni.heartbeat")


def response_reasoning_text_delta(response_id: str, item_id: str, delta: str) -> dict[str, Any]:
    """[ext] a thinking reply's reasoning, beside (never in) its output text."""
    return server_event("response.reasoning_text.delta", **_pos(response_id, item_id, 0, 0), delta=delta)


def response_reasoning_text_done(response_id: str, item_id: str, text: str) -> dict[str, Any]:
    return server_event("response.reasoning_text.done", **_pos(response_id, item_id, 0, 0), text=text)


def omni_video_stats(fps: float, frames_total: int, packs_total: int) -> dict[str, Any]:
    """[ext] camera frames reaching the model (MiniCPM-V 4.5 sessions)."""
    return server_event("omni.video.stats", fps=fps, frames_total=frames_total, packs_total=packs_total)
