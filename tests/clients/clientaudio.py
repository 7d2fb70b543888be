"""Speech for the client tests: what every realtime client sends by default (PCM16, 24 kHz)."""

from __future__ import annotations

import numpy as np


def pcm16_24k(speech_16k: np.ndarray, lead_s: float = 0.5, tail_s: float = 1.5) -> bytes:
    """Silence, the clip, silence, as PCM16 LE at 24 kHz (what every client sends by default)."""
    from streaming.gateway.codecs import float_to_pcm16, resample

    x = np.concatenate(
        [np.zeros(int(lead_s * 16000), np.float32), speech_16k, np.zeros(int(tail_s * 16000), np.float32)]
    )
    return float_to_pcm16(resample(x, 16000, 24000)).tobytes()


def frames(pcm: bytes, ms: int = 20, rate_hz: int = 24000) -> list[bytes]:
    step = 2 * rate_hz * ms // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]
