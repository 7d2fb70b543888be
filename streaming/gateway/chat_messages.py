"""Chat Completions `messages` on the wire -> chat.request.Message values, media decoded.

Owns the content parts OpenAI's Chat Completions sends (text, `image_url` data URLs,
`input_audio` wav/mp3 base64, assistant `refusal`; an assistant's `tool_calls` and `tool`
messages are chat_tools.py's) and the [ext] `video_frames` part (data-URL frames with
`timestamps_s` or `fps`, optional `packing`), each checked where it stands (the error's `param`
is its path) and within one request's media budget: how many stills and frames, how many
pixels decoded, how many seconds of audio. Remote URLs are refused: the server fetches nothing.
Does not own: what a family accepts (chat/o26.py, chat/v45.py), the other request fields
(chat_request.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..chat.request import Audio, Frames, Image, Message, Part, Text
from ..errors import MediaError
from .chat_tools import assistant_calls, check_answers, tool_message
from .codecs import decode_audio_file, decode_image
from .validate import as_type, b64, bad, get_field, no_unknown, one_of

MAX_MESSAGES = 1024
MAX_IMAGES = 32  # still images per request
MAX_VIDEO_FRAMES = 180  # frames per request: the model card's MAX_NUM_FRAMES
MAX_REQUEST_PIXELS_IMAGES = 8  # all stills and frames of a request: this many max_image_pixels at most
MAX_AUDIO_S = 300.0  # input audio per request (about 8000 tokens of MiniCPM-o context)
MAX_FPS = 60.0
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
AUDIO_FORMATS = ("wav", "mp3")


@dataclass
class Budget:
    """What one request's media may still use; every decode is counted against it."""

    max_image_pixels: int
    images: int = 0
    frames: int = 0
    pixels: int = 0
    audio_s: float = 0.0

    def image(self, url: str, p: str):
        img = _at(p, decode_image, _data_url(url, p), self.max_image_pixels)
        self.pixels += img.size[0] * img.size[1]
        limit = MAX_REQUEST_PIXELS_IMAGES * self.max_image_pixels
        if self.pixels > limit:
            raise MediaError(
                "image_too_large",
                f"the request's images and frames hold over {limit} pixels; send fewer or smaller ones",
                p,
            )
        return img


def parse_messages(v: Any, budget: Budget) -> tuple[Message, ...]:
    items = as_type(v, list, "messages")
    if not items:
        raise bad("invalid_value", "Invalid value for 'messages': at least one message is required.", "messages")
    if len(items) > MAX_MESSAGES:
        raise bad("invalid_value", f"'messages' holds {len(items)} messages; the limit is {MAX_MESSAGES}.", "messages")
    messages = tuple(_message(m, f"messages[{i}]", budget) for i, m in enumerate(items))
    check_answers(messages)
    return messages


def _message(v: Any, p: str, budget: Budget) -> Message:
    m = as_type(v, dict, p)
    role = one_of(get_field(m, "role", str, p, required=True), ROLES, f"{p}.role")
    if role == "function":
        raise bad(
            "unsupported_value",
            f"'{p}.role' 'function' (the deprecated functions API): send results as 'tool' messages.",
            f"{p}.role",
        )
    if role == "tool":
        return tool_message(m, p)
    no_unknown(m, {"role", "content", "name", "refusal", "tool_calls", "audio", "reasoning_content"}, p)
    calls = ()
    if m.get("tool_calls"):
        if role != "assistant":
            raise bad("invalid_value", f"'{p}.tool_calls': only assistant messages hold calls.", f"{p}.tool_calls")
        calls = assistant_calls(m["tool_calls"], f"{p}.tool_calls")
    if m.get("audio") is not None:
        raise bad(
            "unsupported_value",
            f"'{p}.audio': this server keeps no audio between requests; send the reply's transcript as content.",
            f"{p}.audio",
        )
    role = "system" if role == "developer" else role
    content = m.get("content")
    if content is None:
        if role != "assistant":
            raise bad("missing_required_parameter", f"Missing required parameter: '{p}.content'.", f"{p}.content")
        return Message(role, (), calls)
    if isinstance(content, str):
        return Message(role, (Text(content),), calls)
    parts = as_type(content, list, f"{p}.content")
    return Message(role, tuple(_part(x, role, f"{p}.content[{j}]", budget) for j, x in enumerate(parts)), calls)


