"""Media at the wire edge: client audio/images in, reply audio out, voice-clone clips.

Owns: PCM16 / G.711 (μ-law, A-law per ITU-T G.711) conversion, resampling to the model's 16 kHz
input and from its 24 kHz speech output (soxr, the resampler librosa itself uses), a streaming
resampler whose output length never drifts, image decoding with size limits, and reference-clip
reading. Every bad input is a MediaError with a message a client can act on. Does not own: VAD,
chunking into 1-s units, or which format a session uses (protocol.SessionConfig).
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageOps

from ..errors import MediaError
from .protocol import AUDIO_FORMATS, AudioFormat

MODEL_INPUT_RATE_HZ = 16_000  # Whisper encoder input
MODEL_OUTPUT_RATE_HZ = 24_000  # Vocos output of the TTS head
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP")
# Past about 1000:1 the model's resize clamps the short side to one patch and the long side
# grows without bound (1x1,000,000 pixels -> 32,000 patches to encode); no camera or screenshot
# comes near 100:1.
MAX_ASPECT = 100
MIN_REFERENCE_S = 1.0  # shorter clips give the speaker encoder too little to go on
MAX_REFERENCE_S = 30.0
MIN_AUDIO_S = 0.1  # an input clip this short says nothing (OpenAI's smallest commit)

# ---------------------------------------------------------------- G.711 (ITU-T G.711 tables)
_ULAW_BIAS = 0x84  # 132: added before the segment search so segment 0 starts at 0
_ULAW_CLIP_14 = 8_159  # largest 14-bit magnitude that still fits after the bias
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])  # 13-bit segments


def _ulaw_decode_one(code: int) -> int:
    u = ~code & 0xFF
    mag = ((((u & 0x0F) << 3) + _ULAW_BIAS) << ((u >> 4) & 0x07)) - _ULAW_BIAS
    return -mag if u & 0x80 else mag


def _alaw_decode_one(code: int) -> int:
    a = code ^ 0x55  # even bits are inverted on the line
    seg = (a >> 4) & 0x07
    mag = ((a & 0x0F) << 4) + (8 if seg == 0 else 0x108)
    mag = mag << (seg - 1) if seg > 1 else mag
    return mag if a & 0x80 else -mag


ULAW_TO_PCM16 = np.array([_ulaw_decode_one(c) for c in range(256)], dtype=np.int16)
ALAW_TO_PCM16 = np.array([_alaw_decode_one(c) for c in range(256)], dtype=np.int16)


def ulaw_encode(pcm16: np.ndarray) -> bytes:
    """int16 samples -> G.711 μ-law bytes (14-bit form of the segment search, as in Sun's g711.c
    and CPython's audioop, so the codes match those references bit for bit)."""
    x = pcm16.astype(np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _ULAW_CLIP_14) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag)  # first segment whose end >= mag
    uval = (np.minimum(seg, 7) << 4) | ((mag >> (seg + 1)) & 0x0F)
    uval = np.where(seg >= 8, 0x7F, uval)  # beyond the last segment: full scale
    return (uval ^ mask).astype(np.uint8).tobytes()


def alaw_encode(pcm16: np.ndarray) -> bytes:
    """int16 samples -> G.711 A-law bytes (13-bit magnitude, 8 segments)."""
    x = pcm16.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag)  # first segment whose end >= mag
    shift = np.where(seg < 2, 1, seg)
    aval = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, aval)  # beyond the last segment: clip to full scale
    return (aval ^ mask).astype(np.uint8).tobytes()


# ---------------------------------------------------------------- resampling
class StreamResampler:
    """Chunked resampling whose total output equals a one-shot call and never drifts.

    soxr keeps the filter state between chunks, so the output depends only on the samples, not
    on how they were split; it holds back a bounded tail (measured ≤ ~600 output samples,
    ~37 ms at 16 kHz, for 24 kHz -> 16 kHz) that `flush()` releases.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int) -> None:
        self.in_rate_hz, self.out_rate_hz = in_rate_hz, out_rate_hz
        self.samples_in = 0
        self.samples_out = 0
        self._stream = soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, dtype="float32", quality="HQ")

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed float32 mono samples; returns whatever output is ready (maybe none)."""
        return self._run(x, last=False)

    def flush(self) -> np.ndarray:
        """Release the held-back tail and reset, ready for an unrelated stream."""
        out = self._run(np.zeros(0, np.float32), last=True)
        self._stream.clear()
        self.samples_in = self.samples_out = 0
        return out

    def _run(self, x: np.ndarray, last: bool) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.in_rate_hz == self.out_rate_hz:
            out = x
        else:
            out = self._stream.resample_chunk(x, last=last)
        self.samples_in += len(x)
        self.samples_out += len(out)
        return out


