"""Checkpoint directory -> ready model bundle, loaded strictly.

Owns: reading an official `openbmb/MiniCPM-o-2_6` or `openbmb/MiniCPM-V-4_5`-layout directory (the
family from config.json, omni.family; config.json, sharded
safetensors + index or one model.safetensors, tokenizer and preprocessor files, assets/Vocos.pt,
assets/chattts_tokenizer), checking every key and shape *before* allocating, and loading the shards
one at a time into a model built on the meta device, each tensor assigned in its final dtype
(peak memory near one copy of the weights in that dtype). Quantized LLM linears (the official GPTQ
checkpoint, or `quantize` int8/int4 of a float one) are built by omni.quantized as their tensors
are read. Does not own: model math, sessions, hub ids (omni.hub).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from .config import OmniConfig, PreprocessorConfig
from .family import O26, Family, family_for, family_of
from .model.omni import MiniCPMO

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .model.vocos import Vocos
    from .processing.image import ImageProcessor
    from .processing.tokens import SpecialIds

# Official key -> our module path. Empty: every official name is our attribute path (STYLE §3).
RENAMES: dict[str, str] = {}


class CheckpointError(ValueError):
    """A checkpoint whose key set or shapes differ from the model the config describes."""


@dataclass
class Omni:
    """Everything inference needs, shared read-only by all sessions."""

    net: MiniCPMO
    vocos: Vocos | None  # None: a checkpoint without the TTS
    config: OmniConfig
    pre: PreprocessorConfig
    tokenizer: PreTrainedTokenizerBase  # Qwen2 (processing.tokens.load_tokenizer)
    ids: SpecialIds
    tts_tokenizer: PreTrainedTokenizerBase | None
    image_processor: ImageProcessor
    checkpoint_dir: Path
    device: torch.device
    dtype: torch.dtype
    family: Family = O26
    weights: dict | None = None  # {"dtype", "quantization", "kernel"} (omni.quantized.weights_info)


def expected_shapes(cfg: OmniConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict the config describes (built on the meta device)."""
    with torch.device("meta"):
        net = family_for(cfg).build(cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def shard_files(ckpt: Path) -> list[Path]:
    index = ckpt / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [ckpt / f for f in sorted(set(weight_map.values()))]
    single = ckpt / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(f"{ckpt}: neither model.safetensors.index.json nor model.safetensors")


def checkpoint_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Key -> shape from the safetensors headers only (no tensor data read)."""
    shapes = {}
    for f in files:
        with safe_open(str(f), "pt") as s:
            for k in s.keys():
                shapes[_renamed(k)] = tuple(s.get_slice(k).get_shape())
    return shapes


def checkpoint_dtypes(files: list[Path]) -> dict[str, str]:
    """Key -> safetensors dtype name ("BF16", "I32") from the headers only."""
    dtypes = {}
    for f in files:
        with safe_open(str(f), "pt") as s:
            for k in s.keys():
                dtypes[_renamed(k)] = s.get_slice(k).get_dtype()
    return dtypes


def verify_keys(expected: dict, found: dict) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if missing or unexpected or mismatched:
        lines = [
            f"checkpoint does not match the model described by config.json: "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} mis-shaped keys"
        ]
        lines += [f"  missing     {k} {list(expected[k])}" for k in missing]
        lines += [f"  unexpected  {k} {list(found[k])}" for k in unexpected]
        lines += [f"  mis-shaped  {k}: checkpoint {list(found[k])}, model {list(expected[k])}" for k in mismatched]
        raise CheckpointError("\n".join(lines))


def load_net(
    ckpt: Path,
    cfg: OmniConfig,
    dtype: torch.dtype,
    device,
    progress: bool = True,
    quantize: str | None = None,
    kernel: str | None = None,
) -> MiniCPMO:
    """Build on the meta device and assign each checkpoint tensor, converted once to its final
    dtype on `device`, in place of its meta parameter: nothing is allocated before its weights
    arrive, so peak memory is one copy in the target dtype plus one tensor (a full preallocation
    in float32 first would double a bf16 model). `quantize` int8/int4: the LLM linears are rounded
    as they are read; a GPTQ checkpoint's are unpacked; `kernel` forces their kernel (tests)."""
    return _load_net(ckpt, cfg, dtype, device, progress, quantize, kernel)[0]


def _load_net(ckpt: Path, cfg: OmniConfig, dtype, device, progress, quantize, kernel) -> tuple[MiniCPMO, dict]:
    from .quantized import WeightPlan

    files = shard_files(ckpt)
    raw = json.loads((ckpt / "config.json").read_text())
    plan = WeightPlan.of(ckpt, raw, cfg.num_hidden_layers, dtype, device, quantize, kernel)
    verify_keys(plan.expected(expected_shapes(cfg)), checkpoint_shapes(files))
    bad_dtypes = plan.dtype_problems(checkpoint_dtypes(files))
    if bad_dtypes:
        raise CheckpointError("\n".join([f"{len(bad_dtypes)} GPTQ tensors of the wrong dtype:", *bad_dtypes]))
    with torch.device("meta"):
        net = family_for(cfg).build(cfg)
    bar = _progress(files, progress)
    for f in bar:
        with safe_open(str(f), "pt", device=str(device)) as s:
            shard = {}
            for k in s.keys():
                name = _renamed(k)
                t = s.get_tensor(k)
                if not plan.take(net, name, t):  # quantized linears' tensors are the plan's
                    # a tensor read from a shard keeps the whole file mapped; a quantized load
                    # copies the float ones so each shard's mapping goes when the next is read
                    shard[name] = t.to(_load_dtype(name, dtype), copy=plan.mode is not None)
                del t
            net.load_state_dict(shard, strict=False, assign=True)  # verify_keys made the key set exact
            del shard
    weights = plan.finish(net)
    net.init_buffers()  # the non-persistent buffers (rotary tables, sin-cos grid) are computed
    missing = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    assert not missing, f"left on the meta device: {missing[:5]}"
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), weights


