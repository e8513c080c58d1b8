"""Small building blocks shared by every stage.

- :func:`time_mask` / :func:`zero_padded_frames`: the one masking helper used by every
  layer that mixes time, so that padded batch items behave exactly as if run alone.
- :class:`CausalPad`: the one left-context helper used by every causal convolution. It
  prepends the ``k - 1`` frames of context carried over from the previous call (or a
  replicate/zero padding at stream start) and returns the context for the next call.
- :class:`Snake`, :class:`DynamicTanh`, :class:`FeedForward`: activations and MLPs.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "CausalPad",
    "DynamicTanh",
    "FeedForward",
    "Snake",
    "time_mask",
    "zero_padded_frames",
]


def time_mask(lengths: Tensor, size: int) -> Tensor:
    """Boolean mask of valid time steps.

    ``lengths: (B,) int -> mask: (B, size) bool`` with ``mask[b, t] = t < lengths[b]``.
    """
    steps = torch.arange(size, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def zero_padded_frames(x: Tensor, lengths: Optional[Tensor], time_dim: int = 1) -> Tensor:
    """Zero every time step at or past ``lengths[b]`` (no-op when ``lengths`` is None).

    ``x: (B, T, C)`` with ``time_dim=1`` or ``(B, C, T)`` with ``time_dim=2``.
    """
    if lengths is None:
        return x
    mask = time_mask(lengths, x.shape[time_dim])
    mask = mask[:, :, None] if time_dim == 1 else mask[:, None, :]
    return x.masked_fill(~mask, 0.0)


class CausalPad(nn.Module):
    """Left context for a causal convolution, carried across calls.

    ``x: (B, C, T)``, ``context: (B, C, k - 1)`` or None
    ``-> (B, C, k - 1 + T)`` input for a convolution without padding, and the new context
    (the last ``k - 1`` input steps). At stream start (``context is None``) the context is
    the first step repeated (``mode="replicate"``) or zeros (``mode="zeros"``).
    For ``k == 1`` the context is an empty ``(B, C, 0)`` tensor.
    """

    def __init__(self, size: int, mode: str = "replicate") -> None:
        super().__init__()
        if mode not in ("replicate", "zeros"):
            raise ValueError(f"unknown causal padding mode {mode!r}")
        self.size = size
        self.mode = mode

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if self.size == 0:
            return x, x[:, :, :0]
        if context is None:
            if self.mode == "replicate":
                context = x[:, :, :1].expand(-1, -1, self.size)
            else:
                context = x.new_zeros(x.shape[0], x.shape[1], self.size)
        x = torch.cat([context.to(x.dtype), x], dim=2)
        return x, x[:, :, -self.size :]

    def extra_repr(self) -> str:
        return f"size={self.size}, mode={self.mode!r}"


class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha x) / (alpha + 1e-9)`` with per-channel alpha.

    ``x: (B, T, C) -> (B, T, C)``; ``alpha`` is stored as ``(C, 1)`` like the checkpoints.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[:, 0]
        return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x) ** 2


class DynamicTanh(nn.Module):
    """``tanh(alpha x)`` with one learnable scalar, used instead of LayerNorm by causal models."""

    def __init__(self, init: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.alpha * x)


class FeedForward(nn.Module):
    """``Linear(dim -> ffn_dim) -> GELU -> Linear(ffn_dim -> dim)``; ``(..., dim) -> (..., dim)``."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_proj = nn.Linear(dim, ffn_dim)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(ffn_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.activation(self.in_proj(x)))
        return self.dropout(self.out_proj(x))
