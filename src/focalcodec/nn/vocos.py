"""Decoder A: Vocos (ConvNeXt backbone + ISTFT head), 16 kHz output.

``qfeats: (B, T, input_dim) -> sig: (B, T * hop_length)``.
ISTFT head: ``Linear(dim -> n_fft + 2)`` split into log-magnitudes and phases,
``mag = min(exp(x), 100)``, inverse real FFT of size ``n_fft``, periodic Hann window,
overlap-add with ``hop_length``, ``(n_fft - hop) / 2`` samples trimmed per side, divided by
the overlap-added squared window. Padded frames (``lengths``) are left out of both the
overlap-add and the envelope, so each item equals its solo output.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convnext import ConvNeXtBackbone
from .layers import time_mask

__all__ = ["ISTFTHead", "Vocos"]


def overlap_add(frames: Tensor, hop: int) -> Tensor:
    """``(B, W, T)`` windowed frames -> ``(B, (T - 1) * hop + W)`` summed signal."""
    B, W, T = frames.shape
    out = F.fold(frames, output_size=(1, (T - 1) * hop + W), kernel_size=(1, W), stride=(1, hop))
    return out.reshape(B, -1)


class ISTFTHead(nn.Module):
    """``(B, T, dim) -> (B, T * hop)`` through an inverse STFT ("same" padding)."""

    def __init__(self, dim: int, n_fft: int, hop_length: int, causal: bool = False) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.causal = causal
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        x = self.proj(x).transpose(1, 2).float()
        log_mag, phase = x.chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=100.0)
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        frames = torch.fft.irfft(spec, self.n_fft, dim=1, norm="backward")
        B, W, T = frames.shape
        if self.causal:
            return frames[:, -self.hop_length :, :].transpose(1, 2).reshape(B, T * self.hop_length)
        window = self.window.float()[None, :, None]
        weights = window.square().expand(B, W, T)
        frames = frames * window
        if lengths is not None:
            valid = time_mask(lengths, T)[:, None, :].to(frames.dtype)
            frames = frames * valid
            weights = weights * valid
        trim = (self.n_fft - self.hop_length) // 2
        signal = overlap_add(frames, self.hop_length)[:, trim : trim + T * self.hop_length]
        envelope = overlap_add(weights, self.hop_length)[:, trim : trim + T * self.hop_length]
        if lengths is None:
            return signal / envelope
        return torch.where(envelope > 1e-11, signal / envelope.clamp(min=1e-11), torch.zeros_like(signal))


class Vocos(nn.Module):
    """Vocos decoder. Keys match the official checkpoints."""

    def __init__(
        self,
        input_dim: int = 1024,
        num_layers: int = 8,
        dim: int = 512,
        ffn_dim: int = 1536,
        kernel_size: int = 7,
        layerscale_init: Optional[float] = None,
        n_fft: int = 1024,
        hop_length: int = 320,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.hop_length = hop_length
        self.upsample_factor = hop_length
        self.backbone = ConvNeXtBackbone(
            input_dim, dim, ffn_dim, num_layers, kernel_size, layerscale_init, causal, "replicate"
        )
        self.head = ISTFTHead(dim, n_fft, hop_length, causal)

    def forward(
        self, x: Tensor, state: Optional[List[Tensor]] = None, lengths: Optional[Tensor] = None
    ) -> Tuple[Tensor, List[Tensor]]:
        """``(B, T, input_dim) -> (B, T * hop)`` and the new state (causal)."""
        x, new_state = self.backbone(x, state, lengths)
        return self.head(x, lengths), new_state