def _renamed(key: str) -> str:
    return RENAMES.get(key, key)


def _load_dtype(key: str, dtype: torch.dtype) -> torch.dtype:
    # Official quirk kept on purpose (spec §8.3): the TTS runs in float32 (bf16 weight_norm
    # kernels were missing), whatever `dtype` the rest uses.
    return torch.float32 if key.startswith("tts.") else dtype


def _progress(files, enabled: bool):
    if not enabled or len(files) == 0:
        return files
    try:
        from tqdm import tqdm

        return tqdm(files, desc="loading shards", unit="shard", file=sys.stderr)
    except ImportError:  # tqdm comes with transformers; keep a plain fallback anyway
        return files


def load_vocos(ckpt: Path, device) -> Vocos:
    from .model.vocos import Vocos

    path = ckpt / "assets" / "Vocos.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the vocoder ships with the checkpoint (assets/Vocos.pt)")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    vocos = Vocos()
    found = {k: tuple(v.shape) for k, v in state.items()}
    verify_keys({k: tuple(v.shape) for k, v in vocos.state_dict().items()}, found)
    vocos.load_state_dict(state, strict=True)
    return vocos.to(device).float().eval()  # Vocos always runs in fp32 (spec §5.4)


def load(
    ckpt: str | Path,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    progress: bool = True,
    quantize: str | None = None,
    kernel: str | None = None,
) -> Omni:
    """Load a checkpoint directory laid out like `openbmb/MiniCPM-o-2_6` (or its GPTQ int4 sibling)
    or `openbmb/MiniCPM-V-4_5`; `quantize` "int8"/"int4" quantizes the LLM's linears of a float
    checkpoint while it loads."""
    from .processing.image import ImageProcessor
    from .processing.tokens import load_tokenizer, load_tts_tokenizer, special_ids

    ckpt = Path(ckpt)
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt}/config.json not found: not a checkpoint directory")
    device = torch.device(device)
    raw = json.loads((ckpt / "config.json").read_text())
    family = family_of(raw)
    cfg = family.config(raw)
    pre_path = ckpt / "preprocessor_config.json"
    pre = PreprocessorConfig.from_file(pre_path) if pre_path.is_file() else PreprocessorConfig()
    if pre.image_feature_size != cfg.query_num:
        raise CheckpointError(f"preprocessor image_feature_size {pre.image_feature_size} != query_num {cfg.query_num}")
    net, weights = _load_net(ckpt, cfg, dtype, device, progress, quantize, kernel)
    tok = load_tokenizer(ckpt)
    vocos = load_vocos(ckpt, device) if cfg.init_tts else None
    tts_tok = load_tts_tokenizer(ckpt) if cfg.init_tts else None
    return Omni(
        net=net,
        vocos=vocos,
        config=cfg,
        pre=pre,
        tokenizer=tok,
        ids=special_ids(tok, optional=family.absent_tokens),
        tts_tokenizer=tts_tok,
        image_processor=ImageProcessor(pre),
        checkpoint_dir=ckpt,
        device=device,
        dtype=dtype,
        family=family,
        weights=weights,
    )
