"""A chat request on MiniCPM-V 4.5: what the model would be asked, and its thinking split off.

Owns, for the family's text-only, thinking-capable model: the request's refusals (audio in or out,
function tools, mixing a video with still images, a pack of frames of two sizes), its arguments
to the official `chat()` prompt (`omni.chat_v45.prepare`: messages of text and images, the system
prompt, the thinking switch, the video's packs by the model card's recipe, the card's video call
of one slice and no image ids, the sampling preset), and `ThinkSplitter`, which streams a thinking
reply's text into `reasoning_content` and `content` at `</think>`. Consecutive user messages are
one user turn (as a session joins them), so the plan is exactly what the engine session runs
(run_v45.py). Pure: no model, no engine.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from omni.chat_v45 import LLM_DEFAULTS, preset
from omni.processing import video as VID
from omni.processing.prompt import plain_text
from omni.sampling import SamplingParams
from omni.session.v45_turns import TEMPORAL_IDS

from ..errors import ProtocolError
from .request import Audio, ChatRequest, Frames, Image, Sampling, Text

TITLE = "MiniCPM-V 4.5"
THINK_CLOSE = "</think>"


@dataclass(frozen=True)
class V45Plan:
    """`chat_v45.prepare(m, **plan.prepare_args())` builds the prompt; the rest drives decoding."""

    msgs: tuple[dict, ...]  # {"role": "user" | "assistant", "content": [str | PIL image]}
    system_prompt: str
    thinking: bool
    temporal_ids: list[list[int]] | None  # one id list per pack (a video), else None
    max_slice_nums: int | None  # 1 for a video (the card's call), else the processor's default
    use_image_id: bool | None
    sampling: SamplingParams
    max_new_tokens: int
    video_at: tuple[int, int] | None = None  # (message, first part) of the video's frames in `msgs`

    def prepare_args(self) -> dict:
        return {
            "msgs": list(self.msgs),
            "system_prompt": self.system_prompt,
            "thinking": self.thinking,
            "temporal_ids": self.temporal_ids,
            "max_slice_nums": self.max_slice_nums,
            "use_image_id": self.use_image_id,
        }


def plan(req: ChatRequest, max_reply_tokens: int) -> V45Plan:
    """Raises ProtocolError for what V-4.5 cannot answer (naming the family)."""
    if req.speech is not None:
        raise ProtocolError(
            "unsupported_modality", f"{TITLE} answers in text only: send modalities ['text'] and no audio", "modalities"
        )
    if req.tools is not None or any(m.calls or m.role == "tool" for m in req.messages):
        raise ProtocolError(
            "unsupported_parameter",
            f"{TITLE} runs no function tools here: leave out tools, tool calls and tool messages",
            "tools" if req.tools is not None else "messages",
        )
    system = plain_text("\n".join(m.text for m in req.messages if m.role == "system"))
    turns = [m for m in req.messages if m.role != "system"]
    if not turns or turns[0].role != "user" or turns[-1].role != "user":
        raise ProtocolError("invalid_value", f"{TITLE} takes turns that start and end with the user's", "messages")
    msgs: list[dict] = []
    videos, stills, video_at = [], 0, None
    for m in turns:
        if msgs and msgs[-1]["role"] == m.role == "user":  # one user turn, as a session joins them
            content = msgs.pop()["content"]
        else:
            content = []
        for p in m.parts:
            if isinstance(p, Audio):
                raise ProtocolError(
                    "unsupported_content", f"{TITLE} has no audio input: send text, images or video frames", "messages"
                )
            if isinstance(p, Text):
                content.append(plain_text(p.text))
            elif isinstance(p, Image):
                content.append(p.image)
                stills += 1
            elif isinstance(p, Frames):
                video_at = (len(msgs), len(content))
                content += list(p.frames)
                videos.append(p)
        msgs.append({"role": m.role, "content": content or [""]})  # no parts: an empty message, as chat() reads it
    if videos and (stills or len(videos) > 1):
        raise ProtocolError(
            "unsupported_content",
            f"{TITLE} takes one video_frames part per request and no still images beside it "
            "(a video is read with one slice per frame and no image ids)",
            "messages",
        )
    temporal_ids = pack_times(videos[0], videos[0].packing) if videos else None
    return V45Plan(
        tuple(msgs),
        system,
        req.thinking,
        temporal_ids,
        1 if videos else None,
        False if videos else None,
        sampling(req.sampling, req.thinking),
        max_reply_tokens if req.max_tokens is None else min(req.max_tokens, max_reply_tokens),
        video_at,
    )


def pack_times(video: Frames, packing: int | None = None) -> list[list[int]]:
    """The card's recipe for frames already chosen: time ids on the 0.1-s grid (its nearest-point
    mapping), packs of one while the frames fit in MAX_NUM_FRAMES, else up to MAX_NUM_PACKING;
    `packing` (1-6, the [ext] field) fixes it. A pack's frames must have one size."""
    n = len(video.frames)
    if packing is None:
        packing = 1 if n <= VID.MAX_NUM_FRAMES else min(math.ceil(n / VID.MAX_NUM_FRAMES), VID.MAX_NUM_PACKING)
    times = np.asarray(video.times_s, dtype=np.float64)
    if times.max() / VID.TIME_SCALE_S + 0.5 >= TEMPORAL_IDS:  # (before the grid: it has a point per id)
        raise ProtocolError(
            "invalid_value",
            f"the frames span {times.max():.0f} s; {TITLE} times a video's frames over at most "
            f"{TEMPORAL_IDS * VID.TIME_SCALE_S:.0f} s (its temporal table)",
            "messages",
        )
    scale = np.arange(0, float(times.max()) + VID.TIME_SCALE_S, VID.TIME_SCALE_S)
    ids = np.rint(VID.nearest(times, scale) / VID.TIME_SCALE_S).astype(int).tolist()
    packs = [ids[i : i + packing] for i in range(0, n, packing)]
    for k in range(0, n, packing):
        sizes = {f.size for f in video.frames[k : k + packing]}
        if len(sizes) > 1:
            raise ProtocolError(
                "invalid_value",
                f"the frames of a pack must have one size; frames {k}-{k + packing - 1} have {sorted(sizes)}",
                "messages",
            )
    return packs


