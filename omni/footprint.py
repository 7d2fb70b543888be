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

from .gptq import quantized_modules
from .loader import _load_dtype, _renamed, shard_files
from .model.quant import INT4_GROUP


def weight_bytes(ckpt: str | Path, dtype: torch.dtype, quantize: str | None = None) -> int:
    """Bytes one loaded copy of `ckpt`'s weights takes: every float tensor in the dtype the loader
    gives it (the TTS in float32 whatever `dtype` is), integer tensors (a GPTQ checkpoint's packed
    weights) as stored, the LLM's linears at 1 (int8) or 1/2 (int4) byte a weight plus their
    scales under `quantize`, and assets/Vocos.pt (float32 as stored)."""
    ckpt = Path(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    linears = {m + ".weight" for m in quantized_modules(cfg["num_hidden_layers"])} if quantize else set()
    item = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for f in shard_files(ckpt):
        with safe_open(str(f), "pt") as s:
            for k in s.keys():
                sl = s.get_slice(k)
                shape, stored = sl.get_shape(), sl.get_dtype()
                numel = math.prod(shape)
                if k in linears:  # [N, K]: a scale per row (int8) or per row and group (int4)
                    n, kk = shape
                    total += numel // 2 + 2 * n * (kk // INT4_GROUP) * item if quantize == "int4" else numel + n * item
                elif stored.startswith(("I", "U")):
                    total += numel * torch.empty(0, dtype=getattr(torch, _INT_DTYPES[stored])).element_size()
                else:
                    total += numel * torch.empty(0, dtype=_load_dtype(_renamed(k), dtype)).element_size()
    vocos = ckpt / "assets" / "Vocos.pt"
    if vocos.is_file():
        total += vocos.stat().st_size
    return total


_INT_DTYPES = {"I8": "int8", "U8": "uint8", "I16": "int16", "I32": "int32", "I64": "int64"}


def kv_bytes_per_token(ckpt: str | Path, dtype: torch.dtype) -> int:
    """LLM KV-cache bytes per context position (keys and values of every layer), from config.json."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    heads = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    kv_heads = cfg.get("num_key_value_heads") or heads
    return 2 * cfg["num_hidden_layers"] * kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()
