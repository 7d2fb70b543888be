"""The full-size official config, built on the meta device, has exactly the key set and shapes of
spec §2.2 (written out here from the spec's tables, independent of the model code)."""

import json
import subprocess
import sys
from pathlib import Path

from omni.config import OmniConfig
from omni.embedded import read_model_config
from omni.loader import expected_shapes

REPO = Path(__file__).resolve().parent.parent
FULL = REPO / "configs" / "full.toml"


def spec_table() -> dict[str, tuple]:
    t: dict[str, tuple] = {}
    H, I, V = 3584, 18944, 151700  # noqa: E741 - the spec's names (hidden, intermediate, vocab)
    t["llm.model.embed_tokens.weight"] = (V, H)
    t["llm.model.norm.weight"] = (H,)
    t["llm.lm_head.weight"] = (V, H)
    for n in range(28):
        p = f"llm.model.layers.{n}."
        t[p + "self_attn.q_proj.weight"], t[p + "self_attn.q_proj.bias"] = (H, H), (H,)
        for x in "kv":
            t[p + f"self_attn.{x}_proj.weight"], t[p + f"self_attn.{x}_proj.bias"] = (512, H), (512,)
        t[p + "self_attn.o_proj.weight"] = (H, H)
        t[p + "mlp.gate_proj.weight"] = t[p + "mlp.up_proj.weight"] = (I, H)
        t[p + "mlp.down_proj.weight"] = (H, I)
        t[p + "input_layernorm.weight"] = t[p + "post_attention_layernorm.weight"] = (H,)
    D = 1152
    t["vpm.embeddings.patch_embedding.weight"], t["vpm.embeddings.patch_embedding.bias"] = (D, 3, 14, 14), (D,)
    t["vpm.embeddings.position_embedding.weight"] = (4900, D)
    for n in range(27):
        p = f"vpm.encoder.layers.{n}."
        for x in ("q", "k", "v", "out"):
            t[p + f"self_attn.{x}_proj.weight"], t[p + f"self_attn.{x}_proj.bias"] = (D, D), (D,)
        for ln in ("layer_norm1", "layer_norm2"):
            t[p + ln + ".weight"] = t[p + ln + ".bias"] = (D,)
        t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"] = (4304, D), (4304,)
        t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"] = (D, 4304), (D,)
    t["vpm.post_layernorm.weight"] = t["vpm.post_layernorm.bias"] = (D,)
    t["resampler.query"] = (64, H)
    t["resampler.kv_proj.weight"] = (H, D)
    t["resampler.attn.in_proj_weight"], t["resampler.attn.in_proj_bias"] = (3 * H, H), (3 * H,)
    t["resampler.attn.out_proj.weight"], t["resampler.attn.out_proj.bias"] = (H, H), (H,)
    for ln in ("ln_q", "ln_kv", "ln_post"):
        t[f"resampler.{ln}.weight"] = t[f"resampler.{ln}.bias"] = (H,)
    t["resampler.proj"] = (H, H)
    A = 1024
    t["apm.conv1.weight"], t["apm.conv1.bias"] = (A, 80, 3), (A,)
    t["apm.conv2.weight"], t["apm.conv2.bias"] = (A, A, 3), (A,)
    t["apm.embed_positions.weight"] = (1500, A)
    for n in range(24):
        p = f"apm.layers.{n}."
        for x in ("q", "v", "out"):
            t[p + f"self_attn.{x}_proj.weight"], t[p + f"self_attn.{x}_proj.bias"] = (A, A), (A,)
        t[p + "self_attn.k_proj.weight"] = (A, A)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            t[p + ln + ".weight"] = t[p + ln + ".bias"] = (A,)
        t[p + "fc1.weight"], t[p + "fc1.bias"] = (4096, A), (4096,)
        t[p + "fc2.weight"], t[p + "fc2.bias"] = (A, 4096), (A,)
    t["apm.layer_norm.weight"] = t["apm.layer_norm.bias"] = (A,)
    t["audio_projection_layer.linear1.weight"], t["audio_projection_layer.linear1.bias"] = (H, A), (H,)
    t["audio_projection_layer.linear2.weight"], t["audio_projection_layer.linear2.bias"] = (H, H), (H,)
    T = 768
    t["tts.projector.linear1.weight"], t["tts.projector.linear1.bias"] = (T, H), (T,)
    t["tts.projector.linear2.weight"], t["tts.projector.linear2.bias"] = (T, T), (T,)
    for q in range(4):
        t[f"tts.emb_code.{q}.weight"] = (626, T)
        t[f"tts.head_code.{q}.parametrizations.weight.original0"] = (626, 1)
        t[f"tts.head_code.{q}.parametrizations.weight.original1"] = (626, T)
    t["tts.emb_text.weight"] = (21178, T)
    t["tts.model.embed_tokens.weight"] = (32000, T)
    for n in range(20):
        p = f"tts.model.layers.{n}."
        for x in "qkvo":
            t[p + f"self_attn.{x}_proj.weight"] = (T, T)
        t[p + "mlp.gate_proj.weight"] = t[p + "mlp.up_proj.weight"] = (3072, T)
        t[p + "mlp.down_proj.weight"] = (T, 3072)
        t[p + "input_layernorm.weight"] = t[p + "post_attention_layernorm.weight"] = (T,)
    t["tts.model.norm.weight"] = (T,)
    d = "tts.dvae."
    t[d + "coef"] = (1, 100, 1)
    t[d + "downsample_conv.0.weight"], t[d + "downsample_conv.0.bias"] = (512, 100, 3), (512,)
    t[d + "downsample_conv.2.weight"], t[d + "downsample_conv.2.bias"] = (512, 512, 4), (512,)
    for part, out in (("encoder", 1024), ("decoder", 512)):
        p = d + part + "."
        t[p + "conv_in.0.weight"], t[p + "conv_in.0.bias"] = (128, 512, 3), (128,)
        t[p + "conv_in.2.weight"], t[p + "conv_in.2.bias"] = (256, 128, 3), (256,)
        for b in range(12):
            q = p + f"decoder_block.{b}."
            t[q + "dwconv.weight"], t[q + "dwconv.bias"] = (256, 1, 7), (256,)
            t[q + "norm.weight"] = t[q + "norm.bias"] = (256,)
            t[q + "pwconv1.weight"], t[q + "pwconv1.bias"] = (1024, 256), (1024,)
            t[q + "pwconv2.weight"], t[q + "pwconv2.bias"] = (256, 1024), (256,)
            t[q + "coef"] = (256,)
        t[p + "conv_out.weight"] = (out, 256, 1)
    t[d + "out_conv.weight"] = (100, 512, 3)
    for r in range(2):
        p = d + f"vq_layer.quantizer.rvqs.{r}."
        t[p + "project_in.weight"], t[p + "project_in.bias"] = (4, 512), (4,)
        t[p + "project_out.weight"], t[p + "project_out.bias"] = (512, 4), (512,)
    return t


def test_full_config_meta_keys_and_shapes_equal_spec():
    cfg = OmniConfig.from_dict(read_model_config(FULL))
    got = expected_shapes(cfg)
    want = spec_table()
    assert sorted(set(want) - set(got)) == []
    assert sorted(set(got) - set(want)) == []
    assert {k: v for k, v in got.items() if want[k] != v} == {}


def test_keys_command_prints_the_same_map():
    out = subprocess.run(
        [sys.executable, "-m", "omni.cli", "keys", str(FULL)], capture_output=True, text=True, check=True
    ).stdout
    got = {k: tuple(v) for k, v in json.loads(out).items()}
    assert got == spec_table()
