"""Decoder A: Vocos (ConvNeXt backbone + ISTFT head), 16 kHz output.

``qfeats: (B, T, input_dim) -> sig: (B, T * hop_length)``.
ISTFT head: ``Linear(dim -> n_fft + 2)`` split into log-magnitudes and phases,
``mag = min(exp(x), 100)``, inverse real FFT of size ``n_fft``, periodic Hann window,
overlap-add with ``hop_length``, ``(n_fft - hop) / 2`` samples trimmed per side, divided by
the overlap-added squared window. Padded frames (``lengths``) are left out of both the
overlap-add and the envelope, so each item equals its solo output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .convnext import ConvNeXtBackbone
from .layers import in_float32, time_mask

__all__ = ["ISTFTHead", "Vocos"]


def overlap_add(frames: Tensor, hop: int, as_conv: bool = False) -> Tensor:
    """``(B, T, W)`` windowed frames -> ``(B, (T - 1) * hop + W)`` summed signal.

    Frames are cut into ``ceil(W / hop)`` hop-sized pieces; piece ``j`` of frame ``t`` lands at
    hop ``t + j``. ``as_conv`` computes the same sum as a transposed convolution with an
    identity kernel (slower, but it exports to ONNX with dynamic lengths)."""
    W = frames.shape[2]
    if as_conv:
        eye = torch.eye(int(W), dtype=frames.dtype, device=frames.device)[:, None, :]
        return F.conv_transpose1d(frames.transpose(1, 2), eye, stride=hop)[:, 0]
    pieces = -(-W // hop)
    frames = F.pad(frames, (0, pieces * hop - W))
    out = sum(F.pad(frames[:, :, j * hop : (j + 1) * hop], (0, 0, j, pieces - 1 - j)) for j in range(pieces))
    return out.flatten(1)[:, : out.shape[1] * hop - (pieces * hop - W)]


class ISTFTHead(nn.Module):
    """``(B, T, dim) -> (B, T * hop)`` through an inverse STFT ("same" padding).

    ``dft="fft"``: ``torch.fft``; ``dft="matmul"``: the same function with the inverse DFT as two
    real matrices and the overlap-add as a transposed convolution (slower; for exporters, as
    ONNX has no complex FFT)."""

    def __init__(self, dim: int, n_fft: int, hop_length: int, causal: bool = False, dft: str = "fft") -> None:
        super().__init__()
        if dft not in ("fft", "matmul"):
            raise ValueError(f"dft must be 'fft' or 'matmul', got {dft!r}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.causal = causal
        self.dft = dft
        self.proj = nn.Linear(dim, n_fft + 2)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def _irfft(self, mag: Tensor, phase: Tensor) -> Tensor:
        """Inverse real FFT of ``mag * exp(i phase)``: ``(B, T, n_fft/2+1) -> (B, T, n_fft)``."""
        if self.dft == "fft":
            spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
            return torch.fft.irfft(spec, self.n_fft, dim=-1, norm="backward")
        n = self.n_fft
        k = torch.arange(n // 2 + 1, dtype=torch.float64)
        angle = 2 * torch.pi * k[:, None] * torch.arange(n, dtype=torch.float64)[None, :] / n
        weight = torch.full((n // 2 + 1, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        weight[-1] = 1.0 if n % 2 == 0 else 2.0
        cos = (weight * torch.cos(angle) / n).to(mag)
        sin = (-weight * torch.sin(angle) / n).to(mag)
        sin[0] = 0.0  # imaginary parts of DC (and Nyquist, where sin vanishes) are ignored
        return (mag * torch.cos(phase)) @ cos + (mag * torch.sin(phase)) @ sin

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, dim) -> (B, T * hop)`` float32 (float32 throughout, also inside an autocast region);
        ``lengths (B,)``: valid frames."""
        return in_float32(self._synthesise, x, lengths)

    def _synthesise(self, x: Tensor, lengths: Tensor | None) -> Tensor:
        x = self.proj(x).float()
        log_mag, phase = x.chunk(2, dim=-1)
        mag = torch.exp(log_mag).clamp(max=100.0)
        frames = self._irfft(mag, phase)  # (B, T, n_fft)
        B, T, W = frames.shape
        if self.causal:
            return frames[:, :, -self.hop_length :].flatten(1)
        window = self.window.float()
        weights = torch.ones_like(frames[:, :, :1]) * window.square()
        frames = frames * window
        if lengths is not None:
            valid = time_mask(lengths, T)[:, :, None].to(frames.dtype)
            frames = frames * valid
            weights = weights * valid
        trim = (self.n_fft - self.hop_length) // 2
        as_conv = self.dft == "matmul"
        signal = overlap_add(frames, self.hop_length, as_conv)[:, trim : trim + T * self.hop_length]
        envelope = overlap_add(weights, self.hop_length, as_conv)[:, trim : trim + T * self.hop_length]
        if lengths is None:
            return signal / envelope
        return torch.where(envelope > 1e-11, signal / envelope.clamp(min=1e-11), torch.zeros_like(signal))


class Vocos(nn.Module):
    """Vocos decoder: ``qfeats (B, T, input_dim) -> sig (B, T * hop_length)`` float32 (16 kHz with the
    official configs). Keys match the official checkpoints."""

    def __init__(
        self,
        input_dim: int = 1024,
        num_layers: int = 8,
        dim: int = 512,
        ffn_dim: int = 1536,
        kernel_size: int = 7,
        layerscale_init: float | None = None,
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

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, input_dim) -> (B, T * hop)``."""
        return self.head(self.backbone(x, lengths), lengths)
