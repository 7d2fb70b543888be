"""Listening: user audio (16 kHz) and camera frames -> turn events and TDM units.

Owns one connection's VAD state, turn detector, prefix buffer and unit chunker. With server VAD
only speech (plus `prefix_padding_ms` before it) becomes units, prefilled while the user talks, so
the end of a turn leaves at most one partial unit; without VAD every sample is chunked and the
client commits. Pure bookkeeping plus the VAD network (one onnxruntime call per push, ~0.3 ms for
100 ms of audio, cheap enough to run on the event loop).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..turn.chunker import PrefixBuffer, Unit, UnitChunker
from ..turn.vad import ServerVadConfig, SileroVAD, SpeechStarted, SpeechStopped, TurnDetector


@dataclass(frozen=True)
class UnitReady:
    unit: Unit


ListenEvent = SpeechStarted | SpeechStopped | UnitReady


class Listener:
    def __init__(
        self,
        vad: SileroVAD | None,
        vad_cfg: ServerVadConfig | None,
        video: bool,
        clock_s: Callable[[], float] = time.monotonic,
    ):
        self.vad = vad
        self.chunker = UnitChunker(clock_s=clock_s, video=video)
        self.heard_samples = 0  # stream clock: every 16-kHz sample pushed so far
        self.vad_cfg = None
        self.configure(vad_cfg, video)

    @property
    def speaking(self) -> bool:
        return self.vad_cfg is not None and self.detector.state.speaking

    def configure(self, vad_cfg: ServerVadConfig | None, video: bool) -> None:
        """Switch turn detection; an utterance in progress is kept in manual mode. The VAD frames,
        the prefix buffer and the detector all count stream time from the same clock, so turning
        VAD on (or changing it) mid-stream keeps their times comparable."""
        self.chunker.video = video
        if vad_cfg is not None and vad_cfg != self.vad_cfg:
            assert self.vad is not None, "server VAD needs the silero model"
            now_ms = self.heard_samples * 1000 // 16000
            if self.vad_cfg is None:  # a running VAD keeps its network state and clock
                self.vad_state = self.vad.new_state(origin_ms=now_ms)
            self.detector = TurnDetector(vad_cfg)
            self.detector.reset(floor_ms=now_ms)
            # 2 s of slack beyond the look-back: reads happen at every push.
            self.prefix = PrefixBuffer(vad_cfg.lookback_ms + 2000, start_ms=now_ms)
        self.vad_cfg = vad_cfg

    def push_audio(self, samples_16k: np.ndarray) -> list[ListenEvent]:
        self.heard_samples += len(samples_16k)
        if self.vad_cfg is None:
            return [UnitReady(u) for u in self.chunker.push_audio(samples_16k)]
        prefix, vad = self.prefix, self.vad
        assert prefix is not None and vad is not None  # configured with the VAD
        prefix.push(samples_16k)
        events: list[ListenEvent] = []
        for frame_ms, prob in vad.push(self.vad_state, samples_16k):
            for ev in self.detector.step(prob, frame_ms):
                events += self._on_turn_event(ev)
        if self.speaking:
            events += [UnitReady(u) for u in self.chunker.push_audio(prefix.read(self.chunker.audio_end_ms))]
        return events

    def _on_turn_event(self, ev) -> list[ListenEvent]:
        out: list[ListenEvent] = [ev]
        if isinstance(ev, SpeechStarted):
            self.chunker.reset(ev.audio_start_ms)
            out += [UnitReady(u) for u in self.chunker.push_audio(self.prefix.read(ev.audio_start_ms))]
        else:
            tail = self.prefix.read(self.chunker.audio_end_ms, ev.audio_end_ms)
            out += [UnitReady(u) for u in self.chunker.push_audio(tail)]
            last = self.chunker.flush()
            if last is not None:
                out.append(UnitReady(last))
        return out

    def push_frame(self, image, t_ms: float | None = None) -> None:
        self.chunker.push_frame(image, t_ms)

    def commit(self) -> Unit | None:
        """Manual turn end: the partial last unit, if any."""
        return self.chunker.flush()

    def clear(self) -> None:
        self.chunker.reset(self.chunker.audio_end_ms)
        if self.vad_cfg is not None:
            self.detector.reset(int(self.chunker.audio_end_ms))
