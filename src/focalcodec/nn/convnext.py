"""ConvNeXt backbone shared by the Vocos and WaveNeXt decoders.

``x: (B, T, input_dim) -> (B, T, dim)``: embedding conv, LayerNorm, ConvNeXt blocks
(depthwise conv, LayerNorm, pointwise MLP, layer scale ``gamma``, residual), final LayerNorm.
Non-causal convs use zero "same" padding; causal convs get ``kernel - 1`` frames of left
context (zeros or the first frame repeated at stream start, per ``pad_mode``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import CausalPad, conv_time_major, zero_padded_frames

__all__ = ["ConvNeXtBackbone"]


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block; ``(B, T, C) -> (B, T, C)``."""

    def __init__(
        self, dim: int, ffn_dim: int, kernel_size: int, layerscale_init: float, causal: bool, pad_mode: str
    ) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, ffn_dim)
        self.activation = nn.GELU()
        self.pwconv2 = nn.Linear(ffn_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layerscale_init)))
        self.causal = causal
        self.pad = CausalPad(kernel_size - 1 if causal else 0, pad_mode)

    def forward(
        self, x: Tensor, context: Tensor | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        residual = x
        new_context = None
        if self.causal:
            x, new_context = self.pad(x, context)
            y = conv_time_major(x, self.dwconv)
        else:
            x = zero_padded_frames(x, lengths)
            half = self.dwconv.kernel_size[0] // 2
            y = conv_time_major(x, self.dwconv, (half, half))
        y = self.pwconv2(self.activation(self.pwconv1(self.norm(y))))
        return residual + self.gamma * y, new_context


class ConvNeXtBackbone(nn.Module):
    """Embedding conv, LayerNorm, ``num_layers`` ConvNeXt blocks, LayerNorm."""

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
        self.embedding = nn.Conv1d(input_dim, dim, kernel_size)
        self.pad = CausalPad(kernel_size - 1 if causal else 0, pad_mode)
        self.input_norm = nn.LayerNorm(dim, eps=1e-6)
        self.layers = nn.ModuleList(
            ConvNeXtBlock(dim, ffn_dim, kernel_size, layerscale_init, causal, pad_mode) for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(
        self, x: Tensor, state: list[Tensor] | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        new_state: list[Tensor] = []
        if self.causal:
            x, ctx = self.pad(x, None if not state else state[0])
            new_state.append(ctx)
            x = conv_time_major(x, self.embedding)
        else:
            x = zero_padded_frames(x, lengths)
            half = self.embedding.kernel_size[0] // 2
            x = conv_time_major(x, self.embedding, (half, half))
        x = self.input_norm(x)
        for i, layer in enumerate(self.layers):
            x, ctx = layer(x, None if not state else state[i + 1], lengths)
            if ctx is not None:
                new_state.append(ctx)
        return self.output_norm(x), new_state
