"""What a connection asks of its session, with media already decoded: the gateway's inbound
adapter (gateway/inbound.py) turns the client events that carry wire data (a partial session
object, base64 audio in the session's format, encoded images) into these. The other client events
(commit, clear, truncate, delete, retrieve, response.create / cancel) carry no wire data and
reach the session as parsed; every command has a `TYPE` and an `event_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .config import SessionConfig


@dataclass(frozen=True)
class UpdateSession:
    """The session config after a `session.update`, and its voice clip decoded when it changed."""

    TYPE: ClassVar[str] = "session.update"
    event_id: str | None
    config: SessionConfig
    ref_16k: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AppendAudio:
    TYPE: ClassVar[str] = "input_audio_buffer.append"
    event_id: str | None
    samples_16k: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class AppendImage:
    """One camera frame (None: the session has video off, so it was not decoded), and when it was
    captured (seconds on the client's clock, or on the server's at arrival: None for o-2.6)."""

    TYPE: ClassVar[str] = "input_image_buffer.append"
    event_id: str | None
    image: Any = field(repr=False)  # a PIL RGB image, or None
    t_s: float | None = None


@dataclass(frozen=True)
class CreateItem:
    """A user or system item: `item` as parsed (role, parts with their text), `content` the
    model's message content (text, 16 kHz audio arrays, PIL images) in the parts' order."""

    TYPE: ClassVar[str] = "conversation.item.create"
    event_id: str | None
    item: Any
    content: tuple = field(default=(), repr=False)
