"""The AutoGPTQ checkpoint format (`openbmb/MiniCPM-o-2_6-int4`): its config, keys and packing.

Owns: `GPTQConfig` (read from `quantize_config.json` and/or config.json's `quantization_config`,
which must agree; every variant we cannot run is refused naming its field), the key -> shape map
such a checkpoint must hold, and `unpack`, which turns one module's `qweight`, `qzeros`, `scales`
and `g_idx` into the plain `QuantWeight` (exact: the values GPTQ stored). Does not own: loading
order or kernels (omni.quantized, omni.model.quant).

Layout (AutoGPTQ `QuantLinear.pack`, GPTQ "v1"): `qweight [K/8, N]` int32, eight consecutive
input rows per word, low nibble first; `qzeros [G, N/8]` int32, eight consecutive output columns
per word, stored minus one (`checkpoint_format: gptq`; `gptq_v2` stores the zero itself);
`scales [G, N]` any float dtype; `g_idx [K]` int32, input row -> group. Dequantized:
W[n, k] = scales[g, n] * (q[k, n] - zero[g, n]), g = g_idx[k].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .model.quant import LLM_LINEARS, QuantWeight

PARTS = ("qweight", "qzeros", "scales", "g_idx")
_FIELDS = ("quant_method", "bits", "group_size", "desc_act", "sym", "checkpoint_format", "lm_head")
_DTYPES = {"qweight": ("I32",), "qzeros": ("I32",), "g_idx": ("I32",), "scales": ("F16", "BF16", "F32")}


class GPTQError(ValueError):
    """A quantization config we cannot run, or tensors that contradict it."""


@dataclass(frozen=True)
class GPTQConfig:
    bits: int = 4
    group_size: int = -1  # -1: one group spanning the input (per output channel)
    desc_act: bool = False
    sym: bool = True
    checkpoint_format: str = "gptq"
    lm_head: bool = False

    def groups(self, k: int) -> int:
        return 1 if self.group_size == -1 else k // self.group_size

    def describe(self) -> str:
        g = "per-channel" if self.group_size == -1 else f"g{self.group_size}"
        return f"gptq int{self.bits} {g}" + (" act-order" if self.desc_act else "")


def read_config(ckpt: Path, config_json: dict) -> GPTQConfig | None:
    """The checkpoint's GPTQ config, None for a float checkpoint. Raises GPTQError naming the field
    for a method or variant we cannot run, or where the two files disagree."""
    path = ckpt / "quantize_config.json"
    found = {}
    if path.is_file():
        found["quantize_config.json"] = json.loads(path.read_text())
    if isinstance(config_json.get("quantization_config"), dict):
        found["config.json quantization_config"] = config_json["quantization_config"]
    if not found:
        return None
    if len(found) == 2:
        (na, a), (nb, b) = found.items()
        a = {"quant_method": "gptq", "checkpoint_format": "gptq", **a}  # AutoGPTQ's defaults when left out
        b = {"quant_method": "gptq", "checkpoint_format": "gptq", **b}
        diff = [f"{f}: {a[f]!r} vs {b[f]!r}" for f in _FIELDS if f in a and f in b and a[f] != b[f]]
        if diff:
            raise GPTQError(f"{ckpt}: {na} and {nb} disagree ({'; '.join(diff)}): fix or remove one")
    raw = next(iter(found.values()))
    return _validated(raw, next(iter(found)))


def _validated(raw: dict, source: str) -> GPTQConfig:
    def bad(field: str, why: str) -> GPTQError:
        return GPTQError(f"{source}: {field} = {raw.get(field)!r}: {why}")

    method = raw.get("quant_method", "gptq")
    if method != "gptq":
        raise bad("quant_method", "only GPTQ checkpoints load (the official int4); for others load the bf16 "
                  "checkpoint with --quantize int8|int4")  # fmt: skip
    c = GPTQConfig(
        bits=int(raw.get("bits", 4)),
        group_size=int(raw.get("group_size", -1)),
        desc_act=bool(raw.get("desc_act", False)),
        sym=bool(raw.get("sym", True)),
        checkpoint_format=str(raw.get("checkpoint_format", raw.get("format", "gptq"))),
        lm_head=bool(raw.get("lm_head", False)),
    )
    if c.bits != 4:
        raise bad("bits", "only 4-bit GPTQ is supported")
    if c.group_size != -1 and (c.group_size <= 0 or c.group_size % 8):
        raise bad("group_size", "must be -1 (per channel) or a positive multiple of 8")
    if c.desc_act and c.group_size != -1:
        raise bad("desc_act", "act-order with real groups (group_size != -1) is not supported")
    if not c.sym:
        raise bad("sym", "asymmetric GPTQ is not supported")
    if c.checkpoint_format not in ("gptq", "gptq_v2"):
        raise bad("checkpoint_format", "must be gptq or gptq_v2")
    if c.lm_head:
        raise bad("lm_head", "a quantized lm_head is not supported")
    return c


def quantized_modules(num_layers: int) -> list[str]:
    """AutoGPTQ's MiniCPM-o module set: the seven linears of every Qwen2 layer."""
    return [f"llm.model.layers.{i}.{name}" for i in range(num_layers) for name in LLM_LINEARS]


