"""Small building blocks shared by every part of the pipeline.

- :func:`time_mask` / :func:`zero_padded_frames`: the one masking helper used by every
  layer that mixes time, so that padded batch items behave exactly as if run alone.
- :class:`Conv`: the one convolution, with every padding the parts use (causal with a
  replicate or zero start, same, valid, explicit). Every part keeps activations
  time-major, ``(B, T, C)``, so no layer pays for transposed copies (LayerNorm, Linear and
  GELU then act in place). :class:`FrameConvTranspose`: the per-frame transposed conv.
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
    "Conv",
    "DynamicTanh",
    "FeedForward",
    "FrameConvTranspose",
    "Snake",
    "in_float32",
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


class Conv(nn.Conv1d):
    """The one convolution of every part: a ``Conv1d`` over time-major input with its padding.

    ``x: (B, T, C_in) -> (B, T', C_out)``. ``padding``:

    - ``"causal"``: ``k - 1`` frames of left context, at the start the first frame repeated
      (``start="replicate"``) or zeros (``start="zeros"``);
    - ``"same"``: ``(k - 1) // 2`` zeros on the left and the rest on the right;
    - ``"valid"``: none, except that an input shorter than the kernel is zero-padded on the
      right to one kernel;
    - ``(left, right)``: that many zeros.

    ``lengths (B,)``: valid frames per item; for the non-causal paddings the frames past them
    are zeroed first, so a padded item convolves as it would alone. The weights are PyTorch's
    ``(C_out, C_in / groups, k)`` (checkpoint keys unchanged). Activations stay time-major:
    the convolution runs as a channels-last 2-D convolution on a view (no transposed copies).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = True,
        padding: str | tuple[int, int] = (0, 0),
        start: str = "replicate",
    ) -> None:
        super().__init__(in_dim, out_dim, kernel_size, stride, groups=groups, bias=bias)
        if start not in ("replicate", "zeros"):
            raise ValueError(f"unknown causal start padding {start!r}")
        self.causal = padding == "causal"
        self.mode = padding
        self.start = start

    @property
    def context(self) -> int:
        """Frames of left context a causal convolution reads before its input (``k - 1``)."""
        return self.kernel_size[0] - 1

    def start_context(self, x: Tensor) -> Tensor:
        """The context before the first frame of ``x (B, T, C)``: ``(B, k - 1, C)``."""
        if self.start == "replicate":
            return x[:, :1].expand(-1, self.context, -1)
        return x.new_zeros(x.shape[0], self.context, x.shape[2])

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``x (B, T, C_in) -> (B, T', C_out)``; ``lengths (B,)``: valid frames (see the class)."""
        if self.causal:
            return self.convolve(torch.cat([self.start_context(x), x], dim=1) if self.context else x)
        k = self.kernel_size[0]
        if self.mode == "same":
            left, right = (k - 1) // 2, k - 1 - (k - 1) // 2
        elif self.mode == "valid":
            left, right = 0, max(0, k - x.shape[1])
        else:
            left, right = self.mode
        x = zero_padded_frames(x, lengths)
        return self.convolve(F.pad(x, (0, 0, left, right)) if left or right else x)

    def convolve(self, x: Tensor) -> Tensor:
        """The convolution without padding: ``(B, L, C_in) -> (B, (L - k) // stride + 1, C_out)``."""
        if self.kernel_size[0] == 1 and self.groups == 1 and self.stride[0] == 1:
            return F.linear(x, self.weight[:, :, 0], self.bias)
        y = F.conv2d(
            x.transpose(1, 2).unsqueeze(2),
            self.weight.unsqueeze(2),
            self.bias,
            stride=(1, self.stride[0]),
            groups=self.groups,
        )
        return y.squeeze(2).transpose(1, 2)


class FrameConvTranspose(nn.ConvTranspose1d):
    """A ``ConvTranspose1d`` whose kernel equals its stride ``u``: every input frame makes its
    own ``u`` output frames (a per-frame linear map, no context). ``(B, T, C_in) -> (B, T * u, C_out)``;
    weights ``(C_in, C_out, u)`` as PyTorch's."""

    def __init__(self, in_dim: int, out_dim: int, factor: int) -> None:
        super().__init__(in_dim, out_dim, factor, factor)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """``x (B, T, C_in) -> (B, T * u, C_out)``."""
        B, T, _ = x.shape
        w = self.weight
        y = x @ w.permute(0, 2, 1).reshape(w.shape[0], -1)
        return y.reshape(B, T * self.stride[0], w.shape[1]) + self.bias


class Snake(nn.Module):
    """Snake activation ``x + sin^2(alpha x) / (alpha + 1e-9)`` with per-channel alpha.

    ``x: (B, T, C) -> (B, T, C)``; ``alpha`` is stored as ``(C, 1)`` like the checkpoints.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., C) -> (..., C)``."""
        alpha = self.alpha[:, 0]
        return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x) ** 2


class DynamicTanh(nn.Module):
    """``tanh(alpha x)`` with one learnable scalar, used instead of LayerNorm by causal models."""

    def __init__(self, init: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., C) -> (..., C)``."""
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
        """``x (..., dim) -> (..., dim)``."""
        x = self.dropout(self.activation(self.in_proj(x)))
        return self.dropout(self.out_proj(x))
