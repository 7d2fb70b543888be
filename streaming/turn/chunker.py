"""Time-division multiplexing of the user's audio and camera into 1-second TDM units (spec §3.5).

Owns: `UnitChunker` (16-kHz float32 audio in any chunk size + timestamped frames -> `Unit`s of
exactly 16000 samples, one optional frame each, and a partial last unit on flush) and
`PrefixBuffer` (a ring of recent audio, so the `prefix_padding_ms` before a detected speech start
can still be sent). Does not own: VAD (vad.py), decoding/resampling, the prompt layout of a unit.

Stream time is integer-exact ms from sample counts: 16 samples per ms at 16 kHz.
"""

from __future__ import annotations

import bisect
import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

SAMPLE_RATE_HZ: int = 16_000  # the Whisper front end's rate (omni.processing.audio.SAMPLE_RATE_HZ; tested equal)
UNIT_MS: int = 1000  # one TDM unit per second (spec §3.5): 25 audio tokens + at most one frame
UNIT_SAMPLES: int = SAMPLE_RATE_HZ * UNIT_MS // 1000
SAMPLES_PER_MS: int = SAMPLE_RATE_HZ // 1000

Clock = Callable[[], float]  # monotonic seconds, e.g. time.monotonic; tests inject a fake


def ms_to_samples(ms: float) -> int:
    return round(ms * SAMPLES_PER_MS)


def samples_to_ms(n: int) -> float:
    return n / SAMPLES_PER_MS


