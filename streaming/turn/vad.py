"""Voice activity: speech probabilities per 32-ms frame (Silero) and the server_vad turn detector.

Owns: `TurnDetector`, a pure state machine over (speech probability, frame stream time) with the
OpenAI Realtime server_vad parameters, and `SileroVAD`, one shared Silero model that scores exact
512-sample frames for any number of streams, each with its own `VadState`. Does not own: audio
transport, the TDM chunker (chunker.py), or what the gateway does on an event (commit, interrupt).

Time is stream time in integer ms derived from sample counts (512 samples = 32 ms at 16 kHz), never
wall clock, so a scripted probability table replays deterministically.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .chunker import SAMPLE_RATE_HZ

FRAME_SAMPLES: int = 512  # Silero v5+ accepts exactly 512 samples per call at 16 kHz
FRAME_MS: int = FRAME_SAMPLES * 1000 // SAMPLE_RATE_HZ  # 32
assert FRAME_MS * SAMPLE_RATE_HZ == FRAME_SAMPLES * 1000, "frames must be a whole number of ms"


# --------------------------------------------------------------------------- pure turn detector


@dataclass(frozen=True)
class ServerVadConfig:
    """The OpenAI Realtime `server_vad` fields the detector uses (same names) plus our two knobs;
    `create_response` / `interrupt_response` stay with the gateway. Defaults are OpenAI's (0.5 /
    300 / 500). Every value the protocol accepts is valid here."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    min_speech_duration_ms: int = 250  # a voiced run shorter than this (cough, click) starts nothing
    end_threshold_delta: float = (
        0.15  # hysteresis: speech ends below threshold - delta (Silero's VADIterator uses 0.15)
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        for name in ("prefix_padding_ms", "silence_duration_ms", "min_speech_duration_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.end_threshold_delta < 0.0:
            raise ValueError(f"end_threshold_delta must be >= 0, got {self.end_threshold_delta}")

    @property
    def end_threshold(self) -> float:
        return max(0.0, self.threshold - self.end_threshold_delta)

    @property
    def lookback_ms(self) -> int:
        """Audio a PrefixBuffer must keep: a start is confirmed min_speech after the onset, the
        padding reaches back before it, and up to two frames (remainder + the confirming frame)
        may be buffered beyond."""
        return self.prefix_padding_ms + self.min_speech_duration_ms + 2 * FRAME_MS


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # first ms of audio to send to the model: onset - prefix padding (OpenAI semantics)
    speech_start_ms: int  # start of the first voiced frame (the onset itself)


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int  # end of the frame that confirmed the stop: includes the silence (OpenAI semantics)
    speech_end_ms: int  # start of the trailing silence (the last voiced frame's end)


TurnEvent = SpeechStarted | SpeechStopped


@dataclass
class TurnState:
    speaking: bool = False
    candidate_start_ms: int | None = None  # onset of a voiced run not yet min_speech long
    silence_start_ms: int | None = None  # first quiet frame while speaking
    floor_ms: int = 0  # prefix padding never reaches before this (previous turn's end)
    next_frame_ms: int | None = None  # frames must not overlap or go back in time


class TurnDetector:
    """server_vad over 32-ms frame probabilities. Start: a run of frames that begins with
    p >= threshold and stays >= end_threshold for min_speech_duration_ms. Stop: frames below
    end_threshold for silence_duration_ms; a frame >= threshold cancels the silence, a frame in
    the hysteresis band neither starts nor cancels it."""

    def __init__(self, config: ServerVadConfig = ServerVadConfig(), frame_ms: int = FRAME_MS) -> None:
        self.config = config
        self.frame_ms = frame_ms
        self.state = TurnState()

    def reset(self, floor_ms: int = 0) -> None:
        """Forget any turn in progress (buffer cleared, session restarted); padding stays >= floor_ms."""
        self.state = TurnState(floor_ms=floor_ms)

    def step(self, speech_prob: float, frame_start_ms: int) -> list[TurnEvent]:
        cfg, s = self.config, self.state
        assert s.next_frame_ms is None or frame_start_ms >= s.next_frame_ms, (
            f"frame at {frame_start_ms} ms overlaps the previous one (ends {s.next_frame_ms} ms)"
        )
        frame_end_ms = frame_start_ms + self.frame_ms
        s.next_frame_ms = frame_end_ms
        loud, quiet = speech_prob >= cfg.threshold, speech_prob < cfg.end_threshold
        if not s.speaking:
            if quiet:
                s.candidate_start_ms = None
            elif loud and s.candidate_start_ms is None:
                s.candidate_start_ms = frame_start_ms
            onset = s.candidate_start_ms
            if onset is None or frame_end_ms - onset < cfg.min_speech_duration_ms:
                return []
            s.speaking, s.candidate_start_ms, s.silence_start_ms = True, None, None
            return [SpeechStarted(max(s.floor_ms, onset - cfg.prefix_padding_ms), onset)]
        if loud:
            s.silence_start_ms = None
        elif quiet and s.silence_start_ms is None:
            s.silence_start_ms = frame_start_ms
        quiet_since = s.silence_start_ms
        if quiet_since is None or frame_end_ms - quiet_since < cfg.silence_duration_ms:
            return []
        s.speaking, s.silence_start_ms, s.floor_ms = False, None, frame_end_ms
        return [SpeechStopped(frame_end_ms, quiet_since)]


# --------------------------------------------------------------------------- Silero model


def load_silero_jit() -> Any:  # silero_vad's TorchScript wrapper (its own types are loose)
    """The packaged TorchScript model (offline, ~0.07 s). `import silero_vad` calls
    torch.set_num_threads(1) for the whole process; the previous count is restored here."""
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():  # its importlib path() and torch.jit.load are deprecated upstream
            warnings.simplefilter("ignore", DeprecationWarning)
            from silero_vad import load_silero_vad

            return load_silero_vad(onnx=False)
    finally:
        torch.set_num_threads(threads)


def silero_onnx_path() -> str:
    """The sequence ONNX export that ships inside the silero-vad package (no download)."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("silero_vad")
    assert spec and spec.origin, "silero-vad is not installed"
    return os.path.join(os.path.dirname(spec.origin), "data", "silero_vad_16k_sequence.onnx")


@dataclass
class VadState:
    """Everything one stream needs between calls; the model itself holds none of it."""

    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))  # LSTM state
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 128), np.float32))
    context_16k: np.ndarray = field(default_factory=lambda: np.zeros(SileroVAD.CONTEXT_SAMPLES, np.float32))
    pending_16k: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # < 512 samples not yet scored
    frames_done: int = 0
    origin_ms: int = 0  # stream time of the first sample (a VAD switched on mid-stream)

    @property
    def next_frame_ms(self) -> int:
        return self.origin_ms + self.frames_done * FRAME_MS


class SileroVAD:
    """One Silero network shared by all streams; per-stream state lives in `VadState`.

    Why onnxruntime and its sequence export rather than the TorchScript model: one call scores all
    frames a push completed ([n, 64 context + 512] rows, LSTM state carried inside), which costs
    ~2.3 ms per second of audio for 100-ms pushes on this 2-core CPU against ~8 ms for TorchScript
    frame by frame (per-op dispatch dominates such small frames). The graph is a pure function of
    (rows, h, c); a test checks it against the public TorchScript wrapper (within 1e-4). Sessions
    allow concurrent `run` calls, so concurrent streams with distinct VadStates are safe; one
    VadState must not be pushed from two threads at once."""

    CONTEXT_SAMPLES = 64  # the wrapper prepends the previous frame's last 64 samples at 16 kHz

    def __init__(self, path: str | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3  # the export carries unused initialisers it warns about
        self._session = ort.InferenceSession(
            path or silero_onnx_path(), sess_options=opts, providers=["CPUExecutionProvider"]
        )

    def new_state(self, origin_ms: int = 0) -> VadState:
        """A fresh stream (equivalent to the wrapper's reset_states()) starting at `origin_ms`."""
        return VadState(origin_ms=origin_ms)

    def push(self, state: VadState, samples_16k: np.ndarray) -> list[tuple[int, float]]:
        """Any number of 16-kHz float samples -> [(frame_start_ms, speech_prob)] for every 512-sample
        frame completed; the remainder waits in state.pending_16k."""
        x = np.asarray(samples_16k)
        assert x.ndim == 1 and np.issubdtype(x.dtype, np.floating), f"want 1-D float audio, got {x.dtype} {x.shape}"
        buf = np.concatenate([state.pending_16k, x.astype(np.float32, copy=False)])
        n = len(buf) // FRAME_SAMPLES
        state.pending_16k = buf[n * FRAME_SAMPLES :].copy()
        if n == 0:
            return []
        frames = buf[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        ctx = np.concatenate([state.context_16k[None], frames[:-1, -self.CONTEXT_SAMPLES :]], axis=0)
        rows = np.ascontiguousarray(np.concatenate([ctx, frames], axis=1))  # (n, 64 + 512)
        probs, h, c = (np.asarray(a) for a in self._session.run(None, {"input": rows, "h": state.h, "c": state.c}))
        state.h, state.c = h, c
        state.context_16k = frames[-1, -self.CONTEXT_SAMPLES :].copy()
        out = [(state.next_frame_ms + k * FRAME_MS, float(p)) for k, p in enumerate(probs)]
        state.frames_done += n
        return out
