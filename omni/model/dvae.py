"""ChatTTS DVAE (`tts.dvae.`): audio codes -> log-mel in the Vocos feature space (spec §5.4).

Owns: the module tree with the official key names (coef, downsample_conv, encoder, decoder,
out_conv, vq_layer.quantizer.rvqs.r.project_in/out) and the decode path. The encoder path exists
only so the checkpoint loads strictly; it is used for training, never at inference.
Does not own: sampling the codes (tts.py), the vocoder (vocos.py).

The grouped residual FSQ decode is hand-written: vector-quantize-pytorch is not a dependency, and
decoding an index is a few lines of fixed arithmetic (digits in base `level`, centre, scale per
residual level). Its buffers are non-persistent upstream, so none are registered here either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, cast

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DVAEDims:
    """The official (fixed-size) DVAE; not part of config.json."""

    num_mels: int = 100
    code_dim: int = 1024  # GFSQ dim: `groups` x 512, one 512 vector per mel frame
    decoder_in: int = 512
    bottleneck: int = 128
    hidden: int = 256
    layers: int = 12
    kernel: int = 7
    dilation: int = 2
    levels: tuple[int, ...] = (5, 5, 5, 5)
    groups: int = 2
    residuals: int = 2

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)  # 625; the TTS adds one EOS id on top

    @property
    def mel_frames_per_code(self) -> int:
        return self.groups  # group g of code frame t becomes mel frame groups*t + g


def fsq_digits(indices: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """indices [...] int -> digits [..., len(levels)] with digit_i = (idx // prod(levels[:i])) % levels[i]."""
    basis = torch.tensor([math.prod(levels[:i]) for i in range(len(levels))], device=indices.device)
    lv = torch.tensor(levels, device=indices.device)
    return (indices.long()[..., None] // basis) % lv


def fsq_codes(indices: torch.Tensor, levels: tuple[int, ...]) -> torch.Tensor:
    """indices [...] -> float codes [..., len(levels)] in [-1, 1]: (digit - L//2) / (L//2)."""
    half = torch.tensor([lv // 2 for lv in levels], device=indices.device)
    return (fsq_digits(indices, levels) - half) / half


class ResidualFSQ(nn.Module):
    """One group: `residuals` FSQ levels summed (level r scaled by (L-1)^-r), then project_out."""

    def __init__(self, dim: int, levels: tuple[int, ...]):
        super().__init__()
        self.levels = levels
        self.project_in = nn.Linear(dim, len(levels))  # encoder side only
        self.project_out = nn.Linear(len(levels), dim)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """indices [B, T, R] -> [B, T, dim]."""
        B, T, R = indices.shape
        codes = fsq_codes(indices, self.levels).to(self.project_out.weight.dtype)  # [B, T, R, d]
        lv = torch.tensor(self.levels, dtype=codes.dtype, device=codes.device)
        scales = torch.stack([(lv - 1) ** -float(r) for r in range(R)])  # [R, d]
        return self.project_out((codes * scales).sum(2))


class GroupedResidualFSQ(nn.Module):
    def __init__(self, dim: int, levels: tuple[int, ...], groups: int):
        super().__init__()
        self.rvqs = nn.ModuleList(ResidualFSQ(dim // groups, levels) for _ in range(groups))


class GFSQ(nn.Module):
    def __init__(self, dims: DVAEDims):
        super().__init__()
        self.dims = dims
        self.quantizer = GroupedResidualFSQ(dims.code_dim, dims.levels, dims.groups)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, G*R] (codebook q = group q // R, level q % R) -> features [B, code_dim, T]."""
        B, T, Q = codes.shape
        G, R = self.dims.groups, self.dims.residuals
        assert Q == G * R, f"{Q} codebooks, expected {G}x{R}"
        per_group = codes.view(B, T, G, R)
        rvqs = cast("Iterable[ResidualFSQ]", self.quantizer.rvqs)  # nn.ModuleList's stubs type items as Module
        feats = [rvq.decode(per_group[:, :, g]) for g, rvq in enumerate(rvqs)]
        return torch.cat(feats, -1).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise dilated conv -> LN -> MLP x4 -> layer scale `coef` -> residual (channels-first io)."""

    def __init__(self, dim: int, inter: int, kernel: int, dilation: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, inter)
        self.pwconv2 = nn.Linear(inter, dim)
        self.coef = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.coef
        return x + y.transpose(1, 2)


class DVAEDecoder(nn.Module):
    """conv_in (k3 -> GELU -> k3), ConvNeXt blocks, 1x1 conv_out; the official class for both paths."""

    def __init__(self, idim: int, odim: int, dims: DVAEDims):
        super().__init__()
        self.conv_in = nn.Sequential(
            nn.Conv1d(idim, dims.bottleneck, 3, 1, 1), nn.GELU(), nn.Conv1d(dims.bottleneck, dims.hidden, 3, 1, 1)
        )
        self.decoder_block = nn.ModuleList(
            ConvNeXtBlock(dims.hidden, 4 * dims.hidden, dims.kernel, dims.dilation) for _ in range(dims.layers)
        )
        self.conv_out = nn.Conv1d(dims.hidden, odim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.decoder_block:
            x = block(x)
        return self.conv_out(x)


class DVAE(nn.Module):
    def __init__(self, dims: DVAEDims = DVAEDims()):
        super().__init__()
        self.dims = dims
        self.coef = nn.Parameter(torch.ones(1, dims.num_mels, 1))
        self.downsample_conv = nn.Sequential(  # encoder side only
            nn.Conv1d(dims.num_mels, dims.decoder_in, 3, 1, 1),
            nn.GELU(),
            nn.Conv1d(dims.decoder_in, dims.decoder_in, 4, 2, 1),
            nn.GELU(),
        )
        self.encoder = DVAEDecoder(dims.decoder_in, dims.code_dim, dims)
        self.decoder = DVAEDecoder(dims.decoder_in, dims.decoder_in, dims)
        self.out_conv = nn.Conv1d(dims.decoder_in, dims.num_mels, 3, 1, 1, bias=False)
        self.vq_layer = GFSQ(dims)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, T, num_vq] int -> log-mel [B, num_mels, groups*T]."""
        B, T, Q = codes.shape
        feats = self.vq_layer.decode(codes)  # [B, G*512, T]
        G = self.dims.groups
        # Interleave the groups in time: mel frame G*t + g takes group g's vector of code frame t.
        feats = feats.view(B, G, feats.shape[1] // G, T).permute(0, 2, 3, 1).flatten(2)
        return self.out_conv(self.decoder(feats)) * self.coef
