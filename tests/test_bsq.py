"""Binary spherical quantizer: tokens <-> codes, bit order, zero handling, any width."""

from __future__ import annotations

import math

import pytest
import torch

from focalcodec.nn.bsq import BinarySphericalQuantizer


@pytest.mark.parametrize("dim", [1, 2, 5, 11, 12, 13, 16])
def test_tokens_codes_round_trip(dim: int) -> None:
    q = BinarySphericalQuantizer(2**dim)
    toks = torch.arange(2**dim)
    codes = q.toks_to_codes(toks)
    assert codes.shape == (2**dim, dim)
    assert torch.allclose(codes.abs(), torch.full_like(codes, 1 / math.sqrt(dim)))
    assert torch.allclose(codes.norm(dim=-1), torch.ones(2**dim))
    assert torch.equal(q.codes_to_toks(codes), toks)
    assert torch.equal(q.codebook, codes)
    assert len({tuple(c.tolist()) for c in codes}) == 2**dim  # all distinct


@pytest.mark.parametrize("dim", [11, 12, 13, 16])
def test_random_latents_quantize_consistently(dim: int) -> None:
    q = BinarySphericalQuantizer(2**dim)
    lats = torch.nn.functional.normalize(torch.randn(3, 50, dim), dim=-1)
    toks, codes = q(lats)
    assert toks.dtype == torch.long and toks.shape == (3, 50)
    assert torch.equal(q.lats_to_toks(lats), toks)
    assert torch.equal(q.toks_to_codes(toks), codes)
    assert torch.equal(torch.sign(codes), torch.where(lats > 0, 1.0, -1.0))
    # The code is the nearest codeword (max inner product) on the sphere.
    nearest = (lats @ q.codebook.T).argmax(-1)
    assert torch.equal(nearest, toks)


def test_dimension_zero_is_most_significant_bit_and_zero_is_negative() -> None:
    q = BinarySphericalQuantizer(8192)
    lat = torch.full((13,), -1.0)
    lat[0] = 1.0
    assert int(q.lats_to_toks(lat)) == 4096
    lat = torch.full((13,), -1.0)
    lat[12] = 1.0
    assert int(q.lats_to_toks(lat)) == 1
    assert int(q.lats_to_toks(torch.zeros(13))) == 0
    assert torch.all(q.lats_to_codes(torch.zeros(13)) < 0)


@pytest.mark.parametrize("size", [0, 1, 3, 4095, 6000])
def test_bad_codebook_sizes_are_rejected(size: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        BinarySphericalQuantizer(size)
