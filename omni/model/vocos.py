"""Vocos 0.1.0 vocoder as MiniCPM-o 2.6 builds it: log-mel [B, 100, F] -> 24 kHz waveform (spec §5.4).

Owns: the module tree whose state dict is exactly `assets/Vocos.pt` (feature extractor buffers,
ConvNeXt backbone, ISTFT head) and `decode`. Does not own: loading the file (omni.loader),
the mel analysis (`feature_extractor` only carries its buffers so the file loads strictly; the
DVAE produces the features directly).

The ISTFT is hand-written: Vocos uses "same" padding (trim (n_fft - hop)/2 per side, divide by the
summed squared window), which `torch.istft` cannot express (with center=False its window-envelope
check fails at the edges), and we do not depend on the vocos package or torchaudio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VocosDims:
    """The official `initialize_vocos` values (not in config.json)."""

    num_mels: int = 100
    dim: int = 512
    intermediate: int = 1536
    layers: int = 8
    kernel: int = 7
    n_fft: int = 1024
    hop_length: int = 256
    sample_rate_hz: int = 24000


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate_hz: int) -> torch.Tensor:
    """[n_freqs, n_mels] HTK-scale triangular filters, 0 Hz .. Nyquist, no normalisation
    (torchaudio MelSpectrogram defaults); only so a freshly built Vocos has the true buffer values."""
    hz_to_mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)
    freqs = torch.linspace(0, sample_rate_hz // 2, n_freqs)
    m_pts = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate_hz / 2), n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(n_fft))


class _MelScale(nn.Module):
    def __init__(self, d: VocosDims):
        super().__init__()
        self.register_buffer("fb", mel_filterbank(d.n_fft // 2 + 1, d.num_mels, d.sample_rate_hz))


class _MelSpectrogram(nn.Module):
    def __init__(self, d: VocosDims):
        super().__init__()
        self.spectrogram = _Spectrogram(d.n_fft)
        self.mel_scale = _MelScale(d)


class MelSpectrogramFeatures(nn.Module):
    """Buffers only (persistent, as in torchaudio), kept for strict loading."""

    def __init__(self, d: VocosDims):
        super().__init__()
        self.mel_spec = _MelSpectrogram(d)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, inter: int, kernel: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, inter)
        self.pwconv2 = nn.Linear(inter, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x).transpose(1, 2))
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.transpose(1, 2)


class VocosBackbone(nn.Module):
    def __init__(self, d: VocosDims):
        super().__init__()
        self.embed = nn.Conv1d(d.num_mels, d.dim, d.kernel, padding=d.kernel // 2)
        self.norm = nn.LayerNorm(d.dim, eps=1e-6)
        self.convnext = nn.ModuleList(ConvNeXtBlock(d.dim, d.intermediate, d.kernel) for _ in range(d.layers))
        self.final_layer_norm = nn.LayerNorm(d.dim, eps=1e-6)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, num_mels, F] -> [B, F, dim]."""
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.convnext:
            x = block(x)
        return self.final_layer_norm(x.transpose(1, 2))


class ISTFT(nn.Module):
    window: torch.Tensor  # [n_fft] Hann buffer

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec [B, n_fft/2+1, F] complex -> [B, F*hop] ("same" padding)."""
        B, N, T = spec.shape
        pad = (self.n_fft - self.hop_length) // 2
        frames = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward") * self.window[None, :, None]
        total = (T - 1) * self.hop_length + self.n_fft
        fold = lambda x: F.fold(x, output_size=(1, total), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))[
            :, 0, 0, pad:-pad
        ]
        y = fold(frames)
        envelope = fold(self.window.square()[None, :, None].expand(1, -1, T))[0]
        assert (envelope > 1e-11).all(), "window envelope vanished: NOLA violated"
        return y / envelope


class ISTFTHead(nn.Module):
    def __init__(self, d: VocosDims):
        super().__init__()
        self.out = nn.Linear(d.dim, d.n_fft + 2)
        self.istft = ISTFT(d.n_fft, d.hop_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, F, dim] -> wav [B, F*hop]. Log-magnitude (exp, clipped at 100) and phase halves."""
        log_mag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = torch.clip(torch.exp(log_mag), max=1e2)
        return self.istft(mag * (torch.cos(phase) + 1j * torch.sin(phase)))


class Vocos(nn.Module):
    def __init__(self, dims: VocosDims = VocosDims()):
        super().__init__()
        self.dims = dims
        self.feature_extractor = MelSpectrogramFeatures(dims)
        self.backbone = VocosBackbone(dims)
        self.head = ISTFTHead(dims)

    def check_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Raise if a state dict's shapes contradict the hyper-parameters (hop is not checkable)."""
        d = self.dims
        want = {
            "backbone.embed.weight": (d.dim, d.num_mels, d.kernel),
            "backbone.convnext.0.pwconv1.weight": (d.intermediate, d.dim),
            "head.out.weight": (d.n_fft + 2, d.dim),
            "head.istft.window": (d.n_fft,),
        }
        bad = {k: (tuple(state[k].shape), v) for k, v in want.items() if k not in state or tuple(state[k].shape) != v}
        layers = len({k.split(".")[2] for k in state if k.startswith("backbone.convnext.")})
        if bad or layers != d.layers:
            raise ValueError(f"Vocos state dict does not match {d}: {bad}, {layers} ConvNeXt layers")

    @torch.inference_mode()
    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [B, num_mels, F] -> wav float32 [B, F*hop] at `dims.sample_rate_hz`."""
        B, M, T = mel.shape
        assert M == self.dims.num_mels, f"{M} mel bins, expected {self.dims.num_mels}"
        return self.head(self.backbone(mel.float()))
