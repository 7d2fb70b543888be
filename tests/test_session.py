"""Streaming session engine on the tiny-a golden checkpoint: parity, shapes, chunked == whole,
earlier cache never changes, turn prefixes, barge-in rollback, independent interleaved sessions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omni.golden.harness import GoldenDir, Report
from omni.processing import prompt as P
from omni.processing.audio import audio_tokens
from omni.sampling import GREEDY, SamplingParams
from omni.session.engine import GenerateOptions, Session


@pytest.fixture(scope="module")
def g(golden_dir):
    return GoldenDir(golden_dir)


@pytest.fixture(scope="module")
def media(g):
    inputs, want = g.case("inputs"), g.case("streaming")
    n = g.cases["streaming"]["prefill_calls"] - 1
    frames = [Image.open(g.path / f"frame{k}.png").convert("RGB") for k in range(n)]
    audio = [want[f"input.audio_chunk.{k}"].numpy() for k in range(n)]
    return inputs["ref_voice_16k"].numpy(), frames, audio


def _started(m, media) -> Session:
    s = Session(m, seed=0)
    s.set_system("omni", ref_audio=media[0])
    return s


def test_streaming_golden(tiny, g):
    from omni.golden import streaming

    report = Report()
    streaming.check(g, tiny, report)
    bad = [r for r in report.rows if not r.passed]
    assert not bad, bad[:5]
    assert len(report.rows) > 300


def test_unit_token_counts(tiny, media):
    cfg = tiny.config
    audio_group = audio_tokens(len(media[2][0]), cfg.audio_pool_step) + 2  # + <|audio_start|>/<|audio_end|>
    image_group = cfg.query_num + 2  # + <image>/</image>
    s = _started(tiny, media)
    s.append_unit(media[2][0], media[1][0])  # first unit also opens the user turn
    n = s.state.cache_len
    r = s.append_unit(media[2][1], media[1][1])
    assert s.state.cache_len - n == 1 + image_group + audio_group  # <unit> + frame + audio
    assert r.inputs_embeds.shape == (1, 1 + image_group + audio_group, cfg.hidden_size)
    n = s.state.cache_len
    s.append_unit(media[2][2])
    assert s.state.cache_len - n == audio_group


def test_chunked_equals_whole_and_prefix_stable(tiny, media):
    a = _started(tiny, media)
    sys_len = a.state.cache_len
    records, snapshots = [], []
    for frame, audio in zip(media[1], media[2]):
        records.append(a.append_unit(audio, frame))
        snapshots.append([t.clone() for li in range(a.state.llm_cache.num_layers) for t in a.state.llm_cache.layer(li)])
    # Earlier cache entries are bit-identical after later units.
    for snap in snapshots:
        n = snap[0].shape[2]
        now = [t for li in range(a.state.llm_cache.num_layers) for t in a.state.llm_cache.layer(li)]
        for old, new in zip(snap, now):
            assert torch.equal(old, new[:, :, :n])
    # The same embeddings prefilled in one call give the same cache.
    b = _started(tiny, media)
    with torch.inference_mode():
        tiny.net.llm.model(torch.cat([r.inputs_embeds for r in records], 1), cache=b.state.llm_cache)
    assert b.state.cache_len == a.state.cache_len > sys_len
    for li in range(a.state.llm_cache.num_layers):
        for x, y in zip(a.state.llm_cache.layer(li), b.state.llm_cache.layer(li)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_turn_prefixes(tiny, media):
    s = _started(tiny, media)
    assert s.append_unit(media[2][0]).text.startswith(P.USER_OPEN)
    assert not s.append_unit(media[2][1]).text.startswith(P.USER_OPEN)  # raw continuation
    texts = [t for t, _ in s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=6, generate_audio=False))]
    assert len(texts) == 2 and not s.state.llm_generate_completed  # no EOS within 6 tokens
    assert s.append_unit(media[2][2]).text.startswith(P.AFTER_INTERRUPTED)
    # A reply that reached EOS closes with <|im_end|> only.
    s.state.llm_generated, s.state.llm_generate_completed, s.state.new_user_msg = True, True, True
    assert s.append_unit(media[2][0]).text.startswith(P.AFTER_COMPLETED)


def test_interrupt_rolls_back_to_played_text(tiny, media):
    s = _started(tiny, media)
    for frame, audio in zip(media[1], media[2]):
        s.append_unit(audio, frame)
    start = s.state.cache_len
    gen = s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=24, low_latency=True))
    first_text, first_wav = next(gen)
    next(gen)
    mark = s._reply.marks[0]
    assert mark.samples_end == len(first_wav)
    n = s.interrupt(played_samples=len(first_wav))
    assert n == s.state.cache_len == mark.cache_len > start
    assert s.state.spans[-1].kind == "reply" and s.state.spans[-1].end == n
    r = s.append_unit(media[2][0])
    assert r.text.startswith(P.AFTER_INTERRUPTED)
    assert r.cache_range == (n, n + r.input_ids.shape[1])
    # Nothing played: only the generate prefix stays.
    s2 = _started(tiny, media)
    s2.append_unit(media[2][0], media[1][0])
    before = s2.state.cache_len
    gen = s2.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=24))
    next(gen)
    prefix_len = len(tiny.tokenizer.encode(P.GENERATE_PREFIX, add_special_tokens=False))
    assert s2.interrupt(0) == before + prefix_len


def test_low_latency_same_audio_one_step_sooner(tiny, media):
    outs = []
    for low in (False, True):
        s = _started(tiny, media)
        s.append_unit(media[2][0], media[1][0])
        pieces = list(
            s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=12, max_speech_s=2.0, low_latency=low))
        )
        outs.append(pieces)
    slow, fast = outs
    assert len(fast) == len(slow) + 1 and len(fast[0][1]) > 0
    # Same samples up to the rounding of w·x/w in the official crossfade.
    np.testing.assert_allclose(np.concatenate([w for _, w in slow]), np.concatenate([w for _, w in fast]), atol=1e-6)
    assert "".join(t for t, _ in slow) == "".join(t for t, _ in fast)
    # Every step, not only the first, hands out its chunk at once: after TTS step k the fast reply
    # has all of step k's audio but the 2048-sample overlap, the official only step k-1's.
    overlap = 2048
    step_samples = 25 * 2 * tiny.vocos.dims.hop_length
    cum_fast = np.cumsum([len(w) for _, w in fast])
    cum_slow = np.cumsum([len(w) for _, w in slow])
    assert len(slow) >= 3
    assert cum_fast[0] == step_samples - overlap and cum_fast[1] - cum_slow[0] == step_samples - overlap
    assert all(cum_fast[k + 1] > cum_slow[k] for k in range(len(slow) - 1))  # ahead until the tail
    assert len(fast[-1][1]) == overlap  # all that is ever held back: the crossfade overlap
    rate = tiny.vocos.dims.sample_rate_hz
    assert sum(len(w) for _, w in slow) < 3.0 * rate  # the 2 s limit stops drawing frames


def test_interleaved_sessions_match_alone(tiny, media):
    opts = GenerateOptions(sampling=SamplingParams(), max_new_tokens=9, max_speech_s=1.5)

    def make(seed, k):
        s = Session(tiny, seed=seed)
        s.set_system("omni", ref_audio=media[0])
        s.append_unit(media[2][k], media[1][k])
        return s

    alone = [list(make(seed, k).generate(opts)) for seed, k in ((1, 0), (2, 1), (3, 2))]
    sessions = [make(seed, k) for seed, k in ((1, 0), (2, 1), (3, 2))]
    gens = [s.generate(opts) for s in sessions]
    got = [[], [], []]
    live = [0, 1, 2]
    while live:
        for i in list(live):
            try:
                got[i].append(next(gens[i]))
            except StopIteration:
                live.remove(i)
    for a, b in zip(alone, got):
        assert [t for t, _ in a] == [t for t, _ in b]
        np.testing.assert_array_equal(np.concatenate([w for _, w in a]), np.concatenate([w for _, w in b]))


def test_sampling_generator_lives_on_the_model_device(tiny):
    """torch.multinomial needs a generator on the logits' device (a CPU one fails on CUDA)."""
    s = Session(tiny, seed=1)
    assert s.state.generator.device == torch.device(tiny.device)
    s.seed = None
    s.reset()
    assert s.state.generator.device == torch.device(tiny.device)


