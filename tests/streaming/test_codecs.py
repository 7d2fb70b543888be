"""Wire media: resampling keeps length and pitch, streaming == one shot, G.711 matches the ITU-T
tables, and bad images / reference clips fail with MediaError."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from streaming.gateway import codecs as C
from streaming.errors import MediaError


def sine(freq_hz: float, rate_hz: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amp * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate_hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate_hz / len(x))


def pcm16_b64(x: np.ndarray) -> str:
    return base64.b64encode(C.float_to_pcm16(x).astype("<i2").tobytes()).decode()


# ---------------------------------------------------------------- PCM16 and resampling
def test_pcm16_24k_to_16k_keeps_length_and_pitch() -> None:
    y = C.decode_input_audio(pcm16_b64(sine(1000, 24_000, 1.0)), "audio/pcm")
    assert y.dtype == np.float32 and len(y) == 16_000
    assert abs(peak_hz(y, 16_000) - 1000) <= 2
    assert abs(np.abs(y[2000:-2000]).max() - 0.5) < 0.01  # no gain change


def test_odd_pcm16_byte_count_and_bad_base64_are_media_errors() -> None:
    with pytest.raises(MediaError, match="even number of bytes"):
        C.decode_input_audio(b"\x00\x01\x02", "audio/pcm")
    with pytest.raises(MediaError, match="base64"):
        C.decode_input_audio("%%%", "audio/pcm")
    with pytest.raises(MediaError, match="Unsupported audio format"):
        C.decode_input_audio(b"\x00\x00", "audio/opus")


def test_stream_resampler_chunked_equals_whole_and_never_drifts() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(24_000 * 20).astype(np.float32) * 0.1
    whole = C.resample(x, 24_000, 16_000)
    stream, outs, i = C.StreamResampler(24_000, 16_000), [], 0
    while i < len(x):
        n = int(rng.integers(1, 3000))
        outs.append(stream.push(x[i : i + n]))
        i += n
        lag = stream.samples_in * 2 / 3 - stream.samples_out
        assert -1 <= lag <= 1000, f"output lags by {lag} samples after {i} input samples"
    outs.append(stream.flush())
    chunked = np.concatenate(outs)
    assert abs(len(chunked) - len(whole)) <= 2 and abs(len(chunked) - 320_000) <= 2
    n = min(len(chunked), len(whole))
    np.testing.assert_allclose(chunked[:n], whole[:n], atol=1e-4)


def test_input_stream_matches_one_shot_for_g711() -> None:
    x = C.float_to_pcm16(sine(440, 8_000, 2.0))
    wire = C.ulaw_encode(x)
    stream = C.InputAudioStream("audio/pcmu")
    out = np.concatenate([stream.push(wire[i : i + 160]) for i in range(0, len(wire), 160)] + [stream.flush()])
    whole = C.decode_input_audio(base64.b64encode(wire).decode(), "audio/pcmu")
    assert abs(len(out) - 32_000) <= 2 and abs(len(whole) - 32_000) <= 2
    assert abs(peak_hz(out, 16_000) - 440) <= 2


# ---------------------------------------------------------------- G.711
def test_g711_known_table_values() -> None:
    # ITU-T G.711 / Sun g711.c reference values.
    assert C.ULAW_TO_PCM16[0xFF] == 0 and C.ULAW_TO_PCM16[0x7F] == 0
    assert C.ULAW_TO_PCM16[0x00] == -32124 and C.ULAW_TO_PCM16[0x80] == 32124
    assert C.ULAW_TO_PCM16[0xF0] == 120 and C.ULAW_TO_PCM16[0x70] == -120
    assert C.ALAW_TO_PCM16[0xD5] == 8 and C.ALAW_TO_PCM16[0x55] == -8
    assert C.ALAW_TO_PCM16[0xAA] == 32256 and C.ALAW_TO_PCM16[0x2A] == -32256
    assert C.ulaw_encode(np.array([0, 32767, -32768], np.int16)) == b"\xff\x80\x00"
    assert C.alaw_encode(np.array([0, 32767, -32768], np.int16)) == b"\xd5\xaa\x2a"


def test_g711_codes_round_trip_exactly() -> None:
    codes = np.arange(256, dtype=np.uint8)
    ulaw = np.frombuffer(C.ulaw_encode(C.ULAW_TO_PCM16[codes]), np.uint8)
    assert np.array_equal(ulaw[codes != 0x7F], codes[codes != 0x7F])  # 0x7F is "-0" -> 0xFF
    alaw = np.frombuffer(C.alaw_encode(C.ALAW_TO_PCM16[codes]), np.uint8)
    assert np.array_equal(alaw, codes)


@pytest.mark.parametrize("encode,table", [(C.ulaw_encode, C.ULAW_TO_PCM16), (C.alaw_encode, C.ALAW_TO_PCM16)])
def test_g711_samples_round_trip_within_half_a_step(encode, table) -> None:
    x = np.arange(-32768, 32768, 7, dtype=np.int16)
    y = table[np.frombuffer(encode(x), np.uint8)].astype(np.int32)
    err = np.abs(y - x.astype(np.int32))
    # 4-bit mantissa: half a step is at most |x|/32 (plus the small-signal floor and the clip).
    bound = np.abs(x.astype(np.int32)) / 32 + 16
    bound[np.abs(x.astype(np.int32)) > 32_000] = 1024
    assert np.all(err <= bound), f"worst {err.max()} at {x[np.argmax(err - bound)]}"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_g711_matches_audioop_bit_for_bit_when_available() -> None:
    audioop = pytest.importorskip("audioop")  # stdlib up to Python 3.12, deprecated in 3.11
    codes = bytes(range(256))
    assert np.array_equal(np.frombuffer(audioop.ulaw2lin(codes, 2), "<i2"), C.ULAW_TO_PCM16)
    assert np.array_equal(np.frombuffer(audioop.alaw2lin(codes, 2), "<i2"), C.ALAW_TO_PCM16)
    x = np.arange(-32768, 32768, dtype=np.int16)
    raw = x.astype("<i2").tobytes()
    assert C.ulaw_encode(x) == audioop.lin2ulaw(raw, 2)  # every int16 value
    assert C.alaw_encode(x) == audioop.lin2alaw(raw, 2)


@pytest.mark.parametrize("fmt,bytes_per_24k_sample", [("audio/pcm", 2), ("audio/pcmu", 1 / 3), ("audio/pcma", 1 / 3)])
def test_output_audio_stream_sizes_pitch_and_chunked_equals_whole(fmt: str, bytes_per_24k_sample: float) -> None:
    wav = sine(600, 24_000, 1.0)
    whole = C.OutputAudioStream(fmt)
    data = base64.b64decode(whole.push(wav)) + base64.b64decode(whole.flush())
    assert abs(len(data) - 24_000 * bytes_per_24k_sample) <= 2
    back = C.decode_input_audio(data, fmt)
    assert abs(len(back) - 16_000) <= 2 and abs(peak_hz(back, 16_000) - 600) <= 2
    # Reply deltas of 6400 samples (odd at 8 kHz): the same bytes as one push, nothing lost at edges.
    chunked = C.OutputAudioStream(fmt)
    parts = [chunked.push(wav[i : i + 6400]) for i in range(0, len(wav), 6400)] + [chunked.flush()]
    assert b"".join(base64.b64decode(p) for p in parts) == data


# ---------------------------------------------------------------- images
def image_bytes(fmt: str, size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 200, 30) if mode == "RGB" else (10, 200, 30, 128)).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decode_image_formats(fmt: str) -> None:
    data = image_bytes(fmt)
    for form in (
        data,
        base64.b64encode(data).decode(),
        f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode(),
    ):
        img = C.decode_image(form, max_pixels=10_000)
        assert img.mode == "RGB" and img.size == (64, 48)


def test_rgba_png_becomes_rgb() -> None:
    assert C.decode_image(image_bytes("PNG", mode="RGBA"), 10_000).mode == "RGB"


@pytest.mark.parametrize(
    "data,code",
    [
        (b"definitely not an image", "invalid_image"),
        (image_bytes("JPEG")[:200], "invalid_image"),  # truncated
        ("not*base64", "invalid_image"),
        (image_bytes("GIF"), "unsupported_image_format"),
        (image_bytes("PNG", size=(200, 100)), "image_too_large"),
        (image_bytes("PNG", size=(1, 9000)), "invalid_image"),  # 9000:1: an unbounded strip of patches
    ],
)
def test_decode_image_errors(data, code: str) -> None:
    with pytest.raises(MediaError) as info:
        C.decode_image(data, max_pixels=10_000)
    assert info.value.code == code and info.value.message


# ---------------------------------------------------------------- voice-clone reference clips
def wav_bytes(x: np.ndarray, rate_hz: int, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate_hz, format="WAV", subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize(
    "rate_hz,subtype,channels",
    [(16_000, "PCM_16", 1), (44_100, "PCM_24", 2), (48_000, "FLOAT", 1), (8_000, "PCM_16", 1)],
)
def test_read_wav_any_rates_and_widths(rate_hz: int, subtype: str, channels: int) -> None:
    x = sine(300, rate_hz, 2.0)
    x = np.stack([x, x], axis=1) if channels == 2 else x
    y = C.read_wav_any(wav_bytes(x, rate_hz, subtype))
    assert y.dtype == np.float32 and y.ndim == 1 and abs(len(y) - 32_000) <= 2
    assert abs(peak_hz(y, 16_000) - 300) <= 2


def test_read_raw_pcm16_reference() -> None:
    raw = C.float_to_pcm16(sine(300, 24_000, 1.5)).astype("<i2").tobytes()
    assert abs(len(C.read_wav_any(raw, pcm_rate_hz=24_000)) - 24_000) <= 2


@pytest.mark.parametrize("seconds,words", [(0.5, "0.50 s long"), (31.0, "31.00 s long")])
def test_reference_length_limits(seconds: float, words: str) -> None:
    with pytest.raises(MediaError, match=words) as info:
        C.read_wav_any(wav_bytes(sine(300, 16_000, seconds), 16_000))
    assert "1 to 30 s" in info.value.message


def test_reference_garbage_is_a_clear_error() -> None:
    with pytest.raises(MediaError, match="not a readable WAV") as info:
        C.read_wav_any(b"RIFF....garbage")
    assert info.value.code == "invalid_reference_audio"
