"""streaming.turn: the pure detector (scripted probabilities), the TDM chunker and prefix buffer
(chunked == whole, earlier output never changes, fake clock), then the real Silero model."""

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from streaming.turn import (
    FRAME_MS,
    SAMPLE_RATE_HZ,
    UNIT_SAMPLES,
    PrefixBuffer,
    ServerVadConfig,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    UnitChunker,
)

# --------------------------------------------------------------------------- detector tables

H, M, L = 0.9, 0.4, 0.1  # loud, hysteresis band (0.35 <= p < 0.5), quiet for the default thresholds


def run(probs, t0_ms=0, **cfg):
    """[(frame index at which the event fired, event)] for probabilities on back-to-back frames."""
    det = TurnDetector(ServerVadConfig(**cfg))
    return [(i, ev) for i, p in enumerate(probs) for ev in det.step(p, t0_ms + i * FRAME_MS)]


# min speech 250 ms = 8 frames (256 ms); silence 500 ms = 16 frames (512 ms)
CASES = {
    "start after min speech": ([L] * 10 + [H] * 8, {}, [(17, SpeechStarted(audio_start_ms=20, speech_start_ms=320))]),
    "one frame short of min speech": ([L] * 10 + [H] * 7 + [L] * 20, {}, []),
    "cough ignored": ([L] * 5 + [H] * 5 + [L] * 30, {}, []),
    "two coughs split by a quiet frame": ([H] * 5 + [L] + [H] * 5 + [L] * 20, {}, []),
    "hysteresis band sustains a started run": ([H] + [M] * 7, {}, [(7, SpeechStarted(0, 0))]),
    "hysteresis band alone starts nothing": ([M] * 40, {}, []),
    "stop after silence_duration": (
        [H] * 10 + [L] * 16,
        {},
        [(7, SpeechStarted(0, 0)), (25, SpeechStopped(audio_end_ms=832, speech_end_ms=320))],
    ),
    "hysteresis band never ends speech": ([H] * 10 + [M] * 40, {}, [(7, SpeechStarted(0, 0))]),
    "band frame neither starts nor cancels the silence": (
        [H] * 10 + [L] * 8 + [M] * 4 + [L] * 4,
        {},
        [(7, SpeechStarted(0, 0)), (25, SpeechStopped(832, 320))],
    ),
    "loud frame cancels the silence": (
        [H] * 10 + [L] * 15 + [H] + [L] * 16,
        {},
        [(7, SpeechStarted(0, 0)), (41, SpeechStopped(1344, 832))],
    ),
    "prefix padding clamps at 0": ([L] * 3 + [H] * 8, {}, [(10, SpeechStarted(0, 96))]),
    "no prefix padding": ([L] * 20 + [H] * 8, {"prefix_padding_ms": 0}, [(27, SpeechStarted(640, 640))]),
    "padding stops at the previous turn's end": (
        [H] * 8 + [L] * 16 + [L] * 2 + [H] * 8,
        {},
        [(7, SpeechStarted(0, 0)), (23, SpeechStopped(768, 256)), (33, SpeechStarted(768, 832))],
    ),
    "custom threshold and durations": (
        [0.75] * 3 + [0.8] * 4 + [0.6] * 3,
        {"threshold": 0.8, "end_threshold_delta": 0.1, "min_speech_duration_ms": 64, "silence_duration_ms": 96},
        [(4, SpeechStarted(0, 96)), (9, SpeechStopped(320, 224))],
    ),
    "zero min speech starts on the first loud frame": (
        [L, H],
        {"min_speech_duration_ms": 0, "prefix_padding_ms": 10},
        [(1, SpeechStarted(22, 32))],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_detector_table(name):
    probs, cfg, want = CASES[name]
    assert run(probs, **cfg) == want


def test_events_carry_stream_time_offset():
    # same script as "stop after silence_duration", starting 10 s into the stream
    evs = [ev for _, ev in run([L] * 4 + [H] * 10 + [L] * 16, t0_ms=10_000)]
    assert evs == [SpeechStarted(10_128 - 300, 10_128), SpeechStopped(10_448 + 512, 10_448)]


def test_detector_reset_and_validation():
    det = TurnDetector()
    for i in range(8):
        det.step(H, i * FRAME_MS)
    assert det.state.speaking
    det.reset(floor_ms=5000)
    assert [det.step(H, 5000 + i * FRAME_MS) for i in range(8)][-1] == [SpeechStarted(5000, 5000)]
    with pytest.raises(AssertionError, match="overlaps"):
        det.step(H, 5000)
    for bad in ({"threshold": 1.5}, {"silence_duration_ms": -1}, {"end_threshold_delta": -0.1}):
        with pytest.raises(ValueError):
            ServerVadConfig(**bad)
    # Every threshold the protocol accepts ([0, 1]) is valid; speech ends at >= 0.
    assert ServerVadConfig(threshold=0.1).end_threshold == 0.0 and ServerVadConfig(threshold=1.0).end_threshold == 0.85
    assert ServerVadConfig().lookback_ms == 300 + 250 + 64


# --------------------------------------------------------------------------- chunker


class FakeClock:
    def __init__(self):
        self.now_s = 100.0

    def __call__(self):
        return self.now_s


def _audio(seconds, seed=0):
    return np.random.default_rng(seed).standard_normal(int(seconds * SAMPLE_RATE_HZ)).astype(np.float32)


def _frames(n):
    return [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(n)]


def _chunk_all(audio, splits, frames_at, video=True):
    ch = UnitChunker(clock_s=FakeClock(), video=video, start_ms=500)
    for img, t in frames_at:
        ch.push_frame(img, t_ms=t)
    units = [u for part in np.split(audio, splits) for u in ch.push_audio(part)]
    tail = ch.flush()
    return units + ([tail] if tail is not None else [])


def test_chunker_one_step_shapes():
    ch = UnitChunker(clock_s=FakeClock())
    (u,) = ch.push_audio(_audio(1.25))
    assert u.audio_16k.shape == (UNIT_SAMPLES,) == (16000,) and u.audio_16k.dtype == np.float32
    assert (u.index, u.start_ms, u.end_ms, u.frame, u.is_partial) == (0, 0, 1000, None, False)
    assert ch.push_audio(np.zeros(0, np.float32)) == [] and ch.audio_end_ms == 1250
    tail = ch.flush()
    assert tail.audio_16k.shape == (4000,) and (tail.index, tail.start_ms, tail.is_partial) == (1, 1000, True)
    assert ch.flush() is None


@pytest.mark.parametrize("seed", range(5))
def test_chunker_chunked_equals_whole(seed):
    audio = _audio(3.7, seed)
    imgs = _frames(4)
    frames_at = [(imgs[0], 400), (imgs[1], 1400), (imgs[2], 1500), (imgs[3], 3100)]  # stream ms
    rng = np.random.default_rng(seed)
    splits = np.sort(np.concatenate([rng.integers(0, len(audio), 12), [0, 1, 16000, 16001, 16001]]))
    whole = _chunk_all(audio, [], frames_at)
    chunked = _chunk_all(audio, splits, frames_at)
    assert len(whole) == len(chunked) == 4
    for a, b in zip(whole, chunked):
        assert np.array_equal(a.audio_16k, b.audio_16k)
        assert (a.start_ms, a.index, a.frame) == (b.start_ms, b.index, b.frame)
    # start 500: units end 1500, 2500, 3500, 4200 -> latest frame at or before each end (ties: <=)
    assert [u.frame for u in whole] == [imgs[2], imgs[2], imgs[3], imgs[3]]
    assert [u.start_ms for u in whole] == [500, 1500, 2500, 3500]
    assert np.array_equal(np.concatenate([u.audio_16k for u in whole]), audio)


def test_chunker_earlier_output_never_changes():
    ch = UnitChunker(clock_s=FakeClock())
    img = _frames(3)
    out, snapshots = [], []
    for k, part in enumerate(np.array_split(_audio(5.3), 23)):
        ch.push_frame(img[k % 3], t_ms=k * 230)
        for u in ch.push_audio(part):
            out.append(u)
            snapshots.append((u.audio_16k.copy(), u.frame, u.start_ms, u.index))
    out.append(ch.flush())
    snapshots.append((out[-1].audio_16k.copy(), out[-1].frame, out[-1].start_ms, out[-1].index))
    ch.push_audio(_audio(2.0, seed=9))  # keep using the chunker after the fact
    for u, (audio, frame, start, index) in zip(out, snapshots):
        assert np.array_equal(u.audio_16k, audio) and (u.frame, u.start_ms, u.index) == (frame, start, index)
    assert [u.index for u in out] == list(range(6))


def test_chunker_frames_with_fake_clock():
    clock = FakeClock()
    ch = UnitChunker(clock_s=clock)
    a, b, c, d = _frames(4)
    ch.push_audio(_audio(0.5))
    clock.now_s += 0.05
    ch.push_frame(a)  # stamped 500 + 50 ms
    clock.now_s += 0.05
    ch.push_frame(b, t_ms=1001)  # after unit 0's end
    (u0,) = ch.push_audio(_audio(0.6))
    assert u0.frame is a
    clock.now_s += 10.0  # the mic stalls: the lead is capped at 200 ms
    ch.push_frame(c)  # stamped 1100 + 200 = 1300
    (u1,) = ch.push_audio(_audio(1.0))
    assert u1.frame is c  # latest at or before 2000: c (1300) beats b (1001)
    (u2,) = ch.push_audio(_audio(1.0))
    assert u2.frame is c  # no newer frame: the last one is reused
    ch.video = False
    ch.push_frame(d, t_ms=3000)
    (u3,) = ch.push_audio(_audio(1.0))
    assert u3.frame is None
    ch.video = True  # frames held before "off" are forgotten
    assert ch.push_audio(_audio(1.0))[0].frame is None


def test_chunker_video_off_and_no_frame_yet():
    ch = UnitChunker(clock_s=FakeClock(), video=False)
    ch.push_frame(_frames(1)[0], t_ms=0)
    assert all(u.frame is None for u in ch.push_audio(_audio(2.0)))
    ch2 = UnitChunker(clock_s=FakeClock())
    ch2.push_frame(_frames(1)[0], t_ms=1500)
    assert [u.frame is None for u in ch2.push_audio(_audio(2.0))] == [True, False]


def test_chunker_flush_and_reset():
    ch = UnitChunker(clock_s=FakeClock())
    assert ch.flush() is None  # nothing buffered
    ch.push_audio(_audio(0.099))
    assert ch.flush() is None  # < 100 ms: dropped
    ch.push_audio(_audio(0.1))
    tail = ch.flush()
    assert len(tail.audio_16k) == 1600 and tail.start_ms == 99 and tail.index == 0
    img = _frames(1)[0]
    ch.push_frame(img, t_ms=150)
    ch.reset(start_ms=2000)  # frames survive a reset, audio and index do not
    (u,) = ch.push_audio(_audio(1.0))
    assert (u.index, u.start_ms, u.frame) == (0, 2000, img)


def test_rates_match_the_model_front_end():
    from omni.processing.audio import SAMPLE_RATE_HZ as MODEL_RATE, TOKENS_PER_S, audio_tokens

    assert SAMPLE_RATE_HZ == MODEL_RATE and audio_tokens(UNIT_SAMPLES) == TOKENS_PER_S
    assert audio_tokens(UnitChunker(clock_s=FakeClock()).min_tail_samples) >= 1  # a kept tail has tokens


def test_prefix_buffer_ring():
    audio = _audio(2.0)
    pb = PrefixBuffer(capacity_ms=700, start_ms=1000)
    for part in np.array_split(audio, 37):
        pb.push(part)
    assert (pb.end_ms, pb.oldest_ms) == (3000, 2300)
    np.testing.assert_array_equal(pb.read(2500), audio[1500 * 16 :])
    np.testing.assert_array_equal(pb.read(2500, 2600), audio[1500 * 16 : 1600 * 16])
    np.testing.assert_array_equal(pb.read(0), audio[1300 * 16 :])  # clamped to what is held
    assert len(pb.read(3000)) == 0 and len(pb.read(2600, 2500)) == 0
    pb.push(audio)  # one push longer than the ring
    np.testing.assert_array_equal(pb.read(0), audio[-700 * 16 :])
    assert pb.end_ms == 5000


# --------------------------------------------------------------------------- real Silero model


@pytest.fixture(scope="module")
def silero():
    from streaming.turn import SileroVAD

    return SileroVAD()


def test_silero_one_utterance(silero, golden_dir):
    speech, sr = sf.read(golden_dir / "speech_16k.wav", dtype="float32")
    assert sr == SAMPLE_RATE_HZ
    audio = np.concatenate([np.zeros(16000, np.float32), speech, np.zeros(24000, np.float32)])
    true_start_ms, true_end_ms = 1000, 1000 + len(speech) / 16
    state, det, events = silero.new_state(), TurnDetector(), []
    for part in np.array_split(audio, len(audio) // 320):  # ~20 ms pieces, never 512-aligned
        for t_ms, p in silero.push(state, part):
            events += det.step(p, t_ms)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped], events
    start, stop = events
    assert abs(start.speech_start_ms - true_start_ms) <= 300 and start.audio_start_ms == start.speech_start_ms - 300
    assert abs(stop.speech_end_ms - true_end_ms) <= 300 and stop.audio_end_ms >= stop.speech_end_ms + 500


def _probs(silero, audio, pieces):
    state = silero.new_state()
    return [p for part in np.array_split(audio, pieces) for _, p in silero.push(state, part)]


def test_silero_matches_wrapper_and_chunking(silero, golden_dir):
    import torch

    speech, _ = sf.read(golden_dir / "speech_16k.wav", dtype="float32")
    speech = speech[: 40 * 512 + 100]
    from streaming.turn.vad import load_silero_jit

    wrapper = load_silero_jit()  # the public stateful TorchScript path our ONNX path must reproduce
    wrapper.reset_states()
    with torch.inference_mode():
        jit = [wrapper(torch.from_numpy(speech[k * 512 : (k + 1) * 512]), 16000).item() for k in range(40)]
    ref = _probs(silero, speech, 1)  # remainder held back
    assert len(ref) == 40 and np.allclose(ref, jit, atol=1e-4), max(abs(a - b) for a, b in zip(ref, jit))
    assert _probs(silero, speech, 77) == ref  # any split gives the same frames
    results = [None] * 4  # shared model, concurrent streams
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, _probs(silero, speech, 13 + i))) for i in range(4)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(r == ref for r in results)


