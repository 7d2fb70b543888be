"""What a session may ask for with each model family: the session object's family rules.

Owns: the refusals of what MiniCPM-V 4.5 has no meaning for (`unsupported_for_model`, naming the param and
the family: audio output, turn detection, transcription, a voice clip, tools) and of the
V-4.5-only `session.omni` fields on MiniCPM-o 2.6 (`unsupported_parameter` unless left at their
defaults). A refused update changes nothing (inbound.py raises before the session sees it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import ProtocolError
from ..session.config import OmniOptions, SessionConfig
from ..session.v45_conversation import TITLE as V45_TITLE
from ..session.v45_conversation import unsupported as _refused
from .session_config import V45_OMNI

V45 = "v-4.5"
O26_TITLE = "MiniCPM-o 2.6"


def unsupported(param: str, what: str) -> ProtocolError:
    return _refused(what, param, None)


def check_update(family: str, new: SessionConfig, session: Mapping[str, Any]) -> None:
    """Refuse an update (`new`: the config it makes, `session`: the client's object) the family
    cannot honour."""
    if family != V45:
        _o26(new.omni)
        return
    audio, a_in = session.get("audio"), {}
    if isinstance(audio, Mapping) and isinstance(audio.get("input"), Mapping):
        a_in = audio["input"]
    if "audio" in new.output_modalities:
        key = "output_modalities" if "output_modalities" in session else "modalities"
        raise unsupported(f"session.{key}", "audio output is not available")
    if new.turn_detection is not None:
        p = "session.audio.input.turn_detection" if "turn_detection" in a_in else "session.turn_detection"
        raise unsupported(p, "turn detection (VAD) has no audio to listen to")
    if new.transcription is not None:
        p = "session.audio.input.transcription" if "transcription" in a_in else "session.input_audio_transcription"
        raise unsupported(p, "input audio transcription has no audio to transcribe")
    if new.reference_audio is not None:
        raise unsupported("session.audio.output.omni_reference_audio", "a voice clip has no speech to clone")
    if new.tools:
        raise unsupported("session.tools", "function calling is not available")


def _o26(omni: OmniOptions) -> None:
    default = OmniOptions()
    for name in V45_OMNI:
        if getattr(omni, name) != getattr(default, name):
            raise ProtocolError(
                "unsupported_parameter",
                f"'session.omni.{name}' is not supported: {O26_TITLE} takes camera frames with its 1-s audio "
                f"units ({V45_TITLE} sessions take it); leave it out or at its default {getattr(default, name)!r}.",
                f"session.omni.{name}",
            )
