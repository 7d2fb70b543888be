"""The wire -> a MiniCPM-V 4.5 session: which conversation and inbound adapter a family gets, and
the V-4.5 adapter's own decoding: a camera frame's capture time (`captured_ms`, or its arrival),
the frame rate gate asked before any decoding (a dropped frame costs no JPEG decode), and the
session updates the family refuses (v45_config.py)."""

from __future__ import annotations

from ..session import commands as C
from ..session.conversation import Conversation
from ..session.v45_conversation import V45Conversation, unsupported
from .codecs import decode_image
from .inbound import Inbound
from .v45_config import V45


class V45Inbound(Inbound):
    async def handle(self, ev) -> None:
        # refused before any decoding: the payload's faults are beside the point
        if ev.TYPE.startswith("input_audio_buffer.") or ev.TYPE == "conversation.item.truncate":
            raise unsupported(f"{ev.TYPE} (audio input)", "type", ev.event_id)
        if ev.TYPE == "conversation.item.create" and any(p.type == "input_audio" for p in ev.item.content):
            raise unsupported("audio content", "item.content", ev.event_id)
        if ev.TYPE == "input_image_buffer.append":
            cmd = self._frame(ev)
            if cmd is not None:
                await self.conv.handle(cmd)
            return
        await super().handle(ev)

    def _frame(self, ev) -> C.AppendImage | None:
        conv = self.conv
        t_s = conv.clock_s() if ev.captured_ms is None else ev.captured_ms / 1000.0
        if not conv.config.omni.video:
            return C.AppendImage(ev.event_id, None, t_s)  # refused by the conversation
        if not conv.admit_frame(t_s):
            return None  # faster than video_fps: dropped
        try:
            image = decode_image(ev.image, self.max_image_pixels)
        except Exception:
            conv.refund_frame()  # an undecodable frame must not cost the next good one its slot
            raise
        return C.AppendImage(ev.event_id, image, t_s)


def session_classes(family: str) -> tuple[type, type]:
    """(conversation class, inbound adapter class) for the loaded family ("o-2.6" | "v-4.5")."""
    return (V45Conversation, V45Inbound) if family == V45 else (Conversation, Inbound)
