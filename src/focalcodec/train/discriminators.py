"""Stage-D discriminators (SPEC §4.3): HiFi-GAN style multi-period (MPD, periods 2, 3, 5, 7,
11) and multi-scale (MSD, 3 scales: raw, then average-pooled by 2 twice; spectral norm on
the first scale, weight norm elsewhere).

Every discriminator maps ``sig: (B, N)`` to a list of scores (one ``(B, *)`` tensor per
sub-discriminator) and a list of feature-map lists (every hidden activation, for feature
matching). ``width`` scales all channel counts (1.0 = the published sizes; tests use small
values).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

__all__ = ["CombinedDiscriminator", "MultiPeriodDiscriminator", "MultiScaleDiscriminator"]

Scores = list[Tensor]
FeatureMaps = list[list[Tensor]]
SLOPE = 0.1


def _ch(n: int, width: float, multiple: int = 16) -> int:
    """Scaled channel count, a multiple of ``multiple`` (for the grouped convs)."""
    return max(multiple, int(round(n * width / multiple)) * multiple)


class PeriodDiscriminator(nn.Module):
    """One MPD branch: the signal folded into ``(B, 1, N / p, p)``, 2-D convs over time only."""

    def __init__(self, period: int, width: float = 1.0) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_ch(c, width) for c in (32, 128, 512, 1024, 1024)]
        strides = (3, 3, 3, 3, 1)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (strides[i], 1), padding=(2, 0)))
            for i in range(len(strides))
        )
        self.post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, sig: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = sig[:, None, :]
        pad = (-x.shape[-1]) % self.period
        if pad:
            x = F.pad(x, (0, pad), mode="reflect" if pad < x.shape[-1] else "constant")
        B, C, N = x.shape
        x = x.view(B, C, N // self.period, self.period)
        return _conv_stack(self.convs, self.post, x)


def _conv_stack(convs: nn.ModuleList, post: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Leaky-ReLU conv stack then the score conv: ``(scores (B, -1), every feature map)``."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), SLOPE)
        feats.append(x)
    x = post(x)
    feats.append(x)
    return x.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    """One MSD branch: strided, grouped 1-D convs over the raw (or pooled) signal."""

    def __init__(self, width: float = 1.0, use_spectral_norm: bool = False) -> None:
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        c = [1] + [_ch(n, width) for n in (128, 128, 256, 512, 1024, 1024, 1024)]
        spec = [  # (kernel, stride, groups, padding)
            (15, 1, 1, 7),
            (41, 2, 4, 20),
            (41, 2, 16, 20),
            (41, 4, 16, 20),
            (41, 4, 16, 20),
            (41, 1, 16, 20),
            (5, 1, 1, 2),
        ]
        self.convs = nn.ModuleList(
            norm(nn.Conv1d(c[i], c[i + 1], k, s, groups=g, padding=p)) for i, (k, s, g, p) in enumerate(spec)
        )
        self.post = norm(nn.Conv1d(c[-1], 1, 3, 1, padding=1))

    def forward(self, sig: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _conv_stack(self.convs, self.post, sig[:, None, :])


class MultiPeriodDiscriminator(nn.Module):
    """``sig: (B, N) -> (scores, feature maps)``, one entry per period."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)

    def forward(self, sig: Tensor) -> tuple[Scores, FeatureMaps]:
        outs = [d(sig) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiScaleDiscriminator(nn.Module):
    """``sig: (B, N) -> (scores, feature maps)``; scale ``i`` sees the signal average-pooled
    (kernel 4, stride 2) ``i`` times."""

    def __init__(self, num_scales: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(width, use_spectral_norm=(i == 0)) for i in range(num_scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, sig: Tensor) -> tuple[Scores, FeatureMaps]:
        scores, feats = [], []
        x = sig
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = self.pool(x[:, None, :])[:, 0]
            s, f = d(x)
            scores.append(s)
            feats.append(f)
        return scores, feats


class CombinedDiscriminator(nn.Module):
    """MPD and MSD side by side: scores and feature maps concatenated (MPD first)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), num_scales: int = 3, width: float = 1.0) -> None:
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, width)
        self.msd = MultiScaleDiscriminator(num_scales, width)

    def forward(self, sig: Tensor) -> tuple[Scores, FeatureMaps]:
        s1, f1 = self.mpd(sig)
        s2, f2 = self.msd(sig)
        return s1 + s2, f1 + f2
