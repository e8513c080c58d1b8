"""Reduced precision: inside ``torch.autocast`` the codec keeps float32 where precision
decides (the latents whose signs are the tokens, the waveform heads and their inverse FFT),
so the tokens stay close to float32 and the outputs stay float32."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_io, fixture_model

from focalcodec.nn.layers import in_float32

pytestmark = pytest.mark.usefixtures("one_thread")


def test_in_float32_inside_and_outside_autocast() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    assert torch.equal(in_float32(linear, x), linear(x))
    half = x.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x).dtype == torch.bfloat16
        out = in_float32(linear, half)
    assert out.dtype == torch.float32
    assert torch.equal(out, linear(half.float()))  # float32 weights and arithmetic


@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_12_5hz", "tiny_causal_4k"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_tokens_and_signal(name: str, dtype: torch.dtype) -> None:
    codec, io = fixture_model(name), fixture_io(name)
    with torch.inference_mode():
        toks = codec.sig_to_toks(io["sig"])
        ref = codec.toks_to_sig(toks)
        with torch.autocast("cpu", dtype=dtype):
            lats = codec.sig_to_lats(io["sig"])
            auto_toks = codec.sig_to_toks(io["sig"])
            sig = codec.toks_to_sig(toks)
    assert lats.dtype == torch.float32 and sig.dtype == torch.float32
    torch.testing.assert_close(lats.norm(dim=-1), torch.ones(lats.shape[:-1]), atol=1e-5, rtol=0)
    assert (auto_toks == toks).float().mean() > 0.9
    snr = 10 * torch.log10(ref.pow(2).sum() / (sig - ref).pow(2).sum())
    assert sig.shape == ref.shape and snr > 25


def test_half_model_under_autocast_runs() -> None:
    """A model cast to bfloat16 still runs inside autocast (its float32 islands step aside)."""
    import copy

    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    half = copy.deepcopy(codec).to(torch.bfloat16)
    linear = torch.nn.Linear(4, 2).to(torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert in_float32(linear, torch.randn(3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
        toks = half.sig_to_toks(io["sig"].bfloat16())
        sig = half.toks_to_sig(toks)
    assert toks.shape == io["toks"].shape and torch.isfinite(sig.float()).all()
