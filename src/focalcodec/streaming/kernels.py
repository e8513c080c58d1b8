"""Kernels for few-frame steps on CPU and reduced-precision weights, chosen when a stream is
built by constructing modules that share the model's weights (:func:`fast_kernels`,
:func:`reduce_precision`). Each equals the plain PyTorch computation up to float rounding.

At 4 frames per step PyTorch's CPU convolutions reorder their weights on every call and
MKL's few-row ``x @ W^T`` reads weights at a third of the memory bandwidth, so:

- :class:`FewRowsLinear`: float32 linears on at most ``FEW_ROWS`` rows as ``(W @ x^T)^T``;
- :class:`UnfoldConv`: dense or grouped convs as sliding windows times one linear per group;
- :class:`WindowSumConv`: small depthwise convs as window products summed over taps;
- kernel-1 convs and per-frame transposed convs become linears.

The long (512-tap) depthwise convs keep oneDNN's kernel, the fastest measured for them.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.layers import Conv, FrameConvTranspose

__all__ = [
    "FewRowsLinear",
    "PointwiseConv",
    "UnfoldConv",
    "WindowSumConv",
    "fast_kernels",
    "finish_linears",
    "reduce_precision",
    "replace",
]

# Rows up to which a CPU float32 linear is computed as ``W @ x^T``.
FEW_ROWS = 64
# Taps up to which a depthwise conv is a window sum (oneDNN's ~100 us set-up costs more).
SMALL_KERNEL = 64
# Linear layers of a part kept in float32 at every precision (the encoder's projection and
# the decompressor's input layer: small, and where the part's float input is read).
KEEP_FLOAT = ("feature_proj", "in_proj")


def _linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """An ``nn.Linear`` whose parameters are ``weight (out, in)`` and ``bias`` (shared, not copied)."""
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    lin.weight = nn.Parameter(weight.detach(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach(), requires_grad=False)
    return lin


class FewRowsLinear(nn.Linear):
    """``nn.Linear`` computing inputs of at most ``FEW_ROWS`` rows on CPU as ``(W @ x^T)^T``:
    ``(..., in) -> (..., out)``. Build with :meth:`sharing`."""

    @classmethod
    def sharing(cls, linear: nn.Linear) -> FewRowsLinear:
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight, new.bias = linear.weight, linear.bias
        return new

    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // self.in_features if self.in_features else 0
        if not (0 < rows <= FEW_ROWS and x.device.type == "cpu" and x.dtype == torch.float32 == self.weight.dtype):
            return F.linear(x, self.weight, self.bias)
        # MKL is fast here only with x row-major (so x^T is "transposed"): copy the few rows.
        flat = x.reshape(rows, self.in_features).contiguous().t()
        out = torch.mm(self.weight, flat) if self.bias is None else torch.addmm(self.bias[:, None], self.weight, flat)
        return out.t().contiguous().reshape(*x.shape[:-1], self.out_features)


class PointwiseConv(nn.Module):
    """A kernel-1 convolution as its ``linear`` (``(..., C_in) -> (..., C_out)``); ``lengths`` is
    ignored: nothing mixes frames."""

    def __init__(self, conv: Conv) -> None:
        super().__init__()
        self.linear = _linear(conv.weight[:, :, 0], conv.bias)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.linear(x)


class UnfoldConv(nn.Module):
    """An unpadded (grouped) convolution as windows times one linear per group (``linears``,
    views of the conv weight): ``(B, L, C_in) -> (B, (L - k) // stride + 1, C_out)``."""

    def __init__(self, conv: Conv) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.groups = conv.kernel_size[0], conv.stride[0], conv.groups
        w, b = conv.weight, conv.bias
        out_g = w.shape[0] // self.groups
        self.linears = nn.ModuleList(
            _linear(w[g * out_g : (g + 1) * out_g].flatten(1), None if b is None else b[g * out_g : (g + 1) * out_g])
            for g in range(self.groups)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1:
            windows = x.unfold(1, self.kernel_size, self.stride)  # (B, T, C_in, k)
            return self.linears[0](windows.flatten(2))
        # Grouped: unfold a channel-major copy, so each group's windows are gathered in runs of
        # k contiguous samples (2.5x faster than across the time-major input).
        windows = x.transpose(1, 2).contiguous().unfold(2, self.kernel_size, self.stride)  # (B, C_in, T, k)
        per_group = windows.shape[1] // self.groups
        outs = [
            lin(windows[:, g * per_group : (g + 1) * per_group].transpose(1, 2).flatten(2))
            for g, lin in enumerate(self.linears)
        ]
        return torch.cat(outs, dim=2)


class WindowSumConv(nn.Module):
    """An unpadded depthwise convolution as window products summed over taps:
    ``(B, L, C) -> (B, L - k + 1, C)``."""

    def __init__(self, conv: Conv) -> None:
        super().__init__()
        self.kernel_size = conv.kernel_size[0]
        self.register_buffer("taps", conv.weight.detach()[:, 0, :].t().contiguous(), persistent=False)  # (k, C)
        self.bias = conv.bias

    def forward(self, x: Tensor) -> Tensor:
        windows = x.unfold(1, self.kernel_size, 1).transpose(-1, -2)  # (B, T, k, C)
        out = (windows * self.taps.to(x.dtype)).sum(2)
        return out if self.bias is None else out + self.bias.to(x.dtype)


def replace(model: nn.Module, make: object) -> None:
    """Replace, in place, every sub-module ``m`` of ``model`` for which ``make(name, m)`` returns
    a module (by ``setattr`` on its parent); ``make`` returns None to keep ``m``."""
    for name, module in list(model.named_modules()):
        new = make(name, module)  # type: ignore[operator]
        if new is not None and name:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)


def conv_kernel(conv: Conv) -> nn.Module | None:
    """The few-frame kernel for ``conv`` (None: PyTorch's convolution is the fastest)."""
    k, groups = conv.kernel_size[0], conv.groups
    depthwise = groups == conv.in_channels and groups > 1
    if depthwise:
        return WindowSumConv(conv) if k <= SMALL_KERNEL and conv.stride[0] == 1 else None
    return UnfoldConv(conv) if conv.in_channels // groups * k >= 64 else None


def fast_kernels(model: nn.Module) -> None:
    """Give ``model`` (a streaming copy, on CPU) its few-frame kernels: the streaming convs' kernels,
    linears for kernel-1 convs and per-frame transposed convs. Call :func:`finish_linears` after
    :func:`reduce_precision`."""
    from .layers import StreamingConv

    def make(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, StreamingConv):
            m.kernel = conv_kernel(m.conv)
        elif isinstance(m, Conv) and m.kernel_size[0] == 1 and m.groups == 1 and m.stride[0] == 1:
            return PointwiseConv(m)
        elif isinstance(m, FrameConvTranspose) and m.stride[0] == 1:
            return _linear(m.weight[:, :, 0].t().contiguous(), m.bias)  # a few MB, copied once
        return None

    replace(model, make)


def finish_linears(model: nn.Module) -> None:
    """Every float ``nn.Linear`` left becomes a :class:`FewRowsLinear` (same weights)."""
    replace(model, lambda name, m: FewRowsLinear.sharing(m) if type(m) is nn.Linear else None)


def reduce_precision(model: nn.Module, precision: str) -> None:
    """Dynamic quantisation of the linear layers (fbgemm / qnnpack; CPU only): ``"int8"``
    (per-channel int8 weights, activations quantised per call) or ``"float16"`` (half-precision
    weights, float32 arithmetic). The quantised layers hold their own copies of the weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import float16_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if precision == "int8" else float16_dynamic_qconfig
        names = {name: qconfig for name, m in model.named_modules() if type(m) is nn.Linear and name not in KEEP_FLOAT}
        quantize_dynamic(model, names, dtype=torch.qint8 if precision == "int8" else torch.float16, inplace=True)
