"""MiniCPM-V 4.5's prompt and answer text: the official `chat()` around the Qwen3 chat template.

Owns: turning messages into the template's input (roles user/assistant, the first one user,
images as markers, parts joined by "\\n", an optional system message first), rendering it with the
checkpoint's own Jinja template and an explicit thinking switch (`<think>\\n\\n</think>\\n\\n`
appended when off, `<think>\\n` when on; earlier replies lose their thinking), the answer text of
generated ids, and `TextDeltas`, the streamed text released at word boundaries exactly as the
reference's streamer did (transformers 4.51's `TextStreamer`; later versions release differently).
Does not own: vision items (omni.processing.packs), decoding (omni.chat_v45). Golden README-v45 §5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .tokens import MARK_IMAGE, TERMINATORS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

THINK_OPEN = "<think>\n"  # what a thinking answer starts with (the prompt ends with it)
MAX_INPUT_TOKENS = 16384  # the official `max_inp_length`: longer prompts are cut at the end


@dataclass
class Collected:
    messages: list[dict[str, str]]  # {"role", "content"} with image markers
    images: list  # PIL images in order of appearance


def collect(msgs: Sequence[dict], system_prompt: str = "") -> Collected:
    """Official `chat()` message handling. Content parts: str or PIL image; audio is refused."""
    if not msgs:
        raise ValueError("no messages")
    out, images = [], []
    for i, m in enumerate(msgs):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise ValueError(f"message {i}: role must be 'user' or 'assistant', got {role!r}")
        if i == 0 and role != "user":
            raise ValueError("the first message must be the user's")
        parts = []
        for c in [content] if isinstance(content, str) else list(content or []):
            if isinstance(c, str):
                parts.append(c)
            elif hasattr(c, "convert") and hasattr(c, "size"):
                images.append(c)
                parts.append(MARK_IMAGE)
            elif isinstance(c, np.ndarray):
                raise ValueError("MiniCPM-V 4.5 has no audio input: send text, images or video frames")
            else:
                raise TypeError(f"message content of type {type(c).__name__} is not str or a PIL image")
        out.append({"role": role, "content": "\n".join(parts)})
    if system_prompt:
        out.insert(0, {"role": "system", "content": system_prompt})
    return Collected(out, images)


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], thinking: bool) -> str:
    """The checkpoint's chat template with the generation prompt and an explicit thinking flag."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=bool(thinking)
    )
    assert isinstance(text, str)  # tokenize=False: the prompt string
    return text


def answer(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], thinking: bool) -> str:
    """The official non-stream answer: ids 0 dropped, a leading BOS and one trailing terminator
    dropped, special tokens kept as text, stripped; a thinking answer starts with `<think>\\n`."""
    ids = [i for i in ids if i != 0]
    bos = _id(tokenizer, tokenizer.bos_token)
    if ids and ids[0] == bos:
        ids = ids[1:]
    if ids and ids[-1] in terminator_ids(tokenizer):
        ids = ids[:-1]
    text = tokenizer.decode(ids)
    assert isinstance(text, str)
    return (THINK_OPEN if thinking else "") + text.strip()


def terminator_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    return tuple(i for i in (_id(tokenizer, t) for t in TERMINATORS) if i is not None)


def _id(tokenizer: PreTrainedTokenizerBase, token) -> int | None:
    if not isinstance(token, str) or not token:
        return None
    i = tokenizer.convert_tokens_to_ids(token)
    return i if isinstance(i, int) else None


class TextDeltas:
    """The text of a growing id sequence, released at word boundaries: after a newline everything
    (and the cache restarts), after a CJK character everything, otherwise up to the last space.
    `push` returns the delta for one step (often ""), `end` the rest. The stop-token strings are
    removed from each delta (the official stream wrapper does it by text replacement)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self._ids: list[int] = []
        self._printed = 0

    def push(self, ids: Sequence[int]) -> str:
        self._ids.extend(int(i) for i in ids)
        text = self._decode()
        if text.endswith("\n"):
            delta = text[self._printed :]
            self._ids, self._printed = [], 0
        elif text and _is_cjk(ord(text[-1])):
            delta = text[self._printed :]
            self._printed += len(delta)
        else:
            delta = text[self._printed : text.rfind(" ") + 1]
            self._printed += len(delta)
        return _unstop(delta)

    def end(self) -> str:
        delta = self._decode()[self._printed :] if self._ids else ""
        self._ids, self._printed = [], 0
        return _unstop(delta)

    def _decode(self) -> str:
        text = self.tokenizer.decode(self._ids)
        assert isinstance(text, str)
        return text


def _unstop(text: str) -> str:
    for t in TERMINATORS:
        text = text.replace(t, "")
    return text


def _is_cjk(cp: int) -> bool:
    return any(
        lo <= cp <= hi
        for lo, hi in (
            (0x4E00, 0x9FFF),
            (0x3400, 0x4DBF),
            (0x20000, 0x2A6DF),
            (0x2A700, 0x2B73F),
            (0x2B740, 0x2B81F),
            (0x2B820, 0x2CEAF),
            (0xF900, 0xFAFF),
            (0x2F800, 0x2FA1F),
        )
    )
