"""Decoder B: WaveNeXt (ConvNeXt backbone + linear head), 24 kHz output.

``qfeats: (B, T, input_dim) -> sig: (B, T * hop_length)``: each frame is projected to
``hop_length`` samples, concatenated and clamped to [-1, 1]. Causal convs zero-pad at
the start (unlike every other causal module).
"""

from __future__ import annotations

from torch import Tensor, nn

from .convnext import ConvNeXtBackbone
from .layers import in_float32

__all__ = ["WaveNeXt"]


class LinearHead(nn.Module):
    """``(B, T, dim) -> (B, T * hop)`` clamped to [-1, 1]."""

    def __init__(self, dim: int, hop_length: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hop_length)

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, T, dim) -> (B, T * hop)`` in [-1, 1] (float32 under autocast)."""
        B, T, _ = x.shape
        return in_float32(self.proj, x).reshape(B, -1).clamp(-1.0, 1.0)  # float32 even under autocast


class WaveNeXt(nn.Module):
    """WaveNeXt decoder: ``qfeats (B, T, input_dim) -> sig (B, T * hop_length)`` float32 in [-1, 1]
    (24 kHz with the official configs). Keys match the official checkpoints."""

    def __init__(
        self,
        input_dim: int = 1024,
        num_layers: int = 8,
        dim: int = 1024,
        ffn_dim: int = 2048,
        kernel_size: int = 7,
        layerscale_init: float | None = None,
        hop_length: int = 480,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.causal = causal
        self.hop_length = hop_length
        self.upsample_factor = hop_length
        self.backbone = ConvNeXtBackbone(
            input_dim, dim, ffn_dim, num_layers, kernel_size, layerscale_init, causal, "zeros"
        )
        self.head = LinearHead(dim, hop_length)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``(B, T, input_dim) -> (B, T * hop)``."""
        return self.head(self.backbone(x, lengths))
