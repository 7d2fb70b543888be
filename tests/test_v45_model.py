"""MiniCPM-V 4.5's model parts beyond the golden cases: the family seam, the Qwen3 flavour through
the packed ragged forward and the pool's batched decode (batched == each session alone), an
explicit head_dim that differs from hidden/heads, and the resampler's packs (one step's shapes,
groups of one == the 2-D path, several packs in one call == each alone, time ids matter)."""

import pytest
import torch

from omni.family import O26, V45, UnsupportedInput, family_of, read_config
from omni.model.pool import KVPool, SlotCache
from omni.model.rows import Row, forward_rows


def test_families_are_chosen_from_config_json():
    assert family_of({"model_type": "minicpmv", "version": 4.5}) is V45
    assert family_of({"model_type": "minicpmo", "version": 2.6}) is O26
    assert family_of({}) is O26  # configs from before the field
    with pytest.raises(ValueError, match="MiniCPM-V 4.5 \\(model_type 'minicpmv', version 4.5\\)"):
        family_of({"model_type": "minicpmv", "version": 2.6})
    with pytest.raises(UnsupportedInput, match="MiniCPM-V 4.5 has no audio input"):
        V45.require("audio")
    V45.require("video"), O26.require("speech")


def test_v45_config_has_no_audio_or_speech_towers(tiny_v45):
    c = tiny_v45.config
    assert (c.init_vision, c.init_audio, c.init_tts) == (True, False, False)
    assert not hasattr(tiny_v45.net, "apm") and not hasattr(tiny_v45.net, "tts") and tiny_v45.vocos is None
    assert tiny_v45.ids.spk == -1 and tiny_v45.ids.image_start > 0  # absent tokens match no id


@torch.inference_mode()
def test_qwen3_rows_batched_equal_each_session_alone(tiny_v45):
    """Three sessions: prefills of different lengths in one ragged forward, then decode steps of all
    three in one batched pool attention, then a mixed step (a prefill beside two decodes); each
    session's hidden states equal those of `DecoderModel.forward` on its own cache."""
    c, llm = tiny_v45.config, tiny_v45.net.llm
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, c.vocab_size, (n,), generator=g) for n in (9, 4, 13)]
    steps = [torch.randint(0, c.vocab_size, (3,), generator=g) for _ in prompts]
    alone = []
    for p, s in zip(prompts, steps):
        cache = llm.new_cache()
        hs = [llm.model(llm.embed(p[None]), cache=cache)[0]]
        hs += [llm.model(llm.embed(s[i : i + 1][None]), cache=cache)[0] for i in range(2)]
        hs.append(llm.model(llm.embed(torch.cat([s[2:], p[:2]])[None]), cache=cache)[0])
        alone.append(hs)
    pool = KVPool(c.num_hidden_layers, 3, c.num_key_value_heads, c.head_dim, 64, torch.float32, "cpu")
    caches = [SlotCache(pool, i).reset() for i in range(3)]

    def step(xs: list[torch.Tensor]) -> list[torch.Tensor]:
        rows = [Row(cc, len(x), cc.seq_len) for cc, x in zip(caches, xs)]
        h = forward_rows(llm.model, llm.embed(torch.cat(xs)), rows)
        return list(h.split([len(x) for x in xs]))

    got = [step(prompts)]
    got += [step([s[i : i + 1] for s in steps]) for i in range(2)]  # all decode rows: the pool path
    got.append(step([torch.cat([steps[0][2:], prompts[0][:2]]), steps[1][2:3], steps[2][2:3]]))
    for i in range(3):
        for t in range(3):
            torch.testing.assert_close(got[t][i], alone[i][t], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[3][0], alone[0][3], atol=2e-5, rtol=1e-5)


@torch.inference_mode()
def test_an_explicit_head_dim_that_is_not_hidden_over_heads(golden_v45_dir):
    """Qwen3 gives head_dim explicitly: q/k/v are heads x head_dim wide, q/k norms head_dim; the
    packed forward (rows.py) equals the plain one."""
    import json

    raw = json.loads((golden_v45_dir / "config.json").read_text())
    raw.update(head_dim=16, num_hidden_layers=1)
    cfg = read_config(raw)
    torch.manual_seed(0)
    net = V45.build(cfg).eval()
    a = net.llm.model.layers[0].self_attn
    assert a.q_proj.weight.shape == (cfg.num_attention_heads * 16, cfg.hidden_size)
    assert a.q_norm.weight.shape == a.k_norm.weight.shape == (16,) and a.q_proj.bias is None
    x = net.llm.embed(torch.arange(7)[None])
    want = net.llm.model(x, cache=net.llm.new_cache())[0]
    got = forward_rows(net.llm.model, x[0], [Row(net.llm.new_cache(), 7, 0)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def _frames(tiny_v45, golden_v45_dir, n):
    from PIL import Image

    from omni.processing import packs

    frames = [Image.open(golden_v45_dir / f"video_frame{i}.png") for i in range(n)]
    items = packs.process(tiny_v45.image_processor, frames, [[-1]] * n, max_slice_nums=1)
    return items.strips, items.tgt_sizes


@torch.inference_mode()
def test_resampler_packs(tiny_v45, golden_v45_dir):
    net = tiny_v45.net
    strips, tgt = _frames(tiny_v45, golden_v45_dir, 5)
    from omni.model.vision import encode_slices

    hidden = encode_slices(net.vpm, strips, tgt, 16)
    r, Q, H = net.resampler, tiny_v45.config.query_num, tiny_v45.config.hidden_size
    out = r(hidden, tgt, [[1, 5, 8], [11, 15]])
    assert out.shape == (2, Q, H)  # one step's shapes: one output per pack
    assert torch.equal(r(hidden, tgt, [[-1]] * 5), r(hidden, tgt))  # stills: the 2-D path, bit for bit
    first = r(hidden[:3], tgt[:3], [[1, 5, 8]])
    second = r(hidden[3:], tgt[3:], [[11, 15]])
    torch.testing.assert_close(out, torch.cat([first, second]), atol=1e-5, rtol=1e-5)  # batched == alone
    assert not torch.allclose(first, r(hidden[:3], tgt[:3], [[8, 5, 1]]), atol=1e-3)  # the time ids count
    with pytest.raises(ValueError, match="do not cover"):
        r(hidden, tgt, [[1, 5]])
