"""Binary spherical quantizer (BSQ): one binary codebook of ``2^D`` codes, no parameters.

- ``lats: (..., D)`` unit-norm latents -> ``codes: (..., D)`` with values ``±1/sqrt(D)``
  (``+`` where ``lat > 0``; zero maps to ``-``).
- ``codes <-> toks: (...,) int64`` in ``[0, 2^D)``; latent dimension 0 is the most
  significant bit: ``tok = sum_i bit_i * 2^(D-1-i)``.

Training (:meth:`BinarySphericalQuantizer.quantize_with_losses`, SPEC §4.2): the codes go
forward with a straight-through estimator (the gradient reaches the latents unchanged),
and the entropy loss ``per_sample_entropy - gamma * codebook_entropy`` is computed from a
soft assignment ``softmax(inv_temperature * 2 <u, c_j>)`` over all ``2^D`` codes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["BinarySphericalQuantizer", "QuantizerOutput"]

MAX_BITS = 62  # tokens are int64
MAX_TRAIN_BITS = 20  # the soft assignment spans the whole codebook


class QuantizerOutput(NamedTuple):
    """Training output of the quantizer.

    ``codes``: (..., D) straight-through codes (forward value = the hard code, gradient
    = identity to the unit-norm latents); ``toks``: (...,) int64; ``entropy_loss``: 0-dim
    ``per_sample_entropy - gamma * codebook_entropy``; ``stats``: detached 0-dim tensors
    (``per_sample_entropy``, ``codebook_entropy``).
    """

    codes: Tensor
    toks: Tensor
    entropy_loss: Tensor
    stats: dict[str, Tensor]


def _entropy(probs: Tensor, eps: float) -> Tensor:
    """``(..., K) -> (...)`` Shannon entropy (nats) with ``log(clamp(p, eps))``."""
    return -(probs * probs.clamp(min=eps).log()).sum(dim=-1)


class BinarySphericalQuantizer(nn.Module):
    """Stateless BSQ over ``D = log2(codebook_size)`` dimensions: ``lats (..., D) -> codes (..., D)``
    ``<-> toks (...,)`` int64 (see the module docstring)."""

    def __init__(self, codebook_size: int = 4096) -> None:
        super().__init__()
        dim = int(codebook_size).bit_length() - 1
        if codebook_size < 2 or 2**dim != codebook_size or dim > MAX_BITS:
            raise ValueError(f"codebook_size must be a power of two between 2 and 2^{MAX_BITS}, got {codebook_size}")
        self.codebook_size = int(codebook_size)
        self.dim = dim
        self.code_value = 1.0 / math.sqrt(dim)
        self.register_buffer("mask", 2 ** torch.arange(dim - 1, -1, -1, dtype=torch.long), persistent=False)

    @property
    def codebook(self) -> Tensor:
        """All ``2^D`` codes, ``(2^D, D)``; row index = token. Built on demand."""
        return self.toks_to_codes(torch.arange(self.codebook_size, device=self.mask.device))

    def lats_to_codes(self, lats: Tensor) -> Tensor:
        """``(..., D) -> (..., D)`` codes in ``{±1/sqrt(D)}``."""
        one = torch.full_like(lats, self.code_value)
        return torch.where(lats > 0, one, -one)

    def codes_to_toks(self, codes: Tensor) -> Tensor:
        """``(..., D) -> (...,)`` int64 tokens."""
        return ((codes > 0).long() * self.mask).sum(dim=-1)

    def lats_to_toks(self, lats: Tensor) -> Tensor:
        """``(..., D) -> (...,)`` int64 tokens."""
        return ((lats > 0).long() * self.mask).sum(dim=-1)

    def toks_to_codes(self, toks: Tensor) -> Tensor:
        """``(...,) int -> (..., D)`` float32 codes."""
        bits = torch.bitwise_and(toks.long()[..., None], self.mask) != 0
        one = torch.full(bits.shape, self.code_value, device=toks.device)
        return torch.where(bits, one, -one)

    def quantize_with_losses(
        self,
        lats: Tensor,
        mask: Tensor | None = None,
        inv_temperature: float = 100.0,
        diversity_gamma: float = 1.0,
        eps: float = 1e-5,
        chunk_size: int = 4096,
    ) -> QuantizerOutput:
        """Training forward (SPEC §4.2).

        ``lats: (B, T, D)`` unit-norm latents (the L2-normalised compressor output);
        ``mask: (B, T)`` bool, True on valid frames (default: all). The per-sample entropy is
        the mean over valid frames of ``H(p)``; the codebook entropy is ``H`` of the mean of
        ``p`` over valid frames of the whole batch. The hard codes equal
        :meth:`lats_to_codes` exactly.
        """
        if lats.shape[-1] != self.dim:
            raise ValueError(f"latents have {lats.shape[-1]} dims, the quantizer expects D = {self.dim}")
        if self.dim > MAX_TRAIN_BITS:
            raise ValueError(
                f"the entropy loss enumerates the codebook: D = {self.dim} > {MAX_TRAIN_BITS} is too large"
            )
        hard = self.lats_to_codes(lats)
        codes = lats + (hard - lats).detach()
        with torch.autocast(lats.device.type, enabled=False):  # softmax at temperature 1/100: fp32
            loss, stats = self._entropy_loss(lats, mask, inv_temperature, diversity_gamma, eps, chunk_size)
        return QuantizerOutput(codes, self.codes_to_toks(hard), loss, stats)

    def _entropy_loss(
        self,
        lats: Tensor,
        mask: Tensor | None,
        inv_temperature: float,
        diversity_gamma: float,
        eps: float,
        chunk_size: int,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        flat = lats.reshape(-1, self.dim).float()
        if mask is not None:
            flat = flat[mask.reshape(-1).to(flat.device)]
        codebook = self.codebook.to(flat)
        per_sample = flat.new_zeros(())
        avg_probs = flat.new_zeros(self.codebook_size)
        count = max(flat.shape[0], 1)
        for start in range(0, flat.shape[0], chunk_size):
            logits = 2.0 * inv_temperature * flat[start : start + chunk_size] @ codebook.t()
            probs = torch.softmax(logits, dim=-1)
            per_sample = per_sample + _entropy(probs, eps).sum()
            avg_probs = avg_probs + probs.sum(dim=0)
        per_sample = per_sample / count
        codebook_entropy = _entropy(avg_probs / count, eps)
        loss = per_sample - diversity_gamma * codebook_entropy
        stats = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook_entropy.detach()}
        return loss, stats

    def forward(self, lats: Tensor) -> tuple[Tensor, Tensor]:
        """``lats: (..., D) -> (toks (...,), codes (..., D))``."""
        return self.lats_to_toks(lats), self.lats_to_codes(lats)

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}"
