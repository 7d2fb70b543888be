"""WebRTC media at the gateway edge: decoded frames in, reply speech out, loopback-only ICE.

Owns: turning aiortc's decoded `av.AudioFrame`s into float32 mono, the outgoing speech track that
drains a `QueuePlayout` in real time, and SDP candidate filtering. Does not own: signalling, the
data channel or the conversation (webrtc.py), resampling filters (codecs.py).
"""

from __future__ import annotations

import asyncio
import fractions
import re
import time
from typing import Callable

import aioice.ice
import av
import numpy as np
from aiortc.mediastreams import AUDIO_PTIME, AudioStreamTrack, MediaStreamError

from ..playout import RATE_HZ as PLAYOUT_RATE_HZ
from .codecs import float_to_pcm16

LOOPBACK = "127.0.0.1"
SAMPLES_PER_FRAME = int(AUDIO_PTIME * PLAYOUT_RATE_HZ)  # 480: 20 ms at 24 kHz


_DEFAULT_HOST_ADDRESSES = aioice.ice.get_host_addresses


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    # aioice's default lists every interface *except* 127.0.0.1; a server bound to loopback
    # offers exactly one host candidate, 127.0.0.1 (ENV-NOTES §4).
    return [LOOPBACK] if use_ipv4 else []


def use_loopback_ice(enabled: bool) -> None:
    """Loopback-only ICE (a server on 127.0.0.1) or aioice's own interface list (a LAN server,
    e.g. for an iPad). Process-wide, like aioice's function it replaces; set once at start-up."""
    aioice.ice.get_host_addresses = _loopback_host_addresses if enabled else _DEFAULT_HOST_ADDRESSES


def loopback_ice() -> bool:
    return aioice.ice.get_host_addresses is _loopback_host_addresses


use_loopback_ice(True)  # safe default until the server configures it


_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) ")


def loopback_only(sdp: str) -> tuple[str, int]:
    """Drop every ICE candidate that is not 127.0.0.1 (Chrome prefers its eth0 address even when
    loopback works). Returns the filtered SDP and how many candidates are left."""
    kept, n = [], 0
    for line in sdp.splitlines():
        m = _CANDIDATE.match(line)
        if m is not None:
            if m.group(1) != LOOPBACK:
                continue
            n += 1
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", n


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame (any sample format, packed or planar) -> float32 mono in [-1, 1).

    aiortc's Opus decoder gives s16 packed stereo: `to_ndarray()` is (1, 2*n) interleaved."""
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        x = x.reshape(channels, -1).T
    else:
        x = x.reshape(-1, channels)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    return x.astype(np.float32).mean(axis=1)


class PlayoutTrack(AudioStreamTrack):
    """Reply speech: every 20 ms, the next 480 samples of the `QueuePlayout` (silence when empty).

    Frames go out at the playout's own 24 kHz: aiortc's Opus encoder resamples any s16 frame to
    48 kHz itself. Reading happens at send time, so after `playout.stop()` the very next frame
    is silence (barge-in)."""

    def __init__(self, playout, clock_s: Callable[[], float] = time.time):
        super().__init__()
        self.playout, self.clock_s = playout, clock_s
        self._t0_s: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0_s is None:
            self._t0_s = self.clock_s()
        else:
            self._pts += SAMPLES_PER_FRAME
            await asyncio.sleep(self._t0_s + self._pts / PLAYOUT_RATE_HZ - self.clock_s())
        pcm = float_to_pcm16(self.playout.read(SAMPLES_PER_FRAME))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PLAYOUT_RATE_HZ
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, PLAYOUT_RATE_HZ)
        return frame
