"""What a batch engine ran: `EngineStats`, per op kind the batches, the ops in them and their
seconds, plus LLM tokens, TTS frames and reply pieces handed out.

Written on the engine thread, read from any thread (`as_dict`, under its lock). Does not own:
timing the batches (the engine measures and adds).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ..model.ops import LLMForward, Op, TTSFrame


@dataclass
class EngineStats:
    """Per op kind: batches run, ops in them, seconds; plus LLM tokens and TTS frames."""

    batches: dict = field(default_factory=dict)
    ops: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    llm_tokens: int = 0
    llm_decode_tokens: int = 0
    llm_decode_s: float = 0.0
    tts_frames: int = 0
    tts_frame_s: float = 0.0
    pieces: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # read from other threads

    def add(self, kind: str, n: int, seconds: float, ops: list[Op]) -> None:
        with self.lock:
            self._add(kind, n, seconds, ops)

    def _add(self, kind: str, n: int, seconds: float, ops: list[Op]) -> None:
        self.batches[kind] = self.batches.get(kind, 0) + 1
        self.ops[kind] = self.ops.get(kind, 0) + n
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds
        if kind == "llm":
            llm = [op for op in ops if isinstance(op, LLMForward)]  # an "llm" batch holds only these
            self.llm_tokens += sum(op.length for op in llm)
            if all(op.length == 1 for op in llm):
                self.llm_decode_tokens += n
                self.llm_decode_s += seconds
        elif kind == "tts":
            frames = sum(isinstance(op, TTSFrame) for op in ops)
            self.tts_frames += frames
            if frames == n:
                self.tts_frame_s += seconds

    def as_dict(self) -> dict:
        with self.lock:
            return self._as_dict()

    def _as_dict(self) -> dict:
        return {
            "batches": dict(self.batches),
            "ops": dict(self.ops),
            "mean_batch": {k: round(self.ops[k] / self.batches[k], 2) for k in self.batches},
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "llm_tokens": self.llm_tokens,
            "tts_frames": self.tts_frames,
            "pieces": self.pieces,
        }