def resample(x: np.ndarray, in_rate_hz: int, out_rate_hz: int) -> np.ndarray:
    """One-shot float32 mono resampling (same filter as StreamResampler)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x if in_rate_hz == out_rate_hz else soxr.resample(x, in_rate_hz, out_rate_hz, "HQ")


# ---------------------------------------------------------------- wire audio
def _b64decode(data: str | bytes, what: str) -> bytes:
    if isinstance(data, bytes):
        return data  # protocol.parse_client_event already decoded it
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MediaError("invalid_audio", f"{what} is not valid base64: {e}.") from None


def _fmt(fmt: AudioFormat | str) -> str:
    t = fmt.type if isinstance(fmt, AudioFormat) else fmt
    if t not in AUDIO_FORMATS:
        raise MediaError("invalid_audio_format", f"Unsupported audio format {t!r}.")
    return t


def _rate_hz(fmt: AudioFormat | str) -> int:
    return AudioFormat(_fmt(fmt)).rate_hz


def wire_to_float(data: bytes, fmt: AudioFormat | str) -> np.ndarray:
    """Raw wire bytes -> float32 in [-1, 1) at the format's own rate (24 kHz PCM, 8 kHz G.711)."""
    t = _fmt(fmt)
    if t == "audio/pcm":
        if len(data) % 2:
            raise MediaError("invalid_audio", f"PCM16 audio must be an even number of bytes, got {len(data)}.")
        pcm = np.frombuffer(data, dtype="<i2")
    else:
        table = ULAW_TO_PCM16 if t == "audio/pcmu" else ALAW_TO_PCM16
        pcm = table[np.frombuffer(data, dtype=np.uint8)]
    return pcm.astype(np.float32) / 32768.0


def decode_input_audio(b64: str | bytes, fmt: AudioFormat | str) -> np.ndarray:
    """Client audio (base64 str, or bytes already decoded) -> float32 mono at 16 kHz.

    One-shot: for a stream of appends use InputAudioStream, which does not drift at chunk edges.
    """
    x = wire_to_float(_b64decode(b64, "input audio"), fmt)
    return resample(x, _rate_hz(fmt), MODEL_INPUT_RATE_HZ)


class InputAudioStream:
    """`input_audio_buffer.append` payloads -> 16 kHz float32, state kept across appends."""

    def __init__(self, fmt: AudioFormat | str) -> None:
        self.fmt = _fmt(fmt)
        self.resampler = StreamResampler(_rate_hz(fmt), MODEL_INPUT_RATE_HZ)

    def push(self, b64: str | bytes) -> np.ndarray:
        return self.resampler.push(wire_to_float(_b64decode(b64, "input audio"), self.fmt))

    def flush(self) -> np.ndarray:
        return self.resampler.flush()