def expected_shapes(float_shapes: dict, modules: list[str], c: GPTQConfig) -> dict[str, tuple[int, ...]]:
    """The float model's key map with each quantized module's `weight` [N, K] replaced by
    qweight [K/8, N], qzeros [G, N/8], scales [G, N], g_idx [K] (its bias stays)."""
    out = dict(float_shapes)
    for m in modules:
        N, K = out.pop(f"{m}.weight")
        G = c.groups(K)
        out.update({f"{m}.qweight": (K // 8, N), f"{m}.qzeros": (G, N // 8), f"{m}.scales": (G, N), f"{m}.g_idx": (K,)})
    return out


def dtype_problems(dtypes: dict[str, str], modules: list[str]) -> list[str]:
    """'  wrong dtype  KEY: checkpoint I64, want I32' lines (safetensors dtype names)."""
    lines = []
    for m in modules:
        for part in PARTS:
            key = f"{m}.{part}"
            got = dtypes.get(key)
            if got is not None and got not in _DTYPES[part]:
                lines.append(f"  wrong dtype {key}: checkpoint {got}, want {' or '.join(_DTYPES[part])}")
    return lines


def unpack(module: str, t: dict[str, torch.Tensor], c: GPTQConfig) -> QuantWeight:
    """One module's GPTQ tensors -> its QuantWeight (q [N, K] 0..15, scale [G, N], zero 0 when sym)."""
    qweight, qzeros, scales, g_idx = (t[p] for p in PARTS)
    K, N = qweight.shape[0] * 8, qweight.shape[1]
    shifts = torch.arange(0, 32, 4, dtype=torch.int32, device=qweight.device)
    q = ((qweight[:, None, :] >> shifts[None, :, None]) & 15).reshape(K, N).t().to(torch.uint8).contiguous()
    z = ((qzeros[:, :, None] >> shifts[None, None, :]) & 15).reshape(qzeros.shape[0], N)
    if c.checkpoint_format == "gptq":
        z = z + 1  # v1 stores the zero minus one
    if not bool((z == 8).all()):  # sym: every zero is 2**(bits-1)
        raise GPTQError(f"{module}.qzeros: zero points other than 8 in a checkpoint that says sym: true")
    group = K if c.group_size == -1 else c.group_size
    want = torch.zeros(K, dtype=torch.int32) if c.group_size == -1 else torch.arange(K, dtype=torch.int32) // group
    if not torch.equal(g_idx.cpu().to(torch.int32), want):
        raise GPTQError(
            f"{module}.g_idx: not the identity grouping k // {group} (act-order with real groups is not supported)"
        )
    scale = scales.float()
    return QuantWeight(4, q, scale, torch.zeros_like(scale), group)  # sym: tinygemm's zero is (8 - 8) * scale