def test_a_long_prefill_in_chunks_equals_it_whole_and_long_items_are_refused(tiny, media):
    """Prefill runs its LLM forward in chunks (bounded memory): the cache and the reply are those
    of one whole forward; a message over the caller's token limit is refused before any op."""
    from omni.session.engine import InputTooLong

    text = " ".join(f"word{i}" for i in range(300))
    runs = []
    for chunk in (10_000, 37):
        s = Session(tiny, seed=5)
        s.prefill_chunk_tokens = chunk
        s.set_system("omni", None, "Be brief.")
        rec = s.prefill({"role": "user", "content": [text]})
        assert rec.input_ids.shape[1] > 37 * 3
        reply = list(s.generate(GenerateOptions(sampling=GREEDY, max_new_tokens=6, generate_audio=False)))
        runs.append((s.state.llm_cache, rec.last_hidden, "".join(t for t, _ in reply)))
    (whole, h1, r1), (chunked, h2, r2) = runs
    assert whole.seq_len == chunked.seq_len and r1 == r2
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)
    for i in range(whole.num_layers):
        for x, y in zip(whole.layer(i), chunked.layer(i)):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    s = Session(tiny, seed=5)
    s.set_system("omni", None, "Be brief.")
    before = s.state.cache_len
    with pytest.raises(InputTooLong, match="limit is 50"):
        s.prefill_program({"role": "user", "content": [text]}, max_tokens=50)
    assert s.state.cache_len == before


def test_a_text_too_long_by_its_bytes_alone_is_refused_without_tokenizing(tiny):
    """3 MB of text for a 50-token limit: refused by its length (fewest_tokens), the tokenizer
    never runs over it; a text near the limit is still tokenized and judged exactly."""
    from omni.session.engine import InputTooLong

    s = Session(tiny, seed=5)
    s.set_system("omni", None, "Be brief.")
    calls = []
    real = tiny.tokenizer.encode
    tiny.tokenizer.encode = lambda text, **kw: calls.append(len(text)) or real(text, **kw)
    try:
        with pytest.raises(InputTooLong, match="at least .* limit is 50"):
            s.prefill_program({"role": "user", "content": ["x" * 3_000_000]}, max_tokens=50)
        assert calls == []
        with pytest.raises(InputTooLong, match="the item is \\d+ tokens long; the limit is 50"):
            s.prefill_program({"role": "user", "content": [" ".join(f"w{i}" for i in range(60))]}, max_tokens=50)
        assert len(calls) == 1
    finally:
        tiny.tokenizer.encode = real


@pytest.mark.parametrize(
    "text",
    ["plain ascii words", " " * 500, "=" * 300, "中文字符" * 40, "e\u0301" * 50, "\u0958\u2126" * 30, "🙂" * 20, ""],
)
def test_fewest_tokens_never_exceeds_the_real_count(tiny, text):
    from omni.processing.tokens import fewest_tokens

    assert fewest_tokens(text, tiny.tokenizer) <= len(tiny.tokenizer.encode(text, add_special_tokens=False))
