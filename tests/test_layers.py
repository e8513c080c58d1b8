"""Building blocks against their plain definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from focalcodec.nn.focalnet import DownScale
from focalcodec.nn.layers import Conv
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
        out = layer(x)
        assert out.shape == expected.shape
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
        assert int(layer.num_frames(torch.tensor(T))) == out.shape[1]


@pytest.mark.parametrize(
    "padding, pads",
    [((3, 1), (3, 1)), ("same", (2, 2)), ("valid", (0, 0)), ("causal", None)],
)
def test_conv_paddings_equal_conv1d(padding, pads) -> None:
    """Every padding of the one Conv: explicit zeros, "same", "valid" and causal (left context
    of k - 1 frames: the first frame repeated, or zeros), with strides and groups."""
    for start in ("replicate", "zeros"):
        conv = Conv(8, 16, 5, stride=2, groups=4, padding=padding, start=start)
        x = torch.randn(2, 31, 8)
        xt = x.transpose(1, 2)
        if pads is None:
            first = xt[:, :, :1].expand(-1, -1, 4) if start == "replicate" else torch.zeros(2, 8, 4)
            padded = torch.cat([first, xt], dim=2)
        else:
            padded = F.pad(xt, pads)
        expected = F.conv1d(padded, conv.weight, conv.bias, stride=2, groups=4).transpose(1, 2)
        torch.testing.assert_close(conv(x), expected, atol=1e-5, rtol=0)
    short = Conv(8, 16, 5, padding="valid")(torch.randn(1, 3, 8))  # shorter than the kernel: right-padded
    assert short.shape == (1, 1, 16)


def test_conv_lengths_zero_padded_frames_for_non_causal_paddings() -> None:
    conv = Conv(4, 4, 3, padding="same")
    x = torch.randn(2, 9, 4)
    lengths = torch.tensor([9, 5])
    out = conv(x, lengths)
    torch.testing.assert_close(out[1, :5], conv(x[1:, :5])[0], atol=1e-6, rtol=0)
    causal = Conv(4, 4, 3, padding="causal")
    assert torch.equal(causal(x, lengths), causal(x))  # later frames never reach earlier ones


@pytest.mark.parametrize("as_conv", [False, True])
def test_overlap_add(as_conv: bool) -> None:
    frames = torch.randn(2, 7, 10)
    expected = torch.zeros(2, 6 * 4 + 10)
    for t in range(7):
        expected[:, 4 * t : 4 * t + 10] += frames[:, t]
    torch.testing.assert_close(overlap_add(frames, 4, as_conv), expected, atol=1e-6, rtol=0)
