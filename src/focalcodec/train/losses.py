"""Training losses (SPEC §4.2-4.4).

- :func:`masked_mse`: feature reconstruction with per-item length masks (stage Q, joint).
- :func:`layer_weighted_mse`: encoder distillation over every transformer layer.
- :class:`MelSpectrogram` and :func:`mel_l1`: log-mel L1 with ``torch.stft`` and a Slaney
  mel filter bank (magnitude, ``log(clamp(x, 1e-5))``).
- :func:`discriminator_hinge_loss`, :func:`generator_hinge_loss`,
  :func:`feature_matching_loss`: the HiFi-GAN style adversarial terms with hinge losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import mel_filter_bank
from ..nn.layers import time_mask

__all__ = [
    "MelSpectrogram",
    "discriminator_hinge_loss",
    "feature_matching_loss",
    "generator_hinge_loss",
    "layer_weighted_mse",
    "masked_mse",
    "mel_l1",
]


def masked_mse(pred: Tensor, target: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Mean squared error over valid frames.

    ``pred, target: (B, T, C)`` (the longer one is cut to the shorter's ``T``);
    ``lengths: (B,)`` valid frames per item (default: all). Returns a 0-dim tensor: the sum
    of squared errors over valid positions divided by their number (``valid frames * C``).
    """
    T = min(pred.shape[1], target.shape[1])
    pred, target = pred[:, :T], target[:, :T]
    err = (pred.float() - target.float()).square()
    if lengths is None:
        return err.mean()
    mask = time_mask(lengths.clamp(max=T).to(err.device), T)[:, :, None].to(err.dtype)
    denom = (mask.sum() * err.shape[-1]).clamp(min=1.0)
    return (err * mask).sum() / denom


def layer_weighted_mse(
    preds: Sequence[Tensor], targets: Sequence[Tensor], weights: Sequence[float], lengths: Tensor | None = None
) -> Tensor:
    """``mean_l w_l * masked_mse(preds[l], targets[l], lengths)``: the weighted layer losses
    averaged over the ``L`` layers, as the recipe does (SPEC §4.4 weights
    ``[0.5, 0.6, 0.7, 0.8, 0.9, 1.0]``); each tensor ``(B, T, C)``."""
    if not (len(preds) == len(targets) == len(weights)) or not preds:
        raise ValueError(f"got {len(preds)} predictions, {len(targets)} targets and {len(weights)} weights")
    total = preds[0].new_zeros((), dtype=torch.float32)
    for p, t, w in zip(preds, targets, weights, strict=True):
        total = total + float(w) * masked_mse(p, t, lengths)
    return total / len(preds)


class MelSpectrogram(nn.Module):
    """Log-mel spectrogram: ``(B, N) -> (B, n_mels, frames)``.

    ``torch.stft`` (centred, reflect padding, periodic Hann window), magnitude (power 1),
    Slaney mel filters, then ``log(clamp(x, 1e-5))``. Defaults are the stage-D settings at
    16 kHz: 80 mels, n_fft = win = 1024, hop 320, 0-8000 Hz.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 320,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        clamp: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length
        self.clamp = clamp
        f_max = sample_rate / 2.0 if f_max is None else f_max
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filters", mel_filter_bank(sample_rate, n_fft, n_mels, f_min, f_max), persistent=False)

    def forward(self, sig: Tensor) -> Tensor:
        with torch.autocast(sig.device.type, enabled=False):
            return self._log_mel(sig.float())

    def _log_mel(self, sig: Tensor) -> Tensor:
        if sig.shape[-1] <= self.n_fft // 2:
            sig = F.pad(sig, (0, self.n_fft // 2 + 1 - sig.shape[-1]))
        spec = torch.stft(
            sig,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        mel = torch.matmul(spec.transpose(1, 2), self.filters).transpose(1, 2)
        return torch.log(mel.clamp(min=self.clamp))


def mel_l1(mel: MelSpectrogram, fake: Tensor, real: Tensor) -> Tensor:
    """L1 between log-mel spectrograms of ``fake`` and ``real`` (both ``(B, N)``, same N)."""
    n = min(fake.shape[-1], real.shape[-1])
    return F.l1_loss(mel(fake[..., :n]), mel(real[..., :n]))


def discriminator_hinge_loss(real_scores: list[Tensor], fake_scores: list[Tensor]) -> Tensor:
    """``sum_k mean(relu(1 - D_k(y))) + mean(relu(1 + D_k(y_hat)))`` over sub-discriminators."""
    loss = real_scores[0].new_zeros((), dtype=torch.float32)
    for r, f in zip(real_scores, fake_scores, strict=False):
        loss = loss + F.relu(1.0 - r.float()).mean() + F.relu(1.0 + f.float()).mean()
    return loss


def generator_hinge_loss(fake_scores: list[Tensor]) -> Tensor:
    """``sum_k mean(relu(1 - D_k(y_hat)))`` over sub-discriminators."""
    loss = fake_scores[0].new_zeros((), dtype=torch.float32)
    for f in fake_scores:
        loss = loss + F.relu(1.0 - f.float()).mean()
    return loss


def feature_matching_loss(real_feats: list[list[Tensor]], fake_feats: list[list[Tensor]]) -> Tensor:
    """L1 between real (detached) and fake feature maps, averaged over every sub-discriminator
    and layer."""
    total = real_feats[0][0].new_zeros((), dtype=torch.float32)
    count = 0
    for rs, fs in zip(real_feats, fake_feats, strict=False):
        for r, f in zip(rs, fs, strict=False):
            total = total + F.l1_loss(f.float(), r.detach().float())
            count += 1
    return total / max(count, 1)
