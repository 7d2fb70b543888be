"""The embedded models: tiny, deterministic, randomly initialised checkpoints, one per family.

Owns: the names `embedded:minicpmo-2_6` (the default, `configs/tiny.toml`) and
`embedded:minicpmv-4_5` (`configs/tiny-v45.toml`), and turning such a TOML (official config.json
field names + preprocessor settings + seed + the tokenizer folder under omni/assets) into a real
checkpoint directory (config.json, model.safetensors, assets/Vocos.pt when the family speaks, the
tiny tokenizers) under the cache, once; later calls reuse it. The weights
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
EMBEDDED = {"minicpmo-2_6": TINY_TOML, "minicpmv-4_5": REPO / "configs" / "tiny-v45.toml"}
PREFIX = "embedded:"
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


def resolve_model(model: str | Path | None, revision: str | None = None) -> Path:
    """A `--model` value -> a checkpoint directory: None is the default embedded model,
    `embedded:NAME` one of `EMBEDDED` (built once), anything else a folder or a hub id
    (omni/hub.py: a local folder wins; `revision` is for hub ids)."""
    if model is None:
        return embedded_checkpoint()
    name = str(model)
    if not name.startswith(PREFIX):
        from .hub import resolve

        return resolve(name, revision)
    toml = EMBEDDED.get(name[len(PREFIX) :])
    if toml is None:
        raise ValueError(f"no embedded model {name!r}; there are {', '.join(PREFIX + k for k in EMBEDDED)}")
    return embedded_checkpoint(toml)


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
        shutil.copytree(TINY_ASSETS.parent / data.get("assets", TINY_ASSETS.name), tmp)
        (tmp / "config.json").write_text(json.dumps(data["model"], indent=2))
        (tmp / "preprocessor_config.json").write_text(json.dumps(data["preprocessor"], indent=2))
        build_weights(tmp, data["model"], int(data.get("seed", 0)))
        (tmp / ".complete").write_text("ok\n")
        shutil.rmtree(out, ignore_errors=True)  # a partial folder from before the lock existed
        os.rename(tmp, out)  # atomic: readers see no folder or a whole one
    return out


def build_weights(ckpt: Path, model_cfg: dict, seed: int) -> None:
    from .family import read_config
    from .loader import expected_shapes
    from .model.vocos import Vocos

    cfg = read_config(model_cfg)
    state = {k: draw(k, shape, seed).to(torch.bfloat16) for k, shape in sorted(expected_shapes(cfg).items())}
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    if not cfg.init_tts:
        return  # no speech head, no vocoder
    vocos_state = Vocos().state_dict()
    for k, v in vocos_state.items():
        if k.endswith("window") or k.endswith(".fb"):
            continue  # analysis buffers keep their true values
        vocos_state[k] = draw(k, tuple(v.shape), seed)
    (ckpt / "assets").mkdir(exist_ok=True)
    torch.save(vocos_state, str(ckpt / "assets" / "Vocos.pt"))


def write_sharded(
    ckpt: Path,
    model_cfg: dict,
    shard_bytes: int = 4 << 30,
    dtype=torch.bfloat16,
    weight_map: dict[str, str] | None = None,
    random: bool = False,
) -> int:
    """A checkpoint in the official layout (config.json, shards + model.safetensors.index.json)
    with every weight zero, or N(0, 0.02) with `random`, for memory and load-time measurements of
    any config. The shards are of about `shard_bytes`, or the files an official index's
    `weight_map` names. Zero shards are sparse files (a safetensors header, then a hole that reads
    as zeros: the same bytes as saved zero tensors, written in milliseconds with no disk); random
    ones are written shard by shard, one shard of memory at a time. Returns the bytes."""
    from .family import read_config
    from .loader import expected_shapes

    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "config.json").write_text(json.dumps(model_cfg, indent=2))
    size = torch.empty(0, dtype=dtype).element_size()
    shapes = expected_shapes(read_config(model_cfg))
    if weight_map is None:
        weight_map, filled, total, i = {}, 0, 0, 0
        for key, shape in sorted(shapes.items()):
            n = size * max(1, int(torch.Size(shape).numel()))
            if filled and filled + n > shard_bytes:
                i, filled = i + 1, 0
            weight_map[key], filled, total = str(i), filled + n, total + n
        count = i + 1
        weight_map = {k: f"model-{int(v) + 1:05d}-of-{count:05d}.safetensors" for k, v in weight_map.items()}
    elif sorted(weight_map) != sorted(shapes):
        raise ValueError("the index's keys are not the keys the config describes (omni keys CONFIG)")
    numel = {k: max(1, int(torch.Size(s).numel())) for k, s in shapes.items()}
    total = sum(size * n for n in numel.values())
    g = torch.Generator().manual_seed(0)
    for name in sorted(set(weight_map.values())):
        keys = sorted(k for k, v in weight_map.items() if v == name)
        if random:
            tensors = {k: _fill(k, shapes[k], dtype, g) for k in keys}
            save_file(tensors, str(ckpt / name), metadata={"format": "pt"})
        else:
            entries = [(k, shapes[k], size * numel[k]) for k in keys]
            _write_zero_shard(ckpt / name, entries, _SAFETENSORS_DTYPES[dtype])
    (ckpt / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map})
    )
    return total


_SAFETENSORS_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def _write_zero_shard(path: Path, keys: list[tuple[str, tuple[int, ...], int]], dtype_name: str) -> None:
    """A safetensors file of zero tensors: the header (format: 8-byte little-endian length, JSON
    padded with spaces to 8 bytes), then `truncate` to the data's end, a hole that reads as zeros."""
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for key, shape, n in keys:
        header[key] = {"dtype": dtype_name, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + offset)


def _fill(key: str, shape, dtype, g: torch.Generator) -> torch.Tensor:
    """A random weight for speed measurements: N(0, 0.02), norms 1 (a model that runs sensibly)."""
    if len(shape) == 1 and ("norm" in key or "ln" in key):
        return torch.ones(shape, dtype=dtype)
    return torch.randn(shape, generator=g, dtype=dtype) * 0.02


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
