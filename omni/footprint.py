"""What a checkpoint will cost in memory once loaded, read from its files without loading it.

Owns: the bytes of one loaded copy of the weights (from the safetensors headers, in the dtype each
tensor is loaded in, the vocoder included) and the LLM's KV bytes per token (from config.json).
The service sizes its model processes and KV pools from these before it loads anything
(streaming/engines/lanes.py). Does not own: loading, the pools themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import safe_open

from .loader import _load_dtype, _renamed, shard_files


def weight_bytes(ckpt: str | Path, dtype: torch.dtype) -> int:
    """Bytes one loaded copy of `ckpt`'s weights takes: every tensor in the dtype the loader
    gives it (the TTS in float32 whatever `dtype` is), plus assets/Vocos.pt (float32 as stored)."""
    ckpt = Path(ckpt)
    total = 0
    for f in shard_files(ckpt):
        with safe_open(str(f), "pt") as s:
            for k in s.keys():
                numel = math.prod(s.get_slice(k).get_shape())
                total += numel * torch.empty(0, dtype=_load_dtype(_renamed(k), dtype)).element_size()
    vocos = ckpt / "assets" / "Vocos.pt"
    if vocos.is_file():
        total += vocos.stat().st_size
    return total


def kv_bytes_per_token(ckpt: str | Path, dtype: torch.dtype) -> int:
    """LLM KV-cache bytes per context position (keys and values of every layer), from config.json."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()
