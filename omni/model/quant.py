"""Weight-only quantized linears of the Qwen2 LLM: int8 per output channel, int4 in groups.

Owns: `QuantWeight` (the plain form every source produces: round-to-nearest of a float weight, or
a GPTQ checkpoint's unpacked values; `dequantize` is its float meaning), `QuantLinear` (one linear
holding that weight packed for the device's kernel, or plain for the dequantize-per-call fallback),
the kernel choice (once per bits and device, probed against the fallback) and `LLM_LINEARS`, the
seven linears per layer that are quantized. Does not own: checkpoint formats (omni.gptq), when to
quantize (omni.quantized, at load).

int4 follows torch's tinygemm convention: w = (q - 8) * scale + zero, q in 0..15, scale and zero
per group of `group` input columns in the float domain. The kernels: CPU `_weight_int4pack_mm_for_cpu`,
CUDA `_weight_int4pack_mm` (sm80+), `_weight_int8pack_mm`; the int4 ones take bf16 activations
only (and their fp32 paths are slow), so activations are cast to bf16 around them. Packed layouts
are device specific and never saved. No forward path syncs with the host: CUDA graphs capture it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("omni.quant")

LLM_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
MODES = ("int8", "int4")
INT4_GROUP = 128  # --quantize int4: the usual group; divides every Qwen2 and tiny-config dim
KERNEL_GROUPS = (256, 128, 64, 32)  # tinygemm's group sizes
# Beyond this many rows int8pack loses to converting the weight to bf16 for one dense GEMM: its cost
# grows with every row (CUDA: a warp per output; CPU, 1 thread, 18944x3584: 11 ms at 1 row, 73 at
# 16, 500 at 128, where bf16 takes 21, 37, 132). The CPU int4 kernel grows the same way (8, 47,
# 310 ms) but has no cheap dequantized form, so it runs every size: quantized CPU weights speed up
# one session's decode and cost time in batches and prefill.
INT8_KERNEL_MAX_ROWS = {"cpu": 8, "cuda": 16}
FALLBACK = "dequant"


@dataclass
class QuantWeight:
    """A quantized [N, K] weight in plain form.

    bits 8: q int8 [N, K] in -127..127, scale [N] (w = q * scale), zero None, group K.
    bits 4: q uint8 [N, K] in 0..15, scale and zero [K/group, N] (w = (q - 8) * scale + zero).
    """

    bits: int
    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None
    group: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape[0], self.q.shape[1]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight [N, K] these values stand for (computed in float32, then cast)."""
        if self.bits == 8:
            return (self.q.float() * self.scale.float()[:, None]).to(dtype)
        assert self.zero is not None
        N, K = self.shape
        q = self.q.float().view(N, K // self.group, self.group)
        w = (q - 8) * self.scale.float().t()[..., None] + self.zero.float().t()[..., None]
        return w.view(N, K).to(dtype)

    def regrouped(self, group: int) -> QuantWeight:
        """The same values with scales repeated into groups of `group` (which divides this one):
        exact, and how a per-channel or large-group weight meets tinygemm's 32..256."""
        if self.bits == 8 or group == self.group:
            return self
        assert self.group % group == 0 and self.zero is not None
        r = self.group // group
        return QuantWeight(4, self.q, self.scale.repeat_interleave(r, 0), self.zero.repeat_interleave(r, 0), group)


def rtn_int8(w: torch.Tensor) -> QuantWeight:
    """Round-to-nearest, symmetric per output channel: scale = amax / 127."""
    w = w.float()
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12)  # an all-zero row: any scale, q = 0
    q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return QuantWeight(8, q, scale, None, w.shape[1])


