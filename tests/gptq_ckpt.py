"""Test helper: a GPTQ checkpoint in AutoGPTQ's exact packing, made from a float checkpoint's weights.

The LLM's seven linears per layer are quantized by round-to-nearest with GPTQ's own quantizer
(sym: scale = 2 * amax / 15, zero = 8; per group of `group_size` input columns, or per channel
for -1) and packed by a literal port of AutoGPTQ's `QuantLinear.pack` (qlinear_cuda.py: the
int-weight loop over input columns, the uint32 shift loops for qweight and qzeros, `zeros -= 1`).
Independent of omni.gptq on purpose: the loader must read what AutoGPTQ wrote.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def gptq_quantizer(w: torch.Tensor, group_size: int, scale_dtype: torch.dtype, bits: int = 4):
    """GPTQ's `Quantizer` (sym, perchannel) per group, its scales rounded to the stored dtype first
    -> scales [N, G], zeros [N, G], the fake-quantized W (what GPTQ hands `pack`)."""
    N, K = w.shape
    g = K if group_size == -1 else group_size
    maxq = 2**bits - 1
    wg = w.float().view(N, K // g, g)
    xmax = torch.maximum(wg.amin(-1).abs(), wg.amax(-1))
    xmax[xmax == 0] = 1  # GPTQ: tmp = (xmin == 0) & (xmax == 0) -> -1, +1
    scale = (2 * xmax / maxq).to(scale_dtype).float()
    zero = torch.full_like(scale, (maxq + 1) / 2)
    q = torch.clamp(torch.round(wg / scale[..., None]) + zero[..., None], 0, maxq)
    fake = (scale[..., None] * (q - zero[..., None])).view(N, K)
    return scale, zero, fake


def autogptq_pack(fake: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor, bits: int = 4):
    """AutoGPTQ qlinear_cuda `pack`, line for line (scales, zeros [N, G]) -> qweight, qzeros, scales [G, N]."""
    W = fake.clone()
    infeatures = W.shape[1]
    scales = scales.t().contiguous()
    zeros = zeros.t().contiguous()
    scale_zeros = zeros * scales
    intweight = []
    for idx in range(infeatures):
        intweight.append(torch.round((W[:, idx] + scale_zeros[g_idx[idx]]) / scales[g_idx[idx]]).to(torch.int)[:, None])
    intweight = torch.cat(intweight, dim=1)
    intweight = intweight.t().contiguous()
    intweight = intweight.numpy().astype(np.uint32)
    i = 0
    row = 0
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), dtype=np.uint32)
    while row < qweight.shape[0]:
        for j in range(i, i + (32 // bits)):
            qweight[row] |= intweight[j] << (bits * (j - i))
        i += 32 // bits
        row += 1
    qweight = qweight.astype(np.int32)
    zeros -= 1
    zeros = zeros.numpy().astype(np.uint32)
    qzeros = np.zeros((zeros.shape[0], zeros.shape[1] // 32 * bits), dtype=np.uint32)
    i = 0
    col = 0
    while col < qzeros.shape[1]:
        for j in range(i, i + (32 // bits)):
            qzeros[:, col] |= zeros[:, j] << (bits * (j - i))
        i += 32 // bits
        col += 1
    qzeros = qzeros.astype(np.int32)
    return torch.from_numpy(qweight), torch.from_numpy(qzeros), scales


def write_gptq(
    src: Path,
    dst: Path,
    group_size: int = -1,
    desc_act: bool = True,
    scale_dtype: torch.dtype = torch.bfloat16,
    checkpoint_format: str = "gptq",
    in_config_json: bool = True,
    quantize_config: bool = True,
) -> dict[str, torch.Tensor]:
    """Copy checkpoint `src` to `dst` with its LLM linears in GPTQ form (one model.safetensors, the
    official int4's layout). Returns module -> the dequantized weight [N, K] it stands for."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors*", "*.xz"))
    sd = load_file(str(src / "model.safetensors"))
    cfg = json.loads((src / "config.json").read_text())
    qc = {"bits": 4, "group_size": group_size, "damp_percent": 0.01, "desc_act": desc_act, "static_groups": False,
          "sym": True, "true_sequential": True, "lm_head": False, "model_name_or_path": None,
          "model_file_base_name": None, "quant_method": "gptq", "checkpoint_format": checkpoint_format}  # fmt: skip
    out, dequantized = {}, {}
    modules = [f"llm.model.layers.{i}.{n}" for i in range(cfg["num_hidden_layers"]) for n in LINEARS]
    for m in modules:
        w = sd.pop(f"{m}.weight")
        K = w.shape[1]
        scale, zero, fake = gptq_quantizer(w, group_size, scale_dtype)
        g_idx = torch.tensor([i // (K if group_size == -1 else group_size) for i in range(K)], dtype=torch.int32)
        if desc_act and group_size == -1:  # AutoGPTQ: g_idx[invperm] of all zeros is all zeros
            g_idx = g_idx[torch.randperm(K, generator=torch.Generator().manual_seed(0))]
        qweight, qzeros, scales = autogptq_pack(fake, scale, zero, g_idx)
        if checkpoint_format == "gptq_v2":
            qzeros = qzeros + 0x11111111  # GPTQModel's v1 -> v2: the stored zero without the -1
        out.update({f"{m}.qweight": qweight, f"{m}.qzeros": qzeros, f"{m}.scales": scales.to(scale_dtype),
                    f"{m}.g_idx": g_idx})  # fmt: skip
        dequantized[m] = fake
    sd.update(out)
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    if in_config_json:
        cfg["quantization_config"] = dict(qc)
    (dst / "config.json").write_text(json.dumps(cfg, indent=2))
    if quantize_config:
        (dst / "quantize_config.json").write_text(json.dumps(qc))
    return dequantized


def with_weights(src: Path, dst: Path, weights: dict[str, torch.Tensor]) -> Path:
    """A float copy of checkpoint `src` with the given modules' weights replaced (the reference)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors*", "*.xz"))
    sd = load_file(str(src / "model.safetensors"))
    for m, w in weights.items():
        sd[f"{m}.weight"] = w.float().contiguous()  # float32: the reference must not round them again
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst
