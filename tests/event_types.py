"""The `openai` SDK's realtime server-event models, to check what our server sends against."""

from __future__ import annotations


def openai_event_models() -> dict:
    """Event type -> the openai SDK's pydantic model for it (every member of RealtimeServerEvent)."""
    from typing import get_args
    from openai.types.realtime import RealtimeServerEvent

    union = get_args(RealtimeServerEvent)[0]
    return {get_args(m.model_fields["type"].annotation)[0]: m for m in get_args(union)}


def openai_type_errors(events: list[dict]) -> list[str]:
    """One line per event that is not a valid OpenAI server event ([ext] types are skipped)."""
    from streaming.gateway.events import EXTENSION_EVENT_TYPES

    models, bad = openai_event_models(), []
    for ev in events:
        if ev["type"] in EXTENSION_EVENT_TYPES:
            continue
        model = models.get(ev["type"])
        if model is None:
            bad.append(f"{ev['type']}: not an OpenAI server event type")
            continue
        try:
            model.model_validate(ev)
        except Exception as e:  # noqa: BLE001 - pydantic's ValidationError, reported
            bad.append(f"{ev['type']}: {e}".replace("\n", " ")[:400])
    return bad