def rtn_int4(w: torch.Tensor, group: int = INT4_GROUP) -> QuantWeight:
    """Round-to-nearest, asymmetric per group of `group` input columns (min..max onto 0..15)."""
    N, K = w.shape
    if K % group:
        raise ValueError(f"int4 groups of {group} do not divide the input size {K}")
    wg = w.float().view(N, K // group, group)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scale = ((hi - lo) / 15).clamp_min(1e-12)
    q = torch.round((wg - lo[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.uint8).view(N, K)
    return QuantWeight(4, q, scale.t().contiguous(), (lo + 8 * scale).t().contiguous(), group)


def quantize(w: torch.Tensor, mode: str) -> QuantWeight:
    if mode == "int8":
        return rtn_int8(w)
    if mode == "int4":
        return rtn_int4(w)
    raise ValueError(f"quantize must be one of {', '.join(MODES)}, got {mode!r}")


# ---- kernels ---------------------------------------------------------------------------------------
def _kernel_group(qw: QuantWeight) -> int | None:
    return next((g for g in KERNEL_GROUPS if qw.group % g == 0), None)


def fits_kernel(kernel: str, qw: QuantWeight) -> bool:
    """Whether one weight's shape suits `kernel` (else that linear takes the fallback)."""
    N, K = qw.shape
    if kernel == "int4pack-cpu":
        return _kernel_group(qw) is not None and N % 16 == 0
    if kernel == "int4pack-cuda":
        return _kernel_group(qw) is not None and N % 8 == 0 and K % 128 == 0
    return kernel in ("int8pack", FALLBACK)


def _candidate(bits: int, device: torch.device) -> str:
    if bits == 8:
        return "int8pack" if device.type in ("cpu", "cuda") and hasattr(torch, "_weight_int8pack_mm") else FALLBACK
    if device.type == "cpu" and hasattr(torch, "_weight_int4pack_mm_for_cpu"):
        return "int4pack-cpu"
    if device.type == "cuda" and hasattr(torch, "_weight_int4pack_mm"):
        cuda12 = torch.version.hip is not None or int((torch.version.cuda or "0").split(".")[0]) >= 12
        if cuda12 and torch.cuda.get_device_capability(device) >= (8, 0):  # tinygemm is built for sm80+ only
            return "int4pack-cuda"
    return FALLBACK


_chosen: dict[tuple[int, str, torch.dtype], str] = {}


def choose_kernel(bits: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> str:
    """The kernel for `bits` on `device` with `dtype` activations, probed once per process on a
    small weight against the fallback: a kernel that raises or disagrees is not used (a torch build
    without it, an old GPU)."""
    device = torch.device(device)
    key = (bits, str(device), dtype)
    if key not in _chosen:
        kernel = _candidate(bits, device)
        if kernel != FALLBACK:
            try:
                _probe(kernel, bits, device, dtype)
            except Exception as e:  # noqa: BLE001 - any failure means: not on this device
                log.warning("%s kernel unusable on %s (%s): int%d linears dequantize per call", kernel, device, e, bits)
                kernel = FALLBACK
        _chosen[key] = kernel
    return _chosen[key]


def _probe(kernel: str, bits: int, device: torch.device, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(32, 256, generator=g) * 0.02
    qw = rtn_int8(w) if bits == 8 else rtn_int4(w, 128)
    x = torch.randn(3, 256, generator=g).to(device=device, dtype=dtype)
    got = QuantLinear.build(qw, None, kernel, dtype, device)(x).float().cpu()
    want = x.float().cpu() @ qw.dequantize().t()
    err = float((got - want).abs().max() / want.abs().max())
    if not err < 2e-2:
        raise RuntimeError(f"relative error {err:.3g} against the dequantized weight")


# ---- the module ------------------------------------------------------------------------------------
class QuantLinear(nn.Module):
    """A weight-only quantized `nn.Linear` (same call, same bias), built by `QuantLinear.build`.

    Buffers by kernel: int4pack-*: `packed` (the kernel's layout) and `scale_zero` [K/g, N, 2] bf16;
    int8pack and int8 fallback: `q` int8 [N, K] and `scale` [N]; int4 fallback: `q` uint8 [N, K/2]
    (two values a byte, low nibble first), `scale` and `zero` [K/g, N].
    """

    packed: torch.Tensor
    scale_zero: torch.Tensor
    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bits: int, group: int, kernel: str, dtype: torch.dtype):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group, self.kernel = bits, group, kernel
        self.dtype = dtype  # the dtype of the kernel's activations and of the bias
        self.bias: torch.Tensor | None = None

    @classmethod
    def build(cls, qw: QuantWeight, bias: torch.Tensor | None, kernel: str, dtype: torch.dtype, device) -> QuantLinear:
        """`qw` packed for `kernel` on `device` (`fits_kernel` checked by the caller); `dtype`: the
        model's activations, which the fallback computes in (the kernels use bf16)."""
        device = torch.device(device)
        N, K = qw.shape
        if kernel.startswith("int4pack"):
            qw = qw.regrouped(_kernel_group(qw) or qw.group)
        compute = (
            torch.bfloat16
            if kernel.startswith("int4pack") or (kernel == "int8pack" and device.type == "cpu")
            else dtype
        )
        m = cls(K, N, qw.bits, qw.group, kernel, compute)
        if kernel.startswith("int4pack"):
            assert qw.zero is not None
            sz = torch.stack([qw.scale, qw.zero], -1).to(device=device, dtype=torch.bfloat16).contiguous()
            m.register_buffer("packed", _pack_int4(qw.q.to(device), kernel))
            m.register_buffer("scale_zero", sz)
        elif qw.bits == 8:
            m.register_buffer("q", qw.q.to(device))
            m.register_buffer("scale", qw.scale.to(device=device, dtype=compute))
        else:
            assert qw.zero is not None
            q = qw.q.to(device)
            m.register_buffer("q", (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous())
            m.register_buffer("scale", qw.scale.to(device=device, dtype=dtype))
            m.register_buffer("zero", qw.zero.to(device=device, dtype=dtype))
        if bias is not None:
            m.bias = nn.Parameter(bias.to(device=device, dtype=dtype), requires_grad=False)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, K = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, K)
        y = self._mm(x2).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.view(*lead, self.out_features)

    def _mm(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        if k == "int4pack-cpu":
            return torch._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, self.group, self.scale_zero)
        if k == "int4pack-cuda":
            return torch._weight_int4pack_mm(x.to(torch.bfloat16), self.packed, self.group, self.scale_zero)
        if self.bits == 8:
            xc = x.to(self.dtype)
            if k == "int8pack" and x.shape[0] <= INT8_KERNEL_MAX_ROWS.get(x.device.type, 16):  # a shape: graph-safe
                return torch._weight_int8pack_mm(xc, self.q, self.scale)
            return F.linear(xc, self.q.to(self.dtype)) * self.scale
        return F.linear(x, self.weight_float(x.dtype))

    def weight_float(self, dtype: torch.dtype) -> torch.Tensor:
        """The int4 fallback's weight, dequantized for one call."""
        N, K, g = self.out_features, self.in_features, self.group
        q = torch.stack([self.q & 15, self.q >> 4], -1).view(N, K // g, g).to(dtype)
        scale, zero = self.scale.to(dtype).t()[..., None], self.zero.to(dtype).t()[..., None]
        return torch.addcmul(zero - 8 * scale, q, scale).reshape(N, K)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int{self.bits}, group={self.group}, kernel={self.kernel}, bias={self.bias is not None}"
        )


def _pack_int4(q: torch.Tensor, kernel: str) -> torch.Tensor:
    """q uint8 [N, K] in 0..15 -> the kernel's packed layout (on q's device)."""
    if kernel == "int4pack-cpu":
        return torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
    # CUDA takes bytes of two values, the first in the high nibble (torchao's tinygemm packing)
    return torch._convert_weight_to_int4pack(((q[:, 0::2] << 4) | q[:, 1::2]).contiguous(), 8)


def quantized_linears(net: nn.Module) -> list[QuantLinear]:
    return [m for m in net.modules() if isinstance(m, QuantLinear)]


def kernels(linears: list[QuantLinear]) -> str:
    """The kernel the linears run ("int4pack-cpu"; "int4pack-cpu (12), dequant (2)" when shapes
    sent some to the fallback; "dense" for none)."""
    if not linears:
        return "dense"
    counts: dict[str, int] = {}
    for m in linears:
        counts[m.kernel] = counts.get(m.kernel, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
