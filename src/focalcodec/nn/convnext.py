"""ConvNeXt backbone shared by the Vocos and WaveNeXt decoders.

``x: (B, T, input_dim) -> (B, T, dim)``: embedding conv, LayerNorm, ConvNeXt blocks
(depthwise conv, LayerNorm, pointwise MLP, layer scale ``gamma``, residual), final LayerNorm.
Non-causal convs use zero "same" padding; causal convs get ``kernel - 1`` frames of left
context (zeros or the first frame repeated at the start, per ``pad_mode``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import Conv

__all__ = ["ConvNeXtBackbone"]


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block; ``(B, T, C) -> (B, T, C)``."""

    def __init__(
        self, dim: int, ffn_dim: int, kernel_size: int, layerscale_init: float, causal: bool, pad_mode: str
    ) -> None:
        super().__init__()
        padding = "causal" if causal else "same"
        self.dwconv = Conv(dim, dim, kernel_size, groups=dim, padding=padding, start=pad_mode)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, ffn_dim)
        self.activation = nn.GELU()
        self.pwconv2 = nn.Linear(ffn_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layerscale_init)))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C) -> (B, T, C)``; ``lengths (B,)``: valid frames per item (a padded item gets what it gets
        alone)."""
        y = self.pwconv2(self.activation(self.pwconv1(self.norm(self.dwconv(x, lengths)))))
        return x + self.gamma * y


class ConvNeXtBackbone(nn.Module):
    """Embedding conv, LayerNorm, ``num_layers`` ConvNeXt blocks, LayerNorm: ``(B, T, input_dim) -> (B, T, dim)``."""

    def __init__(
        self,
        input_dim: int,
        dim: int,
        ffn_dim: int,
        num_layers: int,
        kernel_size: int,
        layerscale_init: float | None,
        causal: bool,
        pad_mode: str,
    ) -> None:
        super().__init__()
        self.causal = causal
        if layerscale_init is None:
            layerscale_init = 1.0 / num_layers
        self.embedding = Conv(input_dim, dim, kernel_size, padding="causal" if causal else "same", start=pad_mode)
        self.input_norm = nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList(
            ConvNeXtBlock(dim, ffn_dim, kernel_size, layerscale_init, causal, pad_mode) for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, input_dim) -> (B, T, dim)``; ``lengths (B,)``: valid frames per item (a padded item gets what
        it gets alone)."""
        x = self.input_norm(self.embedding(x, lengths))
        for layer in self.layers:
            x = layer(x, lengths)
        return self.output_norm(x)
