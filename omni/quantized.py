"""Quantized LLM weights at load: the official GPTQ int4 checkpoint, or `--quantize int8|int4` of a
float one, each tensor turned into its `QuantLinear` as its shard is read.

Owns: `WeightPlan` (which keys the checkpoint must hold, which tensors it takes from the loader,
when a module is complete, the one log line saying what runs) and `describe` (the same facts from
the config alone, for a server whose model loads elsewhere). Does not own: reading shards, strict
key errors (omni.loader), the format (omni.gptq), the module and kernels (omni.model.quant).

Memory: a float weight is quantized the moment it is read and dropped, so the full-precision LLM
never exists; GPTQ tensors wait only until their module's four (or five) are in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import torch
from torch import nn

from . import gptq
from .model.quant import FALLBACK, MODES, QuantLinear, QuantWeight, choose_kernel, fits_kernel, kernels, quantize

log = logging.getLogger("omni.loader")


@dataclass
class WeightPlan:
    """How one load turns checkpoint tensors into the LLM's quantized linears (`None` mode: float)."""

    mode: str | None  # "int8", "int4" (--quantize), "gptq" (the checkpoint's), None (float)
    dtype: torch.dtype
    device: torch.device
    modules: list[str] = field(default_factory=list)
    gptq: gptq.GPTQConfig | None = None
    kernel: str | None = None  # forced (tests, a broken kernel); default: choose_kernel
    _parts: dict[str, dict] = field(default_factory=dict)  # modules whose tensors are partly in
    _has_bias: set[str] = field(default_factory=set)
    _module_set: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._module_set = set(self.modules)

    @classmethod
    def of(cls, ckpt: Path, raw_config: dict, num_layers: int, dtype, device, quantize_mode: str | None, kernel=None):
        """Raises gptq.GPTQError for an unsupported GPTQ config, ValueError for a bad mode."""
        g = gptq.read_config(ckpt, raw_config)
        if quantize_mode is not None and quantize_mode not in MODES:
            raise ValueError(f"quantize must be one of {', '.join(MODES)}, got {quantize_mode!r}")
        if g is not None and quantize_mode is not None:
            raise ValueError(
                f"{ckpt} is already quantized ({g.describe()}): load it without --quantize {quantize_mode}"
            )
        mode = "gptq" if g is not None else quantize_mode
        modules = gptq.quantized_modules(num_layers) if mode else []
        return cls(mode, dtype, torch.device(device), modules, g, kernel)

    def expected(self, float_shapes: dict) -> dict:
        """The key -> shape map the checkpoint must hold (and which quantized modules have a bias)."""
        self._has_bias = {m for m in self.modules if f"{m}.bias" in float_shapes}
        if self.gptq is None:
            return float_shapes
        return gptq.expected_shapes(float_shapes, self.modules, self.gptq)

    def dtype_problems(self, dtypes: dict[str, str]) -> list[str]:
        return gptq.dtype_problems(dtypes, self.modules) if self.gptq is not None else []

    def owner(self, key: str) -> str | None:
        """The quantized module a checkpoint key belongs to, if any."""
        if not self.mode or not key.startswith("llm.model.layers."):
            return None
        module = key.rpartition(".")[0]
        return module if module in self._module_set else None

    def take(self, net: nn.Module, key: str, tensor: torch.Tensor) -> bool:
        """Consume `key` if it belongs to a quantized module (building the module once its tensors
        are all in); False: the loader assigns it as a float tensor."""
        module = self.owner(key)
        if module is None:
            return False
        parts = self._parts.setdefault(module, {})
        leaf = key.rpartition(".")[2]
        if leaf == "weight":  # --quantize: round now, drop the float weight
            parts["qw"] = quantize(tensor.to(self.device), self.mode or "")
        else:  # a copy: a tensor read from a shard keeps the whole file mapped
            parts[leaf] = tensor.clone()
        want: set[str] = {"qw"} if self.gptq is None else set(gptq.PARTS)
        if module in self._has_bias:
            want.add("bias")
        if want <= parts.keys():
            self._install(net, module, self._parts.pop(module))
        return True

    def _install(self, net: nn.Module, module: str, parts: dict) -> None:
        qw: QuantWeight = parts["qw"] if self.gptq is None else gptq.unpack(module, parts, self.gptq)
        kernel = self.kernel or choose_kernel(qw.bits, self.device, self.dtype)
        if not fits_kernel(kernel, qw):
            kernel = FALLBACK
        parent, _, name = module.rpartition(".")
        setattr(
            net.get_submodule(parent), name, QuantLinear.build(qw, parts.get("bias"), kernel, self.dtype, self.device)
        )

    def finish(self, net: nn.Module) -> dict:
        """Check every quantized module was built; log the one line; -> `weights_info`."""
        assert not self._parts, f"quantized modules left incomplete: {sorted(self._parts)[:5]}"
        info = weights_info(net, self.dtype, self.mode, self.gptq)
        if self.mode:
            n = len(self.modules)
            log.info(
                "LLM linears: %s, kernel %s, %s activations (%d linears)",
                info["quantization"],
                info["kernel"],
                info["dtype"],
                n,
            )
        return info


def quantize_modules(net: nn.Module, mode: str, dtype: torch.dtype, device, kernel: str | None = None) -> dict:
    """Quantize the LLM linears of a float model already built (benches with random weights),
    one module at a time: its float weight is dropped as its QuantLinear is installed."""
    layers = len(cast(nn.ModuleList, net.get_submodule("llm.model.layers")))
    plan = WeightPlan(mode, dtype, torch.device(device), gptq.quantized_modules(layers), None, kernel)
    linears = {m: cast(nn.Linear, net.get_submodule(m)) for m in plan.modules}
    plan._has_bias = {m for m, lin in linears.items() if lin.bias is not None}
    for m in plan.modules:
        lin = linears.pop(m)
        plan.take(net, f"{m}.weight", lin.weight.detach())
        if lin.bias is not None:
            plan.take(net, f"{m}.bias", lin.bias.detach())
        del lin
    return plan.finish(net)


def weights_info(net: nn.Module, dtype: torch.dtype, mode: str | None, g: gptq.GPTQConfig | None) -> dict:
    """{"dtype", "quantization", "kernel"}: what a loaded model runs."""
    from .model.quant import quantized_linears

    linears = quantized_linears(net)
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "quantization": _quantization(mode, g),
        "kernel": kernels(linears),
    }


def describe(ckpt: Path, raw_config: dict, dtype: torch.dtype, device, quantize_mode: str | None) -> dict:
    """`weights_info` from the config alone (no weights read): what a load of this checkpoint will
    run, for the startup line and /healthz of a server whose model loads in other processes."""
    g = gptq.read_config(ckpt, raw_config)
    mode = "gptq" if g is not None else quantize_mode
    kernel = "dense"
    if mode:
        kernel = choose_kernel(8 if mode == "int8" else 4, torch.device(device), dtype)
    return {"dtype": str(dtype).removeprefix("torch."), "quantization": _quantization(mode, g), "kernel": kernel}


def _quantization(mode: str | None, g: gptq.GPTQConfig | None) -> str:
    if g is not None:
        return f"{g.describe()} (checkpoint)"
    if mode == "int8":
        return "int8 per-channel (--quantize, round-to-nearest)"
    if mode == "int4":
        return "int4 g128 (--quantize, round-to-nearest)"
    return "none"
