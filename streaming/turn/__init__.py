"""Turn taking: VAD + server_vad turn detection, and the 1-second TDM unit chunker.

Per stream, in stream time (ms from sample counts):
    mic 16 kHz -> PrefixBuffer.push -> SileroVAD.push(vad_state) -> TurnDetector.step
      SpeechStarted(a): chunker.reset(a.audio_start_ms); chunker.push_audio(prefix.read(a.audio_start_ms))
      while speaking:   chunker.push_audio(prefix.read(chunker.audio_end_ms))
      SpeechStopped(s): chunker.push_audio(prefix.read(chunker.audio_end_ms, s.audio_end_ms)); chunker.flush()
"""

from .chunker import (
    SAMPLE_RATE_HZ,
    UNIT_MS,
    UNIT_SAMPLES,
    PrefixBuffer,
    Unit,
    UnitChunker,
    ms_to_samples,
    samples_to_ms,
)
from .vad import (
    FRAME_MS,
    FRAME_SAMPLES,
    ServerVadConfig,
    SileroVAD,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
    TurnState,
    VadState,
    load_silero_jit,
)

__all__ = [
    "SAMPLE_RATE_HZ",
    "UNIT_MS",
    "UNIT_SAMPLES",
    "PrefixBuffer",
    "Unit",
    "UnitChunker",
    "ms_to_samples",
    "samples_to_ms",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "ServerVadConfig",
    "SileroVAD",
    "SpeechStarted",
    "SpeechStopped",
    "TurnDetector",
    "TurnEvent",
    "TurnState",
    "VadState",
    "load_silero_jit",
]
