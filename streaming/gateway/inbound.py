"""The wire -> session commands: client events that carry wire data are decoded here, the one
place (with outbound.py) that knows the session's audio formats, base64 and encoded images.

Owns, per connection: the input-audio decoder (G.711 is resampled as one stream across chunks, so
it is rebuilt only when the input format changes). Reads the session's config to apply an update
and to know the current format; never changes the session itself.
"""

from __future__ import annotations

from omni.processing.prompt import plain_text

from ..session import commands as C
from .codecs import InputAudioStream, decode_image, decode_input_audio, read_wav_any
from .session_config import apply_update
from .v45_config import check_update


class Inbound:
    """Hand each parsed client event to `conv`, decoded into a session command where it carries
    wire data. `dispatch` (boundary.py) calls `handle` and turns whatever it raises into errors."""

    def __init__(self, conv, max_image_pixels: int, family: str = "o-2.6") -> None:
        """`family`: the loaded model's ("o-2.6" | "v-4.5"): what a session update may ask."""
        self.conv, self.max_image_pixels, self.family = conv, max_image_pixels, family
        self.input = InputAudioStream(conv.config.input_format)

    async def handle(self, ev) -> None:
        decode = _DECODE.get(ev.TYPE)
        await self.conv.handle(decode(self, ev) if decode else ev)

    def _update(self, ev) -> C.UpdateSession:
        old = self.conv.config
        new = apply_update(old, ev.session)
        check_update(self.family, new, ev.session)  # before anything changes: a refusal leaves the session as it was
        ref_16k = None
        if new.reference_audio is not None and new.reference_audio != old.reference_audio:
            ref = new.reference_audio  # decoded now so a bad clip is rejected with the update
            ref_16k = read_wav_any(ref.data, ref.rate_hz if ref.format == "pcm16" else None)
        if new.input_format != old.input_format:
            self.input = InputAudioStream(new.input_format)
        return C.UpdateSession(ev.event_id, new, ref_16k)

    def _audio(self, ev) -> C.AppendAudio:
        return C.AppendAudio(ev.event_id, self.input.push(ev.audio))

    def _image(self, ev) -> C.AppendImage:
        # a session with video off refuses the frame: no decoding work for it
        image = decode_image(ev.image, self.max_image_pixels) if self.conv.config.omni.video else None
        return C.AppendImage(ev.event_id, image)

    def _item(self, ev) -> C.CreateItem:
        content: list = []
        if ev.item.role == "user":
            fmt = self.conv.config.input_format
            for p in ev.item.content:
                if p.type == "input_text":
                    content.append(plain_text(p.text or ""))  # media tokens would mark absent media
                elif p.type == "input_audio" and p.audio:
                    content.append(decode_input_audio(p.audio, fmt))
                elif p.type == "input_image":
                    content.append(decode_image(p.image, self.max_image_pixels))
        return C.CreateItem(ev.event_id, ev.item, tuple(content))


_DECODE = {
    "session.update": Inbound._update,
    "input_audio_buffer.append": Inbound._audio,
    "input_image_buffer.append": Inbound._image,
    "conversation.item.create": Inbound._item,
}
