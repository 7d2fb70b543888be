"""The official int4 format (omni/gptq.py): AutoGPTQ's packing (tests/gptq_ckpt.py, a literal port)
unpacks to exactly the quantized values; a tiny GPTQ checkpoint made from tiny-a's weights loads
and its logits stay within a stated tolerance of the same model with the dequantized weights in
float; config variants we cannot run, and wrong key sets, fail with one clear error."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptq_ckpt import autogptq_pack, gptq_quantizer, with_weights, write_gptq
from omni import gptq
from omni.loader import CheckpointError, load

MODULE = "llm.model.layers.0.mlp.down_proj"
LOGITS_RTOL = {"dequant": 1e-5, "int4pack-cpu": 2e-2}  # float32 fallback; bf16 activations (measured 5e-3)


def _pack(group_size: int, scale_dtype=torch.float16, permute=False, fmt="gptq"):
    g = torch.Generator().manual_seed(group_size)
    w = torch.randn(64, 256, generator=g) * 0.05
    scale, zero, fake = gptq_quantizer(w, group_size, scale_dtype)
    K = w.shape[1]
    g_idx = torch.arange(K, dtype=torch.int32) // (K if group_size == -1 else group_size)
    if permute:
        g_idx = g_idx[torch.randperm(K, generator=g)]
    qweight, qzeros, scales = autogptq_pack(fake, scale, zero, g_idx)
    if fmt == "gptq_v2":
        qzeros = qzeros + 0x11111111
    return {"qweight": qweight, "qzeros": qzeros, "scales": scales.to(scale_dtype), "g_idx": g_idx}, fake


@pytest.mark.parametrize(
    "group_size, desc_act, scale_dtype, fmt",
    [(-1, True, torch.bfloat16, "gptq"), (128, False, torch.float16, "gptq"), (32, False, torch.float32, "gptq_v2")],
)
def test_unpack_gives_exactly_the_quantized_values(group_size, desc_act, scale_dtype, fmt):
    parts, fake = _pack(group_size, scale_dtype, permute=desc_act and group_size == -1, fmt=fmt)
    if fmt == "gptq":
        assert bool((parts["qzeros"] == 0x77777777).all())  # sym, stored minus one
    c = gptq.GPTQConfig(group_size=group_size, desc_act=desc_act, checkpoint_format=fmt)
    qw = gptq.unpack(MODULE, parts, c)
    assert qw.q.shape == (64, 256) and int(qw.q.max()) <= 15
    assert torch.equal(qw.dequantize(), fake)  # atol 0


def test_act_order_with_real_groups_and_asymmetric_zeros_are_refused_naming_the_tensor():
    parts, _ = _pack(32, permute=True)
    with pytest.raises(gptq.GPTQError, match=rf"{MODULE}.g_idx: not the identity grouping"):
        gptq.unpack(MODULE, parts, gptq.GPTQConfig(group_size=32))
    parts, _ = _pack(32)
    parts["qzeros"] = parts["qzeros"] + 1  # one zero point of every eight moves
    with pytest.raises(gptq.GPTQError, match=rf"{MODULE}.qzeros: zero points other than 8"):
        gptq.unpack(MODULE, parts, gptq.GPTQConfig(group_size=32))


@pytest.fixture(scope="module")
def official(tiny, tmp_path_factory):
    """tiny-a as the official int4 checkpoint: per channel, desc_act, bf16 scales, both configs."""
    tmp = tmp_path_factory.mktemp("gptq")
    deq = write_gptq(tiny.checkpoint_dir, tmp / "int4")
    return tmp / "int4", with_weights(tiny.checkpoint_dir, tmp / "ref", deq)


@pytest.mark.parametrize("kernel", ["int4pack-cpu", "dequant"])
def test_official_layout_loads_and_matches_the_dequantized_float_model(official, kernel):
    from omni.chat import chat
    from omni.sampling import GREEDY

    ckpt, ref_dir = official
    m, ref = load(ckpt, progress=False, kernel=kernel), load(ref_dir, progress=False)
    assert m.weights == {"dtype": "float32", "quantization": "gptq int4 per-channel act-order (checkpoint)", "kernel": kernel}  # fmt: skip
    ids = torch.randint(0, 500, (1, 40), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got, want = (x.net.llm.lm_head(x.net.llm.model(x.net.llm.embed(ids))) for x in (m, ref))
    err = float((got - want).abs().max() / want.abs().max())
    assert err <= LOGITS_RTOL[kernel], err
    assert torch.equal(got[0, -1].argmax(), want[0, -1].argmax())
    if kernel == "dequant":  # float32 end to end: greedy replies are the float model's
        msgs = [{"role": "user", "content": ["Hello!"]}]
        a, b = (chat(x, msgs, max_new_tokens=6, sampling=GREEDY, generate_audio=False) for x in (m, ref))
        assert a.ids == b.ids


@pytest.mark.parametrize(
    "change, field",
    [
        ({"bits": 8}, "bits = 8: only 4-bit"),
        ({"sym": False}, "sym = False: asymmetric"),
        ({"group_size": 128, "desc_act": True}, "desc_act = True: act-order with real groups"),
        ({"quant_method": "awq"}, "quant_method = 'awq': only GPTQ"),
        ({"lm_head": True}, "lm_head = True"),
        ({"checkpoint_format": "marlin"}, "checkpoint_format = 'marlin'"),
    ],
)
def test_unsupported_variants_get_one_error_naming_the_field(official, tmp_path, change, field):
    import shutil

    ck = shutil.copytree(official[0], tmp_path / "ck")
    qc = {**json.loads((ck / "quantize_config.json").read_text()), **change}
    (ck / "quantize_config.json").write_text(json.dumps(qc))
    cfg = json.loads((ck / "config.json").read_text())
    del cfg["quantization_config"]
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(gptq.GPTQError, match=f"quantize_config.json: {field}"):
        load(ck, progress=False)


def test_the_two_configs_must_agree_and_either_alone_is_enough(official, tmp_path):
    import shutil

    ck = shutil.copytree(official[0], tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["quantization_config"].update(group_size=128, desc_act=False)
    (ck / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(gptq.GPTQError, match=r"disagree \(group_size: -1 vs 128; desc_act: True vs False\)"):
        load(ck, progress=False)
    (ck / "quantize_config.json").unlink()  # config.json's block alone: group 128 now, which the tensors contradict
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load(ck, progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        load(official[0], progress=False, quantize="int8")


def test_wrong_key_sets_get_one_error_listing_every_key(official, tmp_path):
    import shutil

    ck = shutil.copytree(official[0], tmp_path / "ck")
    sd = load_file(str(ck / "model.safetensors"))
    del sd[f"{MODULE}.g_idx"]
    sd[f"{MODULE}.qweight"] = sd[f"{MODULE}.qweight"][:-1].contiguous()
    sd["llm.model.layers.1.self_attn.q_proj.weight"] = torch.zeros(128, 128)  # a float weight left in
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load(ck, progress=False)
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg
    assert f"missing     {MODULE}.g_idx [256]" in msg
    assert "unexpected  llm.model.layers.1.self_attn.q_proj.weight" in msg
    assert f"mis-shaped  {MODULE}.qweight: checkpoint [31, 128], model [32, 128]" in msg
    sd = load_file(str(official[0] / "model.safetensors"))
    sd[f"{MODULE}.qzeros"] = sd[f"{MODULE}.qzeros"].long()
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"wrong dtype {MODULE}.qzeros: checkpoint I64, want I32"):
        load(ck, progress=False)


def test_a_module_split_across_shards_loads_like_one_file(official, tmp_path):
    """A sharded GPTQ checkpoint (V-4.5-GPTQ's layout) with one module's tensors in two shards."""
    import shutil

    ck = shutil.copytree(official[0], tmp_path / "ck")
    sd = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()
    first = {k for k in sd if k < MODULE or k == f"{MODULE}.qweight"}
    shards = {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": set(sd) - first}
    for name, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(ck / name))
    index = {"metadata": {}, "weight_map": {k: name for name, keys in shards.items() for k in keys}}
    (ck / "model.safetensors.index.json").write_text(json.dumps(index))
    a, b = load(official[0], progress=False), load(ck, progress=False)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
