"""Building blocks against their plain definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from focalcodec.nn.focalnet import DownScale
from focalcodec.nn.layers import CausalPad, conv_time_major
from focalcodec.nn.vocos import overlap_add


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_downscale_matches_the_reference_padding_rule(factor: int) -> None:
    """Non-causal DownScale right-pads by (T - f) mod f before a stride-f conv."""
    layer = DownScale(4, 5, factor, causal=False)
    for T in range(factor, 14):
        x = torch.randn(1, T, 4)
        padded = F.pad(x.transpose(1, 2), (0, (T - factor) % factor))
        conv = F.conv1d(padded, layer.downscale.weight, layer.downscale.bias, stride=factor)
        expected = layer.activation(conv.transpose(1, 2))
        out, _ = layer(x)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        assert int(layer.num_frames(torch.tensor(T))) == out.shape[1]


def test_conv_time_major_equals_conv1d() -> None:
    conv = torch.nn.Conv1d(8, 16, 5, stride=2, groups=4)
    x = torch.randn(2, 31, 8)
    expected = F.conv1d(F.pad(x.transpose(1, 2), (3, 1)), conv.weight, conv.bias, stride=2, groups=4).transpose(1, 2)
    torch.testing.assert_close(conv_time_major(x, conv, (3, 1)), expected, atol=1e-5, rtol=0)


def test_causal_pad_carries_context() -> None:
    pad = CausalPad(3)
    x = torch.randn(2, 10, 4)
    whole, _ = pad(x)
    assert torch.equal(whole[:, :3], x[:, :1].expand(-1, 3, -1))
    first, ctx = pad(x[:, :6])
    second, _ = pad(x[:, 6:], ctx)
    assert torch.equal(second, whole[:, 6:])
    zeros, _ = CausalPad(2, "zeros")(x)
    assert torch.equal(zeros[:, :2], torch.zeros(2, 2, 4))


@pytest.mark.parametrize("as_conv", [False, True])
def test_overlap_add(as_conv: bool) -> None:
    frames = torch.randn(2, 7, 10)
    expected = torch.zeros(2, 6 * 4 + 10)
    for t in range(7):
        expected[:, 4 * t : 4 * t + 10] += frames[:, t]
    torch.testing.assert_close(overlap_add(frames, 4, as_conv), expected, atol=1e-6, rtol=0)