def _part(v: Any, role: str, p: str, budget: Budget) -> Part:
    part = as_type(v, dict, p)
    kinds = {"user": ("text", "image_url", "input_audio", "video_frames", "file"), "assistant": ("text", "refusal")}
    kind = one_of(get_field(part, "type", str, p, required=True), kinds.get(role, ("text",)), f"{p}.type")
    no_unknown(part, {"type", kind}, p)
    if kind == "text":
        return Text(get_field(part, "text", str, p, required=True))
    if kind == "refusal":
        return Text(get_field(part, "refusal", str, p, required=True))
    if kind == "file":
        raise bad("unsupported_value", f"'{p}': file parts are not supported; send images, audio or text.", p)
    body = get_field(part, kind, dict, p, required=True)
    q = f"{p}.{kind}"
    if kind == "image_url":
        no_unknown(body, {"url", "detail"}, q)
        budget.images += 1
        if budget.images > MAX_IMAGES:
            raise MediaError("too_many_images", f"a request may hold {MAX_IMAGES} images at most", q)
        return Image(budget.image(get_field(body, "url", str, q, required=True), f"{q}.url"))
    if kind == "input_audio":
        no_unknown(body, {"data", "format"}, q)
        fmt = one_of(get_field(body, "format", str, q, required=True), AUDIO_FORMATS, f"{q}.format")
        data = b64(get_field(body, "data", str, q, required=True), f"{q}.data")
        audio = _at(f"{q}.data", decode_audio_file, data, fmt, MAX_AUDIO_S - budget.audio_s)
        budget.audio_s += len(audio) / 16_000
        return Audio(audio)
    return _frames(body, q, budget)


def _frames(body: dict, p: str, budget: Budget) -> Frames:
    no_unknown(body, {"frames", "timestamps_s", "fps", "packing"}, p)
    urls = get_field(body, "frames", list, p, required=True)
    if not urls:
        raise bad("invalid_value", f"Invalid value for '{p}.frames': at least one frame is required.", f"{p}.frames")
    budget.frames += len(urls)
    if budget.frames > MAX_VIDEO_FRAMES:
        raise MediaError(
            "too_many_frames", f"a request may hold {MAX_VIDEO_FRAMES} video frames at most", f"{p}.frames"
        )
    times, fps = body.get("timestamps_s"), get_field(body, "fps", float, p)
    if (times is None) == (fps is None):
        raise bad("invalid_value", f"'{p}' needs exactly one of 'timestamps_s' and 'fps'.", p)
    if fps is not None:
        if not 0 < fps <= MAX_FPS:
            raise bad("invalid_value", f"Invalid value for '{p}.fps': {fps} is outside (0, {MAX_FPS:g}].", f"{p}.fps")
        times_s = tuple(i / fps for i in range(len(urls)))
    else:
        raw = as_type(times, list, f"{p}.timestamps_s")
        times_s = tuple(as_type(t, float, f"{p}.timestamps_s[{i}]") for i, t in enumerate(raw))
        if len(times_s) != len(urls) or any(t < 0 for t in times_s) or list(times_s) != sorted(times_s):
            raise bad(
                "invalid_value",
                f"'{p}.timestamps_s' must give each frame a time in seconds (>= 0, non-decreasing), one per frame.",
                f"{p}.timestamps_s",
            )
    packing = get_field(body, "packing", int, p)
    if packing is not None and not 1 <= packing <= 6:
        raise bad("invalid_value", f"Invalid value for '{p}.packing': {packing} is outside [1, 6].", f"{p}.packing")
    frames = tuple(budget.image(as_type(u, str, f"{p}.frames[{i}]"), f"{p}.frames[{i}]") for i, u in enumerate(urls))
    return Frames(frames, times_s, packing)


def _data_url(url: str, p: str) -> str:
    if url.startswith(("http://", "https://")):
        raise bad(
            "invalid_image_url",
            f"'{p}': remote image URLs are not fetched (this server fetches nothing); "
            "send the image inline as a data URL: data:image/jpeg;base64,...",
            p,
        )
    if not (url.startswith("data:image/") and ";base64," in url[:64]):
        raise bad("invalid_image_url", f"'{p}' must be a data URL: data:image/jpeg;base64,...", p)
    return url


def _at(p: str, decode, *args):
    """`decode(*args)`, its MediaError naming where the bad media stood."""
    try:
        return decode(*args)
    except MediaError as e:
        e.param = e.param or p
        raise
