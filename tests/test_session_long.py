"""Long sessions and many sessions on the tiny-a checkpoint: the sliding window (oldest complete
turns dropped before a new user turn, system prompt kept bit-identical, positions contiguous),
`interrupt_ms` / `reply_audio_ms`, and sessions interleaved op by op."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni.model.ops import pull
from omni.model.steps import Executor
from omni.sampling import GREEDY, SamplingParams
from omni.session.engine import GenerateOptions, Session

TEXT_ONLY = GenerateOptions(sampling=GREEDY, max_new_tokens=3, generate_audio=False)


@pytest.fixture(scope="module")
def ref(tiny):
    return (0.1 * np.random.default_rng(0).standard_normal(2 * tiny.pre.sampling_rate)).astype(np.float32)


def _audio(tiny, k: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(k).standard_normal(tiny.pre.sampling_rate)).astype(np.float32)


def _layers(cache, n=None):
    return [t[:, :, :n].clone() for i in range(cache.num_layers) for t in cache.layer(i)]


def test_drop_oldest_turn_keeps_system_and_positions(tiny, ref):
    s = Session(tiny, seed=0, max_cache_tokens=10**9)
    s.set_system("omni", ref_audio=ref)
    sys_len = s.state.cache_len
    sys_kv = _layers(s.state.llm_cache, sys_len)
    for turn in range(3):
        s.append_unit(_audio(tiny, turn))
        list(s.generate(TEXT_ONLY))
    starts = list(s.state.turn_starts)
    assert starts[0] == sys_len and len(starts) == 3
    n_before, turn0 = s.state.cache_len, starts[1] - starts[0]
    s.max_cache_tokens = n_before - 1  # over budget by one: exactly the oldest turn goes
    r = s.append_unit(_audio(tiny, 9))
    assert r.cache_range[0] == n_before - turn0
    assert s.state.turn_starts[:2] == [sys_len, starts[2] - turn0]
    assert s.state.spans[0].end == sys_len and all(a.end <= b.start for a, b in zip(s.state.spans, s.state.spans[1:]))
    assert s.state.spans[-1].end == s.state.cache_len
    for old, new in zip(sys_kv, _layers(s.state.llm_cache, sys_len)):
        assert torch.equal(old, new)
    # Next prefill and generate work and continue at the new length.
    n = s.state.cache_len
    out = list(s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=6, max_speech_s=0.6)))
    assert s.state.cache_len > n and sum(len(w) for _, w in out) > 0


def test_long_session_cache_stays_bounded(tiny, ref):
    budget = 600
    s = Session(tiny, seed=0, max_cache_tokens=budget)
    s.set_system("omni", ref_audio=ref)
    audio = _audio(tiny, 1)
    lengths, sizes, turn_max = [], [], 0
    for unit in range(1800):
        if unit % 10 == 0 and unit:
            start = s.state.turn_starts[-1]
            audio_turn = unit % 300 == 0
            opts = GenerateOptions(
                sampling=GREEDY, max_new_tokens=3, generate_audio=audio_turn, max_speech_s=0.3 if audio_turn else None
            )
            list(s.generate(opts))
            turn_max = max(turn_max, s.state.cache_len - start)
        s.append_unit(audio)
        lengths.append(s.state.cache_len)
        sizes.append(s.state.llm_cache.nbytes())
    assert max(lengths) <= budget + turn_max + 1
    assert len(s.state.turn_starts) < 20
    assert max(sizes[900:]) <= max(sizes[:900])  # memory flat: no growth in the second half
    # Positions are still contiguous: a prefill of one more unit lands at cache_len.
    n = s.state.cache_len
    r = s.append_unit(audio)
    assert r.cache_range == (n, s.state.cache_len)


def test_interrupt_ms_and_reply_audio_ms(tiny, ref):
    s = Session(tiny, seed=0)
    s.set_system("omni", ref_audio=ref)
    s.append_unit(_audio(tiny, 0))
    assert s.reply_audio_ms == 0
    gen = s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=24, low_latency=True))
    _, wav = next(gen)
    rate = s.sample_rate_hz
    assert s.reply_audio_ms == pytest.approx(len(wav) * 1000 / rate)
    mark = s._reply.marks[0]
    n = s.interrupt_ms(len(wav) * 1000 / rate + 0.01)
    assert n == mark.cache_len
    with pytest.raises(ValueError):
        s.interrupt_ms(-1)


def test_interleaved_sessions_match_alone(tiny, ref):
    """Three sessions' programs interleaved one model op at a time (unit prefills of one while
    others generate) give exactly what each gives alone: sessions share no state."""
    opts = GenerateOptions(sampling=SamplingParams(), max_new_tokens=9, max_speech_s=1.2)

    def script(seed, out):  # a session's own timeline: system, 2 units, reply, unit, reply, unit
        s = Session(tiny, seed=seed)
        yield from s.system_program("omni", ref_audio=ref)
        for k in range(2):
            yield from s.unit_program(_audio(tiny, seed + k))
        for _ in range(2):
            reply = s.reply_program(opts)
            while (item := (yield from pull(reply))) is not None:
                out.append(item)
            yield from s.unit_program(_audio(tiny, 10 + seed))

    def run(seeds):
        outs = [[] for _ in seeds]
        live = {i: (script(seed, out), None) for i, (seed, out) in enumerate(zip(seeds, outs))}
        run_op = Executor.of(tiny).one
        with torch.inference_mode():
            while live:  # one op of each live session in turn
                for i, (sc, result) in list(live.items()):
                    try:
                        live[i] = (sc, run_op(sc.send(result)))
                    except StopIteration:
                        del live[i]
        return outs

    alone = [run([seed])[0] for seed in (1, 2, 3)]
    together = run([1, 2, 3])
    for a, b in zip(alone, together):
        assert [t for t, _ in a] == [t for t, _ in b]
        np.testing.assert_array_equal(np.concatenate([w for _, w in a]), np.concatenate([w for _, w in b]))
    assert all(len(np.concatenate([w for _, w in a])) for a in alone)


def test_reply_end_reason_is_reported(tiny):
    """A reply stopped by the token cap says so; the gateway reports it as `incomplete`."""
    import numpy as np
    from omni.sampling import GREEDY
    from omni.session.engine import GenerateOptions, Session

    s = Session(tiny)
    s.set_system("audio_assistant")
    s.append_unit(np.zeros(16000, np.float32))
    list(s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=3, generate_audio=False)))
    assert s.last_reply_end == ("eos" if s.state.llm_generate_completed else "max_tokens")
    list(s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=60, max_speech_s=0.3)))
    assert s.last_reply_end in ("eos", "max_speech")
    assert s.last_reply_end == "max_speech" or s.state.llm_generate_completed or s.reply_audio_ms < 300