def sampling(s: Sampling, thinking: bool) -> SamplingParams:
    """The official `chat()` preset for the mode with the request's knobs over it; temperature 0
    is greedy (the preset's beam search is not implemented)."""
    if s.temperature == 0:
        base = SamplingParams(**LLM_DEFAULTS)
    else:
        base = preset(True, thinking)
        if s.temperature is not None:
            base = dataclasses.replace(base, temperature=s.temperature)
    given = {"top_p": s.top_p, "top_k": s.top_k, "repetition_penalty": s.repetition_penalty}
    return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


class ThinkSplitter:
    """A thinking reply's text (it starts inside `<think>`, which the prompt opened) -> pieces of
    (reasoning, content): everything before `</think>` is reasoning, the rest content, with the
    blank lines the template puts after `</think>` dropped. A piece of `</think>` split across
    deltas is held back until it is whole. `thinking` False: all content."""

    def __init__(self, thinking: bool) -> None:
        self.in_think = thinking
        self._held = ""
        self._lead = True  # content has not started: its leading newlines are the template's

    def push(self, text: str) -> tuple[str, str]:
        if not self.in_think:
            return "", self._content(text)
        buf = self._held + text
        if (i := buf.find(THINK_CLOSE)) >= 0:
            self.in_think, self._held = False, ""
            return buf[:i], self._content(buf[i + len(THINK_CLOSE) :])
        keep = next((n for n in range(min(len(THINK_CLOSE) - 1, len(buf)), 0, -1) if buf.endswith(THINK_CLOSE[:n])), 0)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep], ""

    def flush(self) -> tuple[str, str]:
        """The reply ended (inside the thinking too, when the token cap cut it)."""
        held, self._held = self._held, ""
        return (held, "") if self.in_think else ("", "")

    def _content(self, text: str) -> str:
        if self._lead:
            text = text.lstrip("\n")
            self._lead = not text
        return text