def float_to_pcm16(x: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> int16, clipped and rounded (not truncated, which adds a DC bias)."""
    return np.clip(np.round(np.asarray(x, np.float32) * 32768.0), -32768, 32767).astype(np.int16)


class OutputAudioStream:
    """24 kHz float32 reply audio -> base64 deltas in the session's output format, state kept
    across deltas (G.711 is resampled to 8 kHz as one stream: no clicks or lost samples at
    delta edges). PCM16 stays at 24 kHz and holds nothing back."""

    def __init__(self, fmt: AudioFormat | str) -> None:
        self.fmt = _fmt(fmt)
        self.resampler = StreamResampler(MODEL_OUTPUT_RATE_HZ, _rate_hz(self.fmt))

    def push(self, wav_24k: np.ndarray) -> str:
        return self._wire(self.resampler.push(wav_24k))

    def flush(self) -> str:
        """The held-back tail ("" when there is none, e.g. PCM16)."""
        return self._wire(self.resampler.flush())

    def _wire(self, x: np.ndarray) -> str:
        return base64.b64encode(pcm16_to_wire(float_to_pcm16(x), self.fmt)).decode("ascii") if len(x) else ""


def pcm16_to_wire(pcm16: np.ndarray, fmt: AudioFormat | str) -> bytes:
    """int16 at the format's rate -> wire bytes (PCM16 little-endian or G.711)."""
    t = _fmt(fmt)
    if t == "audio/pcm":
        return pcm16.astype("<i2").tobytes()
    return ulaw_encode(pcm16) if t == "audio/pcmu" else alaw_encode(pcm16)


# ---------------------------------------------------------------- images
def decode_image(data: str | bytes, max_pixels: int) -> Image.Image:
    """A camera frame (base64, data URL or raw bytes) -> RGB PIL image.

    Raises MediaError for bad base64, formats other than JPEG/PNG/WebP, corrupt data, or more
    than `max_pixels` pixels (checked from the header, before decoding).
    """
    if isinstance(data, str):
        s = data.split(";base64,", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(s, validate=True)
        except (binascii.Error, ValueError) as e:
            raise MediaError("invalid_image", f"Image is not valid base64: {e}.") from None
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        fmt, (w, h) = img.format, img.size
        if fmt not in IMAGE_FORMATS:
            raise MediaError(
                "unsupported_image_format", f"Image format {fmt} is not supported; send JPEG, PNG or WebP."
            )
        if w * h > max_pixels:  # checked before decoding, so a huge frame costs nothing
            raise MediaError("image_too_large", f"Image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}.")
        if max(w, h) > MAX_ASPECT * min(w, h):
            raise MediaError("invalid_image", f"Image is {w}x{h}: an aspect ratio over {MAX_ASPECT}:1 is refused.")
        img.load()
    except MediaError:
        raise
    except Image.DecompressionBombError as e:
        raise MediaError("image_too_large", f"Image rejected as too large: {e}") from None
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError...)
        raise MediaError("invalid_image", f"Image could not be decoded ({type(e).__name__}: {e}).") from None
    # Phone photos store rotation in EXIF; the model should see them upright.
    return ImageOps.exif_transpose(img).convert("RGB")


# ---------------------------------------------------------------- audio files (Chat Completions)
def decode_audio_file(data: bytes, fmt: str, max_s: float) -> np.ndarray:
    """A WAV or MP3 file (`fmt`, as the client says) -> float32 mono at 16 kHz; its length is
    read from the header and checked against `max_s` before anything is decoded."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format.lower() != fmt.lower():  # "WAV", "MP3"
                raise MediaError("invalid_audio_format", f"The audio is {f.format}, not {fmt} as its format says.")
            seconds = f.frames / f.samplerate
            if seconds > max_s:
                raise MediaError("audio_too_long", f"The audio is {seconds:.1f} s long; {max_s:.1f} s are left for it.")
            x = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except MediaError:
        raise
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError
        raise MediaError("invalid_audio", f"The audio is not a readable {fmt} file ({e}).") from None
    if len(x) < MIN_AUDIO_S * rate:
        raise MediaError(
            "invalid_audio", f"The audio is {len(x) / rate:.3f} s long; it must be {MIN_AUDIO_S} s or more."
        )
    return resample(x.mean(axis=1), rate, MODEL_INPUT_RATE_HZ)


def wav_bytes(pcm16: np.ndarray, rate_hz: int = MODEL_OUTPUT_RATE_HZ) -> bytes:
    """int16 mono samples -> a WAV file (PCM16)."""
    buf = io.BytesIO()
    sf.write(buf, pcm16, rate_hz, subtype="PCM_16", format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------- voice-clone reference
def read_wav_any(data: bytes, pcm_rate_hz: int | None = None) -> np.ndarray:
    """A reference clip -> float32 mono at 16 kHz, 1-30 s long.

    Args:
        data: an audio file soundfile can read (WAV of any sample width, FLAC, OGG), or raw
            PCM16 little-endian mono when `pcm_rate_hz` is given.
        pcm_rate_hz: the rate of raw PCM16 input; None means `data` is a file.
    """
    if pcm_rate_hz is not None:
        if len(data) % 2:
            raise MediaError(
                "invalid_reference_audio", f"PCM16 reference audio must be an even number of bytes, got {len(data)}."
            )
        x, rate = wire_to_float(data, "audio/pcm"), pcm_rate_hz
    else:
        try:
            x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError
            raise MediaError(
                "invalid_reference_audio",
                f"Reference audio is not a readable WAV file ({e}); send WAV, or PCM16 with a rate.",
            ) from None
        x = x.mean(axis=1)  # down-mix: the speaker encoder takes mono
    seconds = len(x) / rate
    if not MIN_REFERENCE_S <= seconds <= MAX_REFERENCE_S:
        raise MediaError(
            "invalid_reference_audio",
            f"Reference audio is {seconds:.2f} s long; it must be {MIN_REFERENCE_S:g} to {MAX_REFERENCE_S:g} s.",
        )
    return resample(x, rate, MODEL_INPUT_RATE_HZ)
