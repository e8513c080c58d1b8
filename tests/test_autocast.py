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
    # measured over the three fixtures: bfloat16 tokens 94-97 % equal, SNR 38-46 dB; float16
    # tokens 98-100 % equal, SNR 57-66 dB (float16 keeps 3 more mantissa bits than bfloat16)
    min_tokens, min_snr = (0.9, 33) if dtype == torch.bfloat16 else (0.97, 50)
    assert (auto_toks == toks).float().mean() > min_tokens
    snr = 10 * torch.log10(ref.pow(2).sum() / (sig - ref).pow(2).sum())
    assert sig.shape == ref.shape and snr > min_snr, f"SNR {float(snr):.1f} dB"


def test_half_model_under_autocast_runs() -> None:
    """A model cast to bfloat16 still runs inside autocast (its float32 islands step aside) and
    stays close to float32: most tokens equal, the synthesis of the reference tokens near the
    reference audio."""
    import copy

    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    half = copy.deepcopy(codec).to(torch.bfloat16)
    linear = torch.nn.Linear(4, 2).to(torch.bfloat16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert in_float32(linear, torch.randn(3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16
        toks = half.sig_to_toks(io["sig"].bfloat16())
        sig = half.toks_to_sig(io["toks"]).float()
    assert toks.shape == io["toks"].shape and (toks == io["toks"]).float().mean() > 0.9  # measured 0.966
    ref = io["toks_sig"]
    assert sig.shape == ref.shape
    assert 10 * torch.log10(ref.pow(2).sum() / (sig - ref).pow(2).sum()) > 36  # measured 43.3 dB
