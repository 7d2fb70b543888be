"""The official MiniCPM-V 4.5 config gives exactly the 849 keys of the official
model.safetensors.index.json (tests/assets/official-v4_5, copied unchanged), with the shapes
written out here from config.json alone (independent of the model code); their bf16 bytes add up to
the index's total_size."""

import json
import math
from pathlib import Path

SPEC = Path(__file__).resolve().parent / "assets" / "official-v4_5"


def shapes_from_config(c: dict) -> dict[str, tuple]:
    H, I, V, D = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["head_dim"]  # noqa: E741
    q, kv = c["num_attention_heads"] * D, c["num_key_value_heads"] * D
    t: dict[str, tuple] = {"llm.model.embed_tokens.weight": (V, H), "llm.model.norm.weight": (H,)}
    t["llm.lm_head.weight"] = (V, H)  # untied
    for n in range(c["num_hidden_layers"]):
        p = f"llm.model.layers.{n}."
        t[p + "self_attn.q_proj.weight"], t[p + "self_attn.o_proj.weight"] = (q, H), (H, q)
        t[p + "self_attn.k_proj.weight"] = t[p + "self_attn.v_proj.weight"] = (kv, H)  # no biases
        t[p + "self_attn.q_norm.weight"] = t[p + "self_attn.k_norm.weight"] = (D,)
        t[p + "mlp.gate_proj.weight"] = t[p + "mlp.up_proj.weight"] = (I, H)
        t[p + "mlp.down_proj.weight"] = (H, I)
        t[p + "input_layernorm.weight"] = t[p + "post_attention_layernorm.weight"] = (H,)
    v = c["vision_config"]
    E, F, P = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    t["vpm.embeddings.patch_embedding.weight"], t["vpm.embeddings.patch_embedding.bias"] = (E, 3, P, P), (E,)
    t["vpm.embeddings.position_embedding.weight"] = ((v["image_size"] // P) ** 2, E)
    layers = v["num_hidden_layers"] - (1 if c["drop_vision_last_layer"] else 0)
    for n in range(layers):
        p = f"vpm.encoder.layers.{n}."
        for x in ("q", "k", "v", "out"):
            t[p + f"self_attn.{x}_proj.weight"], t[p + f"self_attn.{x}_proj.bias"] = (E, E), (E,)
        for ln in ("layer_norm1", "layer_norm2"):
            t[p + ln + ".weight"] = t[p + ln + ".bias"] = (E,)
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = (F, E), (F,)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = (E, F), (E,)
    t["vpm.post_layernorm.weight"] = t["vpm.post_layernorm.bias"] = (E,)
    t["resampler.query"], t["resampler.proj"] = (c["query_num"], H), (H, H)
    t["resampler.kv_proj.weight"] = (H, E)
    t["resampler.attn.in_proj_weight"], t["resampler.attn.in_proj_bias"] = (3 * H, H), (3 * H,)
    t["resampler.attn.out_proj.weight"], t["resampler.attn.out_proj.bias"] = (H, H), (H,)
    for ln in ("ln_q", "ln_kv", "ln_post"):
        t[f"resampler.{ln}.weight"] = t[f"resampler.{ln}.bias"] = (H,)
    return t


def test_omni_keys_gives_the_official_index_with_shapes_from_the_config(capsys):
    from omni.cli import main

    assert main(["keys", str(SPEC / "config.json")]) == 0
    out = capsys.readouterr().out
    got = {k: tuple(v) for k, v in json.loads(out).items()}
    index = json.loads((SPEC / "model.safetensors.index.json").read_text())
    assert len(index["weight_map"]) == 849
    assert sorted(got) == sorted(index["weight_map"])
    assert got == shapes_from_config(json.loads((SPEC / "config.json").read_text()))
    assert 2 * sum(math.prod(s) for s in got.values()) == index["metadata"]["total_size"]  # bf16 bytes


def test_the_loader_refuses_a_checkpoint_of_the_other_family(tmp_path):
    """An o-2.6 key set under a V-4.5 config.json is refused before anything is allocated."""
    import pytest
    import torch
    from safetensors.torch import save_file

    from omni.family import read_config
    from omni.loader import CheckpointError, load_net

    raw = json.loads((Path(__file__).resolve().parent / "assets" / "golden" / "tiny-v45-a" / "config.json").read_text())
    save_file({"llm.model.layers.0.self_attn.q_proj.bias": torch.zeros(128)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(raw))  # a checkpoint folder has its config
    with pytest.raises(CheckpointError, match="unexpected  llm.model.layers.0.self_attn.q_proj.bias"):
        load_net(tmp_path, read_config(raw), torch.float32, "cpu", progress=False)
