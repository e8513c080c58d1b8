"""Small building blocks shared by every stage.

- :func:`time_mask` / :func:`zero_padded_frames`: the one masking helper used by every
  layer that mixes time, so that padded batch items behave exactly as if run alone.
- :func:`conv_time_major`: the one convolution entry point. Every stage keeps activations
  time-major, ``(B, T, C)``; convolutions run as channels-last 2-D convolutions on a view,
  so no layer pays for transposed copies (LayerNorm, Linear and GELU then act in place).
- :class:`CausalPad`: the one left-context helper used by every causal convolution. It
  prepends the ``k - 1`` frames of context carried over from the previous call (or a
  replicate/zero padding at stream start) and returns the context for the next call.
- :func:`in_float32`: runs a module in float32 inside an autocast region, for the few
  places where precision decides (the latents whose signs are the tokens, the waveform
  heads and their inverse FFT).
- :class:`Snake`, :class:`DynamicTanh`, :class:`FeedForward`: activations and MLPs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CausalPad",
    "DynamicTanh",
    "FeedForward",
    "Snake",
    "conv_time_major",
    "in_float32",
    "strided_conv_time_major",
    "time_mask",
    "zero_padded_frames",
]


def in_float32(module: nn.Module, x: Tensor, *args: object) -> Tensor:
    """``module(x, *args)``, computed in float32 when ``x``'s device is in an autocast region
    (autocast off, ``x`` cast up); otherwise exactly ``module(x, *args)``. ``module`` may also be
    a bound method of a module. A module whose weights are not float32 (a model cast with
    ``.half()``) runs as is."""
    if not torch.is_autocast_enabled(x.device.type):
        return module(x, *args)
    owner = module if isinstance(module, nn.Module) else getattr(module, "__self__", None)
    weight = next(owner.parameters(), None) if isinstance(owner, nn.Module) else None
    if weight is not None and weight.dtype != torch.float32:
        return module(x, *args)
    with torch.autocast(x.device.type, enabled=False):
        return module(x.float(), *args)


def time_mask(lengths: Tensor, size: int) -> Tensor:
    """Boolean mask of valid time steps.

    ``lengths: (B,) int -> mask: (B, size) bool`` with ``mask[b, t] = t < lengths[b]``.
    """
    steps = torch.arange(size, device=lengths.device)
    return steps[None, :] < lengths[:, None]


def zero_padded_frames(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Zero every time step at or past ``lengths[b]`` (no-op when ``lengths`` is None).

    ``x: (B, T, C) -> (B, T, C)``.
    """
    if lengths is None:
        return x
    return x.masked_fill(~time_mask(lengths, x.shape[1])[:, :, None], 0.0)


def conv_time_major(
    x: Tensor,
    conv: nn.Conv1d,
    padding: tuple[int, int] = (0, 0),
) -> Tensor:
    """Apply ``conv`` (its weights, stride and groups; its own padding is ignored) over time.

    ``x: (B, T, C_in) -> (B, T', C_out)`` with ``padding`` zeros added (left, right).
    A conv module may supply its own ``forward_time_major(x, padding)`` with the same contract
    (the streaming copies of :mod:`focalcodec.streaming` do, for few-frame inputs).
    """
    own = getattr(conv, "forward_time_major", None)
    if own is not None:
        return own(x, padding)
    return strided_conv_time_major(x, conv, padding)


def strided_conv_time_major(x: Tensor, conv: nn.Conv1d, padding: tuple[int, int] = (0, 0)) -> Tensor:
    """:func:`conv_time_major` through PyTorch's convolution, ignoring any ``forward_time_major``
    (a channels-last 2-D view, so no transposed copy is made); same contract."""
    if padding != (0, 0):
        x = F.pad(x, (0, 0, padding[0], padding[1]))
    y = F.conv2d(
        x.transpose(1, 2).unsqueeze(2),
        conv.weight.unsqueeze(2),
        conv.bias,
        stride=(1, conv.stride[0]),
        groups=conv.groups,
    )
    return y.squeeze(2).transpose(1, 2)


class CausalPad(nn.Module):
    """Left context for a causal convolution, carried across calls.

    ``x: (B, T, C)``, ``context: (B, k - 1, C)`` or None
    ``-> (B, k - 1 + T, C)`` input for a convolution without padding, and the new context
    (the last ``k - 1`` input steps). At stream start (``context is None``) the context is
    the first step repeated (``mode="replicate"``) or zeros (``mode="zeros"``).
    For ``k == 1`` the context is an empty ``(B, 0, C)`` tensor.
    """

    def __init__(self, size: int, mode: str = "replicate") -> None:
        super().__init__()
        if mode not in ("replicate", "zeros"):
            raise ValueError(f"unknown causal padding mode {mode!r}")
        self.size = size
        self.mode = mode

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.size == 0:
            return x, x[:, :0]
        if context is None:
            if self.mode == "replicate":
                context = x[:, :1].expand(-1, self.size, -1)
            else:
                context = x.new_zeros(x.shape[0], self.size, x.shape[2])
        x = torch.cat([context.to(x.dtype), x], dim=1)
        return x, x[:, -self.size :]

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
