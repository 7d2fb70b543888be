"""A WebRTC call's tracks for a MiniCPM-V 4.5 session: the camera sampled at `video_fps` by the
frames' own times (the track's RTP clock), and any microphone drained unheard. The call (webrtc.py)
runs these readers instead of its o-2.6 ones; frames reach the conversation through its mailbox."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from aiortc.mediastreams import MediaStreamError

from ..session.v45_conversation import V45Conversation


def v45_reader(call, track):
    """The reader of one of `call`'s (webrtc.Call) incoming tracks."""
    return drain(track) if track.kind == "audio" else sample(call, call.conv, track)


async def drain(track) -> None:
    """MiniCPM-V 4.5 hears nothing: a microphone's packets are read (so none pile up) and dropped."""
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return


async def sample(call, conv: V45Conversation, track) -> None:
    """Camera frames admitted at `video_fps` by capture time, converted off the loop, each passed
    on with that time; `call` (webrtc.Call) counts them (`frames_in`)."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not conv.config.omni.video:
            continue
        timed = frame.pts is not None and frame.time_base is not None
        t_s = float(frame.pts * frame.time_base) if timed else call.clock_s()
        if not conv.admit_frame(t_s):  # faster than video_fps: nothing to convert
            continue
        image = await loop.run_in_executor(None, frame.to_image)
        await call.mailbox.media(partial(conv.add_frame, image, t_s))
        call.frames_in += 1


class V45CallConversation(V45Conversation):
    """A call's MiniCPM-V 4.5 conversation: its `close()` also hangs up the call (webrtc.Call)."""

    call: Any

    async def close(self) -> None:
        await super().close()
        await self.call.hangup()