def _as_audio(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    assert x.ndim == 1 and np.issubdtype(x.dtype, np.floating), f"want 1-D float audio, got {x.dtype} {x.shape}"
    return x.astype(np.float32, copy=False)


@dataclass(frozen=True, eq=False)
class Unit:
    audio_16k: np.ndarray  # (16000,) float32; shorter only for the final partial unit from flush()
    frame: Image.Image | None  # latest frame stamped at or before end_ms; None if audio-only / none yet
    start_ms: float  # stream time of the first sample
    index: int  # 0, 1, ... since the last reset()

    @property
    def duration_ms(self) -> float:
        return samples_to_ms(len(self.audio_16k))

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms

    @property
    def is_partial(self) -> bool:
        return len(self.audio_16k) < UNIT_SAMPLES


class UnitChunker:
    """Audio + frames -> TDM units. Outputs depend only on the samples and the frames' stream-time
    stamps, never on how the audio was split, and a returned Unit never changes.

    Frame choice: the latest frame stamped <= the unit's end. An older frame is reused when no newer
    one arrived (a 1-fps camera can jitter past a unit boundary, and a video-mode unit keeps its image
    slot); units before the first frame carry None. A frame pushed without a stream stamp is stamped
    "now" in stream time: the audio end plus the clock time since the last audio push, capped at
    max_frame_lead_ms so a stalled mic does not push frames far into the future."""

    MAX_PENDING_FRAMES = 32  # frames stamped beyond the audio wait here; a cap bounds memory if audio stalls

    def __init__(
        self,
        *,
        clock_s: Clock = time.monotonic,
        video: bool = True,
        start_ms: float = 0,
        min_tail_ms: float = 100,
        max_frame_lead_ms: float = 200,
    ) -> None:
        # 100 ms -> 2 audio tokens; a shorter tail is the end of the trailing silence that ended the turn
        self.clock_s = clock_s
        self._video = video
        self.min_tail_samples = ms_to_samples(min_tail_ms)
        self.max_frame_lead_ms = max_frame_lead_ms
        self._seq = itertools.count()  # tie-break: of two frames with the same stamp the later-received wins
        self._frames: list[tuple[float, int, Image.Image]] = []
        self.reset(start_ms)

    def reset(self, start_ms: float = 0) -> None:
        """Start a new unit sequence at stream time start_ms (e.g. a SpeechStarted.audio_start_ms).
        Buffered audio is dropped; frames are kept so the first unit can use the latest one."""
        self.start_ms = start_ms
        self._buf = np.zeros(UNIT_SAMPLES, np.float32)
        self._fill = 0  # samples in _buf
        self._samples_done = 0  # samples already emitted (or dropped by flush) since reset
        self._index = 0
        self._last_audio_clock_s = self.clock_s()

    @property
    def video(self) -> bool:
        return self._video

    @video.setter
    def video(self, on: bool) -> None:
        """Off: frames are dropped on arrival (and those held are forgotten), units carry None."""
        self._video = on
        if not on:
            self._frames.clear()

    @property
    def audio_end_ms(self) -> float:
        """Stream time just after the last sample pushed."""
        return self.start_ms + samples_to_ms(self._samples_done + self._fill)

    def push_audio(self, samples_16k: np.ndarray) -> list[Unit]:
        """Append audio; return every unit completed by it (possibly none)."""
        x = _as_audio(samples_16k)
        self._last_audio_clock_s = self.clock_s()
        units: list[Unit] = []
        while len(x):
            take = min(len(x), UNIT_SAMPLES - self._fill)
            self._buf[self._fill : self._fill + take] = x[:take]
            self._fill += take
            x = x[take:]
            if self._fill == UNIT_SAMPLES:
                units.append(self._emit())
        return units

    def push_frame(self, image: Image.Image, t_ms: float | None = None) -> None:
        """A camera frame at stream time t_ms, or, when None, at "now" from the injected clock."""
        if not self.video:
            return
        if t_ms is None:
            lead_ms = 1000 * (self.clock_s() - self._last_audio_clock_s)
            t_ms = self.audio_end_ms + min(max(lead_ms, 0.0), self.max_frame_lead_ms)
        bisect.insort(self._frames, (t_ms, next(self._seq), image), key=lambda f: f[:2])
        if len(self._frames) > self.MAX_PENDING_FRAMES:
            del self._frames[0]

    def flush(self) -> Unit | None:
        """End of turn: the buffered tail as a partial unit, or None if it is shorter than
        min_tail_ms (the tail is then dropped; the next unit starts after it)."""
        if self._fill < max(self.min_tail_samples, 1):
            self._samples_done += self._fill
            self._fill = 0
            return None
        return self._emit()

    def _emit(self) -> Unit:
        start_ms = self.start_ms + samples_to_ms(self._samples_done)
        audio = self._buf[: self._fill].copy()  # a copy: the buffer is reused, emitted units never change
        unit = Unit(audio, self._frame_at(start_ms + samples_to_ms(self._fill)), start_ms, self._index)
        self._samples_done += self._fill
        self._fill = 0
        self._index += 1
        return unit

    def _frame_at(self, end_ms: float) -> Image.Image | None:
        if not self.video:
            return None
        i = bisect.bisect_right(self._frames, end_ms, key=lambda f: f[0])
        if i == 0:
            return None
        del self._frames[: i - 1]  # older frames can never win again: later units end later
        return self._frames[0][2]


class PrefixBuffer:
    """The last capacity_ms of a stream's audio, addressed by stream time (sample-exact).
    Size it with ServerVadConfig.lookback_ms plus the longest gap between reads."""

    def __init__(self, capacity_ms: float, start_ms: float = 0) -> None:
        self.capacity_samples = ms_to_samples(capacity_ms)
        assert self.capacity_samples > 0, "capacity must be positive"
        self._ring = np.zeros(self.capacity_samples, np.float32)
        self.reset(start_ms)

    def reset(self, start_ms: float = 0) -> None:
        self._origin = ms_to_samples(start_ms)  # stream sample index of the first sample pushed
        self._written = 0

    @property
    def end_ms(self) -> float:
        return samples_to_ms(self._origin + self._written)

    @property
    def oldest_ms(self) -> float:
        return samples_to_ms(self._origin + self._oldest())

    def _oldest(self) -> int:
        return max(0, self._written - self.capacity_samples)  # relative to _origin

    def push(self, samples_16k: np.ndarray) -> None:
        x = _as_audio(samples_16k)
        self._written += max(0, len(x) - self.capacity_samples)  # only the tail can survive
        x = x[-self.capacity_samples :]
        pos = self._written % self.capacity_samples
        first = min(len(x), self.capacity_samples - pos)
        self._ring[pos : pos + first] = x[:first]
        self._ring[: len(x) - first] = x[first:]
        self._written += len(x)

    def read(self, start_ms: float, end_ms: float | None = None) -> np.ndarray:
        """Audio in [start_ms, end_ms) (end defaults to now), clamped to what is still held."""
        lo = max(ms_to_samples(start_ms) - self._origin, self._oldest())
        hi = self._written if end_ms is None else min(self._written, ms_to_samples(end_ms) - self._origin)
        if hi <= lo:
            return np.zeros(0, np.float32)
        idx = np.arange(lo, hi) % self.capacity_samples
        return self._ring[idx]  # fancy indexing copies
