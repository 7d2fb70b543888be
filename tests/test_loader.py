"""Loader: strict key/shape checking with one error listing every problem, shards + index, dtype."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from omni.loader import CheckpointError, load


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_error_lists_missing_unexpected_and_misshaped(embedded_dir, tmp_path):
    ck = _copy(embedded_dir, tmp_path / "ck")
    sd = load_file(str(ck / "model.safetensors"))
    del sd["llm.model.norm.weight"]
    sd["llm.extra.weight"] = torch.zeros(2)
    sd["vpm.post_layernorm.bias"] = torch.zeros(3)
    save_file(sd, str(ck / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load(ck, progress=False)
    msg = str(e.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in msg
    assert "missing     llm.model.norm.weight" in msg
    assert "unexpected  llm.extra.weight" in msg
    assert "mis-shaped  vpm.post_layernorm.bias: checkpoint [3]" in msg


def test_missing_assets_are_named(embedded_dir, tmp_path):
    ck = _copy(embedded_dir, tmp_path / "ck")
    (ck / "assets" / "Vocos.pt").unlink()
    with pytest.raises(FileNotFoundError, match="Vocos.pt"):
        load(ck, progress=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load(tmp_path, progress=False)


def test_sharded_checkpoint_with_index_loads_identically(embedded_dir, tmp_path):
    ck = _copy(embedded_dir, tmp_path / "ck")
    sd = load_file(str(ck / "model.safetensors"))
    (ck / "model.safetensors").unlink()
    keys = sorted(sd)
    halves = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    weight_map = {}
    for name, ks in halves.items():
        save_file({k: sd[k] for k in ks}, str(ck / name))
        weight_map.update({k: name for k in ks})
    (ck / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    a = load(embedded_dir, progress=False)
    b = load(ck, progress=False)
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dtype_option_keeps_tts_in_float32(embedded_dir):
    m = load(embedded_dir, dtype=torch.bfloat16, progress=False)
    assert m.net.llm.lm_head.weight.dtype == torch.bfloat16
    assert m.net.vpm.post_layernorm.weight.dtype == torch.bfloat16
    assert m.net.tts.emb_text.weight.dtype == torch.float32  # official quirk, spec §8.3
    assert next(m.vocos.parameters()).dtype == torch.float32


def test_embedded_checkpoint_is_deterministic(embedded_dir, tmp_path, monkeypatch):
    from omni.embedded import embedded_checkpoint

    monkeypatch.setenv("OMNI_CACHE", str(tmp_path))
    again = embedded_checkpoint()
    assert again != embedded_dir
    assert (again / "model.safetensors").read_bytes() == (embedded_dir / "model.safetensors").read_bytes()


LOAD_PEAK = r"""
import sys, torch
from pathlib import Path
from omni.config import OmniConfig
from omni.loader import load_net
from omni.model.omni import MiniCPMO
def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
ck = Path(sys.argv[1])
cfg = OmniConfig.from_file(ck / "config.json")
with torch.device("meta"):
    MiniCPMO(cfg)                      # imports every tower's module first: not the loader's memory
before = vm("VmPeak")
net = load_net(ck, cfg, torch.bfloat16, "cpu", progress=False)
print(vm("VmPeak") - before, net.llm.lm_head.weight.dtype, net.tts.emb_text.weight.dtype)
"""


def test_loading_allocates_one_copy_in_the_target_dtype(tmp_path):
    """A bf16 checkpoint of ~300 MB in 40-MB shards loads within 1.6x its size of address space
    (VmPeak): the weights in bf16 (safetensors maps them) plus a shard being opened. Preallocating
    the model in float32 first, as `to_empty` did, takes 2x the checkpoint before any shard is read."""
    import subprocess
    import sys
    from omni.embedded import TINY_TOML, read_model_config, write_sharded

    cfg = read_model_config(TINY_TOML)
    cfg.update(
        hidden_size=512,
        intermediate_size=2048,
        num_hidden_layers=28,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=30_000,
    )
    cfg["tts_config"] = dict(cfg["tts_config"], llm_dim=512)
    total = write_sharded(tmp_path / "ck", cfg, shard_bytes=40 << 20)
    assert len(list((tmp_path / "ck").glob("*.safetensors"))) >= 7 and total > 280 << 20
    out = subprocess.run(
        [sys.executable, "-c", LOAD_PEAK, str(tmp_path / "ck")], capture_output=True, text=True, check=True
    ).stdout.split()
    peak = int(out[0])
    assert out[1:] == ["torch.bfloat16", "torch.float32"]  # the TTS stays in float32 (official)
    assert peak < 1.6 * total, f"loading took {peak / 2**20:.0f} MB of address space for {total / 2**20:.0f} MB"
