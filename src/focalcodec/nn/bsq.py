"""Binary spherical quantizer (BSQ): one binary codebook of ``2^D`` codes, no parameters.

- ``lats: (..., D)`` unit-norm latents -> ``codes: (..., D)`` with values ``±1/sqrt(D)``
  (``+`` where ``lat > 0``; zero maps to ``-``).
- ``codes <-> toks: (...,) int64`` in ``[0, 2^D)``; latent dimension 0 is the most
  significant bit: ``tok = sum_i bit_i * 2^(D-1-i)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BinarySphericalQuantizer"]

MAX_BITS = 62  # tokens are int64


class BinarySphericalQuantizer(nn.Module):
    """Stateless BSQ over ``D = log2(codebook_size)`` dimensions."""

    def __init__(self, codebook_size: int = 4096) -> None:
        super().__init__()
        dim = int(codebook_size).bit_length() - 1
        if codebook_size < 2 or 2**dim != codebook_size or dim > MAX_BITS:
            raise ValueError(
                f"codebook_size must be a power of two between 2 and 2^{MAX_BITS}, got {codebook_size}"
            )
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

    def forward(self, lats: Tensor) -> tuple[Tensor, Tensor]:
        """``lats: (..., D) -> (toks (...,), codes (..., D))``."""
        return self.lats_to_toks(lats), self.lats_to_codes(lats)

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}"
