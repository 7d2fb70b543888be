"""Speech head: text slot arithmetic, normalisation, FSQ, ISTFT, sampling, cache, golden replay.

Pure tests first, then a small random TTS (weight norm, chunked prefill == whole, seeded sampling),
then the golden folder (`OMNI_GOLDEN_DIR`, default tests/assets/golden/tiny-a).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from omni.config import TTSConfig
from omni.golden import tts as golden_tts
from omni.golden.harness import GoldenDir, Report, format_row
from omni.model.dvae import DVAEDims, ResidualFSQ, fsq_codes, fsq_digits
from omni.model.tts import ConditionalChatTTS, GreedySampler, MultinomialSampler
from omni.model.tts_loop import crossfade
from omni.model.vocos import ISTFT, VocosDims
from omni.processing import tts_text as T

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = TTSConfig()
R = OFFICIAL.streaming_text_reserved_len
C10, A50 = OFFICIAL.streaming_text_chunk_size, OFFICIAL.streaming_audio_chunk_size


# ---- slot arithmetic and masks (pure) ----


@pytest.mark.parametrize(
    "past, visible",
    [
        (302, 10),
        (303, 10),
        (350, 10),
        (351, 20),
        (400, 20),
        (401, 30),
        (450, 30),
        (451, 40),
        (302 + 50 * 29, 300),
        (302 + 50 * 40, 300),
    ],
)
def test_visible_text_count_table(past, visible):
    assert T.visible_text_count(past, R, A50, C10) == visible


@pytest.mark.parametrize(
    "k, bounds", [(0, (0, 12)), (1, (12, 22)), (2, (22, 32)), (24, (242, 252)), (29, (292, 302)), (30, (302, 302))]
)
def test_text_chunk_bounds(k, bounds):
    assert T.text_chunk_bounds(k, C10, R) == bounds


@pytest.mark.parametrize("k, n, bounds", [(0, 5, (0, 8)), (1, 15, (12, 18)), (3, 30, (32, 33)), (3, 29, (32, 32))])
def test_final_flush_bounds(k, n, bounds):
    assert T.final_flush_bounds(k, C10, n) == bounds


def test_condition_layout():
    assert T.condition_length(R) == 303 and T.text_start_len() == 2
    assert T.offline_chunk_count(R, C10) == 31
    assert T.rollover_threshold(R) == 120
    m = T.text_mask(11, R)
    assert m.shape == (303,) and m[:14].all() and not m[14:302].any() and m[302] == 1


def test_streaming_mask_rule():
    tts = _tiny_tts()
    text = T.text_mask(25, R)
    for past, visible in [(302, 10), (351, 20), (401, 30)]:
        allowed = tts.streaming_mask(past, text)[0, 0, 0]
        assert allowed.shape == (past + 1,)
        open_text = 2 + min(visible, 25 + 1)  # [Etts] is slot 2 + 25
        assert allowed[:open_text].all() and not allowed[open_text:303].any()  # incl. [Ptts] slot 302
        assert allowed[303:].all()


# ---- text prep and normalisation ----


@pytest.fixture(scope="module")
def chattts_tokenizer(golden):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(golden.path / "assets" / "chattts_tokenizer"))


def test_prepare_tts_text_pads_and_truncates(chattts_tokenizer):
    tok = chattts_tokenizer
    etts, pad, ptts = tok.convert_tokens_to_ids([T.ETTS, T.PAD, T.PTTS])
    n = len(tok.encode("hello world", add_special_tokens=False))
    p = T.prepare_tts_text(tok, "hello world", 20)
    assert p.tokens_len == n and len(p.input_ids) == T.condition_length(20)
    assert p.input_ids[2 + n] == etts and set(p.input_ids[3 + n : -1]) == {pad} and p.input_ids[-1] == ptts
    short = T.prepare_tts_text(tok, "hello world, the voice is nice.", 4)
    assert short.tokens_len == 4 and len(short.input_ids) == T.condition_length(4)
    assert etts not in short.input_ids and short.text.endswith(T.PTTS)


def test_answer_text_cut():
    assert T.answer_to_tts_text("a<|tts_bos|>b c<|tts_eos|>d") == "b c"
    assert T.answer_to_tts_text("<point>x") == "<point>x"


@pytest.mark.parametrize(
    "text, lang, out",
    [
        ("I have 23 books", "english", "I have two three books"),
        ("我有2个苹果", "chinese", "我有二个苹果"),
        ("room 101 and 1", "english", "room one zero one and one"),
        ("**bold** 7", "english", "bold seven"),
    ],
)
def test_normalize(text, lang, out):
    assert T.normalize_tts_text(text, lang) == out


def test_language_and_sentence_end():
    assert T.detect_language("你好 ok") == "chinese" and T.detect_language("hello 你") == "english"
    assert T.sentence_end("Done. Next") == "." and T.sentence_end("no end") == ""
    assert T.sentence_end("1. item") == ""  # "." after a digit disqualifies "." (quirk)
    assert T.sentence_end("step 1. ok!") == "!" and T.sentence_end("好。") == "。"
    assert T.split_at_sentence_end("A. B. c", ".") == ("A. B.", " c")


# ---- FSQ, ISTFT, crossfade ----


@pytest.mark.parametrize(
    "idx, digits",
    [
        (0, [0, 0, 0, 0]),
        (1, [1, 0, 0, 0]),
        (5, [0, 1, 0, 0]),
        (124, [4, 4, 4, 0]),
        (312, [2, 2, 2, 2]),
        (624, [4, 4, 4, 4]),
    ],
)
def test_fsq_digits(idx, digits):
    levels = DVAEDims().levels
    assert fsq_digits(torch.tensor(idx), levels).tolist() == digits
    assert fsq_codes(torch.tensor(idx), levels).tolist() == [(d - 2) / 2 for d in digits]


def test_residual_fsq_scales_levels():
    rvq = ResidualFSQ(4, (5, 5, 5, 5))
    with torch.no_grad():
        rvq.project_out.weight.copy_(torch.eye(4))
        rvq.project_out.bias.zero_()
    out = rvq.decode(torch.tensor([[[624, 0]]]))  # level 0: +1s, level 1: -1s scaled by 4^-1
    assert torch.allclose(out, torch.full((1, 1, 4), 0.75))


def test_istft_same_padding_round_trip():
    d = VocosDims()
    frames = 12
    x = torch.randn(1, frames * d.hop_length, generator=torch.Generator().manual_seed(0))
    istft = ISTFT(d.n_fft, d.hop_length)
    pad = (d.n_fft - d.hop_length) // 2
    spec = torch.stft(
        torch.nn.functional.pad(x, (pad, pad)),
        d.n_fft,
        d.hop_length,
        window=istft.window,
        center=False,
        return_complex=True,
    )
    assert spec.shape[-1] == frames
    y = istft(spec)
    assert y.shape == (1, frames * d.hop_length)
    assert torch.allclose(y, x, atol=1e-5)


def test_crossfade_keeps_constant_signal():
    emit, held = crossfade(torch.ones(4096), torch.ones(6144), 2048)
    assert emit.shape == (4096,) and held.shape == (6144 - 2048,)
    assert torch.allclose(emit, torch.ones(4096)) and torch.allclose(held, torch.ones(4096))


# ---- a small random TTS ----


def _tiny_tts(seed: int = 0) -> ConditionalChatTTS:
    torch.manual_seed(seed)
    cfg = dataclasses.replace(
        OFFICIAL,
        llm_dim=32,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        num_text_tokens=40,
        spk_emb_token_id=36,
        audio_bos_token_id=37,
        text_eos_token_id=38,
    )
    return ConditionalChatTTS(cfg).eval()


def test_weight_norm_effective_weight():
    tts = _tiny_tts()
    head = tts.head_code[1]
    assert "head_code.1.parametrizations.weight.original0" in tts.state_dict()
    with torch.no_grad():
        head.parametrizations.weight.original0.mul_(3.0)
    g, v = head.parametrizations.weight.original0, head.parametrizations.weight.original1
    assert torch.allclose(head.weight, g * v / v.norm(dim=1, keepdim=True), atol=1e-6)


def test_chunked_prefill_equals_whole():
    tts = _tiny_tts()
    ids = torch.randint(0, 30, (1, 22))
    ids[0, 1] = tts.cfg.spk_emb_token_id
    spk = torch.randn(1, tts.cfg.llm_dim)
    whole, parts = tts.new_state(), tts.new_state()
    tts.prefill_text(whole, ids, 0, 22, spk)
    tts.prefill_text(parts, ids[:, :12], 0, 12, spk)
    tts.prefill_text(parts, ids[:, 12:], 12, 22)
    assert torch.allclose(whole.cache.layer(1)[0], parts.cache.layer(1)[0], atol=1e-5)


def test_top_p_top_k_keep_three():
    from omni.sampling import top_k_top_p

    logits = torch.tensor([[10.0, 0.0, -1.0, -2.0, -3.0]])
    assert torch.isfinite(top_k_top_p(logits, 1, 0.7, min_keep=3)).sum() == 3


def test_sampler_determinism():
    tts = _tiny_tts()

    def run(sampler):
        st = tts.new_state(T.text_mask(5, R))
        ids = torch.randint(0, 30, (1, 8), generator=torch.Generator().manual_seed(1))
        ids[0, 1] = tts.cfg.spk_emb_token_id
        tts.prefill_text(st, ids, 0, 8, torch.ones(1, tts.cfg.llm_dim))
        return tts.generate(st, 12, (0.1, 0.3, 0.1, 0.3), sampler)[0]

    a = run(MultinomialSampler(torch.Generator().manual_seed(7)))
    b = run(MultinomialSampler(torch.Generator().manual_seed(7)))
    assert a.shape == (1, 12, 4) and torch.equal(a, b)
    assert torch.equal(run(GreedySampler()), run(GreedySampler()))
    assert (a < tts.cfg.eos_code).all()  # EOS is masked for the first 10 steps, and never kept in codes


# ---- golden replay ----


@pytest.fixture(scope="module")
def golden():
    env = os.environ.get("OMNI_GOLDEN_DIR")
    path = Path(env) if env else REPO / "tests/assets/golden/tiny-a"
    if not env and not (path / "cases.json").is_file():
        pytest.fail(f"no golden folder at {path}; set OMNI_GOLDEN_DIR")
    return GoldenDir(path)


def test_golden_tts(golden):
    tts, vocos, tok = golden_tts.load_speech(golden.checkpoint_dir())
    report = Report()
    golden_tts.check_decode(golden, tts, vocos, tok, report)
    golden_tts.check_voice_clone_tts(golden, tts, vocos, tok, report)
    failed = [format_row(r) for r in report.rows if not r.passed]
    assert report.passed, "\n".join(failed)


def test_final_flush_is_clamped_to_the_text_slots():
    from omni.processing.tts_text import final_flush_bounds

    assert final_flush_bounds(3, 10, 45) == (32, 48)
    assert final_flush_bounds(3, 10, 45, 1, 300) == (32, 48)
    assert final_flush_bounds(29, 10, 300, 1, 300) == (292, 302)  # truncated text: no [Etts], no [Ptts]
    assert final_flush_bounds(30, 10, 300, 1, 300) == (302, 302)  # nothing left: empty
