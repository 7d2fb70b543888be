"""The embedded default model: a tiny, deterministic, randomly initialised checkpoint.

Owns: turning `configs/tiny.toml` (official config.json field names + preprocessor settings +
seed) into a real checkpoint directory (config.json, model.safetensors, assets/Vocos.pt, the tiny
tokenizers shipped in omni/assets/tiny) under the cache, once; later calls reuse it. The weights
are drawn per key from a generator seeded by (seed, crc32(key)), so the same config always gives
the same bytes on any machine. Its replies are noise by design.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tomllib
import zlib
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
TINY_TOML = REPO / "configs" / "tiny.toml"
TINY_ASSETS = Path(__file__).resolve().parent / "assets" / "tiny"
FORMAT_VERSION = "2"  # bump when the init recipe changes


def read_model_config(path: str | Path) -> dict:
    """A model config as the official config.json dict: a .json file, or a TOML with [model]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    if path.suffix == ".toml":
        data = tomllib.loads(path.read_text())
        if "model" not in data:
            raise ValueError(f"{path}: a TOML model config needs a [model] table")
        return data["model"]
    return json.loads(path.read_text())


def _cache_root() -> Path:
    from .golden.harness import _cache_root as root

    return root()


def embedded_checkpoint(toml_path: Path = TINY_TOML) -> Path:
    """Directory of the embedded checkpoint, built on first use. Safe when several processes race
    (two `omni serve`s, a test run): one builds under a file lock into a private folder and renames
    it into place whole; the others wait for the lock and find it complete."""
    text = toml_path.read_text()
    key = hashlib.sha256((text + FORMAT_VERSION).encode()).hexdigest()[:16]
    out = _cache_root() / "embedded" / key
    if (out / ".complete").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, even if this dies
        if (out / ".complete").is_file():  # another process built it while this one waited
            return out
        data = tomllib.loads(text)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(TINY_ASSETS, tmp)
        (tmp / "config.json").write_text(json.dumps(data["model"], indent=2))
        (tmp / "preprocessor_config.json").write_text(json.dumps(data["preprocessor"], indent=2))
        build_weights(tmp, data["model"], int(data.get("seed", 0)))
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)  # a partial folder from before the lock existed
        os.rename(tmp, out)  # atomic: readers see no folder or a whole one
    return out


def build_weights(ckpt: Path, model_cfg: dict, seed: int) -> None:
    from .config import OmniConfig
    from .loader import expected_shapes
    from .model.vocos import Vocos

    cfg = OmniConfig.from_dict(model_cfg)
    state = {k: draw(k, shape, seed).to(torch.bfloat16) for k, shape in sorted(expected_shapes(cfg).items())}
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    vocos_state = Vocos().state_dict()
    for k, v in vocos_state.items():
        if k.endswith("window") or k.endswith(".fb"):
            continue  # analysis buffers keep their true values
        vocos_state[k] = draw(k, tuple(v.shape), seed)
    (ckpt / "assets").mkdir(exist_ok=True)
    torch.save(vocos_state, str(ckpt / "assets" / "Vocos.pt"))


def write_sharded(
    ckpt: Path, model_cfg: dict, shard_bytes: int = 4 << 30, dtype=torch.bfloat16, random: bool = False
) -> int:
    """A checkpoint in the official layout with every weight zero (`random`: N(0, 0.02), norms 1)
    (config.json, shards of about `shard_bytes` + model.safetensors.index.json), written shard by
    shard so writing takes one shard of memory; for memory, load-time and speed measurements of any
    config. Returns the bytes."""
    from .config import OmniConfig
    from .loader import expected_shapes

    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps(model_cfg, indent=2))
    size = torch.empty(0, dtype=dtype).element_size()
    shards, current, total = [], [], 0
    for key, shape in sorted(expected_shapes(OmniConfig.from_dict(model_cfg)).items()):
        n = size * max(1, int(torch.Size(shape).numel()))
        if current and sum(b for _, _, b in current) + n > shard_bytes:
            shards.append(current)
            current = []
        current.append((key, shape, n))
        total += n
    shards.append(current)
    weight_map = {}
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(
            {k: _fill(k, shape, dtype, random) for k, shape, _ in keys}, str(ckpt / name), metadata={"format": "pt"}
        )
        weight_map.update({k: name for k, _, _ in keys})
    (ckpt / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


def _fill(key: str, shape, dtype, random: bool) -> torch.Tensor:
    if not random:
        return torch.zeros(shape, dtype=dtype)
    if len(shape) == 1 and ("norm" in key or "ln" in key):
        return torch.ones(shape, dtype=dtype)
    return torch.empty(shape, dtype=dtype).normal_(0.0, 0.02)


def draw(key: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One tensor of the recipe: N(0, 1/fan_in) weights, unit norms, small biases, wide embeddings."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % (2**63))
    leaf = key.rsplit(".", 1)[-1]
    randn = lambda: torch.randn(shape, generator=g)
    if key.endswith("parametrizations.weight.original0"):
        return 8 + 0.5 * randn()  # weight-norm gains: keep greedy far from ties
    if key == "tts.dvae.coef":
        return 0.5 + torch.rand(shape, generator=g)
    if leaf == "gamma" or (key.endswith(".coef") and "decoder_block" in key):
        return 0.3 + 0.1 * randn()
    if leaf == "bias" or leaf == "in_proj_bias":
        return 0.05 * randn()
    if len(shape) == 1:
        return 1 + 0.1 * randn()  # norm weights
    if any(
        s in key
        for s in ("embed_tokens", "emb_text", "emb_code", "position_embedding", "embed_positions", "resampler.query")
    ):
        return 0.5 * randn()
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    w = randn() / fan_in**0.5
    return 4 * w if key == "llm.lm_head.weight" else w
