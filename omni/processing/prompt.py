"""Prompt layout: message rendering, placeholder expansion, bounds, system prompts, TDM units.

Pure functions over strings and id lists (no torch state), table-tested in tests/test_prompt.py.
Owns the exact strings of the official chat/TTS templates (spec §3.4, §3.5, §4.2, §4.4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .tokens import MARK_AUDIO, MARK_IMAGE, MEDIA_TOKENS

ASSISTANT_TTS_PREFIX = "<|im_start|>assistant\n<|spk_bos|><|spk|><|spk_eos|><|tts_bos|>"
GENERATE_PREFIX = "<|im_end|>\n" + ASSISTANT_TTS_PREFIX  # streaming_generate input
USER_OPEN = "<|im_start|>user\n"
AFTER_COMPLETED = "<|im_end|>\n" + USER_OPEN  # next turn after a finished reply
AFTER_INTERRUPTED = "<|tts_eos|><|im_end|>\n" + USER_OPEN  # next turn after barge-in

# System prompts of `get_sys_prompt` (spec §3.4), English texts.
SYS_DEFAULT = "You are a helpful assistant. You can accept audio and text input and output voice and text."
SYS_OMNI = (
    "You are a helpful assistant. You can accept video, audio and text input and output voice "
    "and text. Clone the voice in the provided audio prompt."
)
SYS_OMNI_SUFFIX = "As an assistant, you will speak using this voice style."
SYS_CLONE = "Clone the voice in the provided audio prompt."
SYS_DEFAULT_VOICE = "Use the <reserved_53> voice."
SYS_ROLEPLAY_SUFFIX = "Try to role-play the character based on the audio prompt above."
SYS_MODES = ("default", "omni", "audio_assistant", "audio_roleplay", "voice_cloning")


def sys_prompt(mode: str = "omni", ref_audio: np.ndarray | None = None) -> dict[str, Any]:
    """The system message of `get_sys_prompt`: role "user", content mixing text and 16-kHz audio."""
    if mode not in SYS_MODES:
        raise ValueError(f"unknown system prompt mode {mode!r}; expected one of {SYS_MODES}")
    if mode == "default":
        content: list = [SYS_DEFAULT]
    elif mode == "omni":
        content = [SYS_OMNI] + ([ref_audio, SYS_OMNI_SUFFIX] if ref_audio is not None else [])
    elif mode == "audio_assistant":
        content = (
            [SYS_CLONE, ref_audio, SYS_OMNI_SUFFIX] if ref_audio is not None else [SYS_DEFAULT_VOICE, SYS_OMNI_SUFFIX]
        )
    elif mode == "audio_roleplay":
        content = [SYS_CLONE, ref_audio, SYS_ROLEPLAY_SUFFIX] if ref_audio is not None else [SYS_CLONE]
    else:
        content = [SYS_CLONE, ref_audio] if ref_audio is not None else [SYS_CLONE]
    return {"role": "user", "content": content}


@dataclass
class Collected:
    """A message list turned into marker text plus the media in order of appearance."""

    texts: list[tuple[str, str]]  # (role, content with markers)
    images: list  # PIL images
    audios: list[np.ndarray]  # one array per audio message part group


def collect(msgs: Sequence[dict], omni_input: bool) -> Collected:
    """Replace media by markers; join parts with "" (omni) or "\\n" (spec §3.4).

    Several audio arrays in one message are concatenated into one clip (official `audio_parts`).
    """
    texts, images, audios = [], [], []
    for m in msgs:
        role, content = m["role"], m["content"]
        if role not in ("user", "assistant", "system"):
            raise ValueError(f"unknown role {role!r}")
        if isinstance(content, str):
            content = [content]
        parts, msg_audio = [], []
        for c in content:
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, np.ndarray):
                msg_audio.append(np.asarray(c, dtype=np.float32))
                parts.append(MARK_AUDIO)
            elif hasattr(c, "convert") and hasattr(c, "size"):
                images.append(c)
                parts.append(MARK_IMAGE)
            else:
                raise TypeError(f"message content of type {type(c).__name__} is not str, PIL image or audio array")
        if msg_audio:
            audios.append(np.hstack(msg_audio))
        texts.append((role, ("" if omni_input else "\n").join(parts)))
    return Collected(texts, images, audios)


def tts_template(texts: Sequence[tuple[str, str]], add_generation_prompt: bool) -> str:
    out = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in texts)
    return out + (ASSISTANT_TTS_PREFIX if add_generation_prompt else "")


def plain_text(text: str) -> str:
    """Text from a client with the media tokens taken out (spec §3.4 bounds pair them up: a stray
    one in a message would leave its media unbalanced)."""
    for t in (MARK_IMAGE, MARK_AUDIO, *MEDIA_TOKENS):
        text = text.replace(t, "")
    return text


def history_reply(text: str, user_open: bool) -> str:
    """An earlier assistant turn given as text (chat history), prefilled raw (spec §4.2 appends a
    non-user fragment as it is) so the context reads as if the model had said it: the spec §3.4
    assistant output in the TTS template, closing the user turn first when one is `user_open`."""
    return ("<|im_end|>\n" if user_open else "") + ASSISTANT_TTS_PREFIX + text + "<|tts_eos|><|im_end|>\n"


def expand_markers(text: str, image_placeholders: Sequence[str], audio_placeholders: Sequence[str]) -> str:
    """Replace the k-th image marker by image_placeholders[k] and likewise for audio."""
    for marker, fills in ((MARK_IMAGE, image_placeholders), (MARK_AUDIO, audio_placeholders)):
        pieces = text.split(marker)
        if len(pieces) - 1 != len(fills):
            raise ValueError(f"{len(pieces) - 1} {marker} markers but {len(fills)} inputs")
        out = [pieces[0]]
        for fill, piece in zip(fills, pieces[1:]):
            out += [fill, piece]
        text = "".join(out)
    return text


def bounds(ids: Sequence[int], open_ids: Sequence[int], close_ids: Sequence[int]) -> list[tuple[int, int]]:
    """(index after each opening token, index of the next closing token), in order."""
    ids = list(ids)
    starts = [i + 1 for i, t in enumerate(ids) if t in open_ids]
    ends = [i for i, t in enumerate(ids) if t in close_ids]
    if len(starts) != len(ends):
        raise ValueError(f"unbalanced placeholders: {len(starts)} openings, {len(ends)} closings")
    pairs = list(zip(starts, ends))
    for s, e in pairs:
        assert s <= e, f"closing token before opening at {s}"
    return pairs
