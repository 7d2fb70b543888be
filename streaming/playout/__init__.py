"""Playout: where reply audio goes after the TTS, and how much of it the user has heard.

Two sinks share one small interface so barge-in logic is transport-free:
* `ClockPlayout` (WebSocket): audio is sent as fast as it is made; the client plays it in real
  time, so the heard position is estimated as min(sent, time since the first chunk) by an
  injected clock, until the client reports the exact `audio_end_ms` with a truncate.
* `QueuePlayout` (WebRTC): audio waits in a queue that the outgoing track drains at 24 kHz in
  real time, so the heard position is exact and `stop()` makes the very next frame silence.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

RATE_HZ = 24_000


class ClockPlayout:
    def __init__(self, clock_s: Callable[[], float] = time.monotonic):
        self.clock_s = clock_s
        self._response: str | None = None
        self._sent_samples = 0
        self._t0: float | None = None

    def start(self, response_id: str) -> None:
        self._response, self._sent_samples, self._t0 = response_id, 0, None

    def write(self, response_id: str, wav_24k: np.ndarray) -> None:
        if response_id != self._response:
            return
        if self._t0 is None and len(wav_24k):
            self._t0 = self.clock_s()
        self._sent_samples += len(wav_24k)

    def played_ms(self, response_id: str) -> float:
        if response_id != self._response or self._t0 is None:
            return 0.0
        sent_ms = 1000.0 * self._sent_samples / RATE_HZ
        return min(sent_ms, 1000.0 * (self.clock_s() - self._t0))

    def stop(self, response_id: str) -> None:
        if response_id == self._response:
            self._response = None


@dataclass
class _Queued:
    response_id: str
    samples: np.ndarray


@dataclass
class QueuePlayout:
    """Filled by the response task, drained by the WebRTC track's `read(n)` every 20 ms."""

    queue: collections.deque = field(default_factory=collections.deque)
    played_samples: dict = field(default_factory=dict)
    _current: str | None = None

    def start(self, response_id: str) -> None:
        self._current = response_id
        self.played_samples[response_id] = 0
        for old in [k for k in self.played_samples if k != response_id]:
            del self.played_samples[old]  # only the live response's position matters

    def write(self, response_id: str, wav_24k: np.ndarray) -> None:
        if response_id == self._current and len(wav_24k):
            self.queue.append(_Queued(response_id, np.asarray(wav_24k, np.float32)))

    def stop(self, response_id: str) -> None:
        if response_id == self._current:
            self._current = None
        self.queue = collections.deque(q for q in self.queue if q.response_id != response_id)

    def played_ms(self, response_id: str) -> float:
        return 1000.0 * self.played_samples.get(response_id, 0) / RATE_HZ

    def read(self, n: int) -> np.ndarray:
        """Next `n` samples at 24 kHz: queued speech, then silence."""
        out = np.zeros(n, np.float32)
        filled = 0
        while filled < n and self.queue:
            head = self.queue[0]
            take = min(n - filled, len(head.samples))
            out[filled : filled + take] = head.samples[:take]
            self.played_samples[head.response_id] = self.played_samples.get(head.response_id, 0) + take
            filled += take
            if take == len(head.samples):
                self.queue.popleft()
            else:
                head.samples = head.samples[take:]
        return out