def test_loading_silero_keeps_thread_count():
    code = (
        "import torch; torch.set_num_threads(3); from streaming.turn import SileroVAD; SileroVAD(); "
        "print(torch.get_num_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "3"


@pytest.mark.parametrize("start_manual", [False, True])
def test_listener_reconfigured_mid_stream_keeps_one_clock(silero, golden_dir, start_manual):
    """Turn detection changed after a turn (or switched on after manual audio): the second turn's
    units are that utterance only, at its true stream time (no audio repeated or shifted)."""
    from streaming.session.listen import Listener, UnitReady

    speech, _ = sf.read(golden_dir / "speech_16k.wav", dtype="float32")
    gap = np.zeros(32000, np.float32)
    one = np.concatenate([gap[:16000], speech, gap])
    listener = Listener(silero, None if start_manual else ServerVadConfig(), video=False)

    def feed(audio):
        out = []
        for part in np.array_split(audio, len(audio) // 1600):  # 100-ms pushes
            out += listener.push_audio(part)
        return out

    first = feed(one)
    if start_manual:
        listener.commit()
    listener.configure(ServerVadConfig(silence_duration_ms=600), video=False)
    second = feed(one)
    starts = [e for e in second if isinstance(e, SpeechStarted)]
    assert len(starts) == 1 and abs(starts[0].speech_start_ms - (len(one) / 16 + 1000)) <= 300, starts
    units_s = sum(len(e.unit.audio_16k) for e in second if isinstance(e, UnitReady)) / 16000
    stop = next(e for e in second if isinstance(e, SpeechStopped))
    assert abs(units_s - (stop.audio_end_ms - starts[0].audio_start_ms) / 1000) < 0.05, units_s
    assert units_s < len(speech) / 16000 + 1.5  # the utterance, its padding and tail
    if not start_manual:
        assert sum(isinstance(e, SpeechStarted) for e in first) == 1
