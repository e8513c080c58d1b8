"""Streaming: the stream classes reproduce the reference streaming fixtures, for any chunk
sizes, batches of streams and after reset; the fast streaming copy matches the model;
chunked pseudo-streaming of non-causal models keeps lengths and stays close to offline."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_io, fixture_model

from focalcodec import InputError
from focalcodec.streaming import ChunkedStream, StreamCodec, StreamDecoder, StreamEncoder, streaming_model

SIG_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_pieces(n: int, generator: torch.Generator, high: int = 3000) -> list:
    """Random split points of ``n`` samples (including 1-sample and empty pieces)."""
    sizes, total = [], 0
    while total < n:
        size = int(torch.randint(0, high, (1,), generator=generator))
        if int(torch.randint(0, 10, (1,), generator=generator)) == 0:
            size = 1
        sizes.append(min(size, n - total))
        total += sizes[-1]
    return sizes


def _stream(enc: StreamEncoder, dec: StreamDecoder, sig: torch.Tensor, sizes: list) -> tuple:
    toks, audio, i = [], [], 0
    for size in sizes:
        t = enc.push(sig[..., i : i + size])
        i += size
        toks.append(t)
        audio.append(dec.push(t))
    t = enc.flush()
    toks.append(t)
    audio.append(dec.push(t))
    audio.append(dec.flush())
    return torch.cat(toks, dim=-1), torch.cat(audio, dim=-1)


@pytest.mark.parametrize("optimize", [False, True])
def test_fixture_stream_in_reference_chunks(optimize: bool) -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    enc, dec = StreamEncoder(codec, optimize=optimize), StreamDecoder(codec, optimize=optimize)
    toks, audio = _stream(enc, dec, io["sig"], [1280] * (io["sig"].shape[1] // 1280 + 1))
    assert torch.equal(toks, io["stream_toks"])
    assert audio.shape == io["stream_sig"].shape
    torch.testing.assert_close(audio, io["stream_sig"], atol=SIG_ATOL, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_fixture_stream_random_chunk_sizes(seed: int) -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    g = torch.Generator().manual_seed(seed)
    sizes = _random_pieces(io["sig"].shape[1], g)
    toks, audio = _stream(StreamEncoder(codec), StreamDecoder(codec), io["sig"][0], sizes)
    assert toks.ndim == 1 and audio.ndim == 1  # 1-D in, 1-D out
    assert torch.equal(toks, io["stream_toks"][0])
    torch.testing.assert_close(audio, io["stream_sig"][0], atol=SIG_ATOL, rtol=0)


def test_decoder_any_number_of_tokens_per_call() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    dec = StreamDecoder(codec)
    toks, outs, i = io["stream_toks"], [], 0
    for size in [1, 0, 2, 5, 3, 4, 7, 1, 1, 1, 13, 2]:
        out = dec.push(toks[:, i : i + size])
        i += size
        assert out.shape[1] % 1920 == 0  # whole 4-token groups only
        outs.append(out)
    outs.append(dec.push(toks[:, i:]))
    assert dec.buffered == 0
    outs.append(dec.flush())
    torch.testing.assert_close(torch.cat(outs, 1), io["stream_sig"], atol=SIG_ATOL, rtol=0)


def test_decoder_partial_group_flush_matches_offline() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    dec = StreamDecoder(codec)
    toks = io["toks"]  # 118 tokens: 29 groups and a partial one of 2
    audio = torch.cat([dec.push(toks[:, :50]), dec.push(toks[:, 50:]), dec.flush()], 1)
    torch.testing.assert_close(audio, io["toks_sig"], atol=SIG_ATOL, rtol=0)


def test_long_stream_tokens() -> None:
    """Past the 512-frame attention window and the 512-tap context, in one long push and
    in chunk-sized pushes."""
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    long_sig = io["sig"].repeat(1, 5)
    enc = StreamEncoder(codec)
    toks = torch.cat([enc.push(long_sig[:, :70000]), enc.push(long_sig[:, 70000:]), enc.flush()], 1)
    assert torch.equal(toks, io["long_stream_toks"])


def test_batch_of_streams_matches_single_streams() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    batch = io["batch_sig"]
    sc = StreamCodec(codec)
    toks, audio, i = [], [], 0
    for size in [1000, 3000, 17, 4000, 20000, 9683]:
        t, a = sc.push(batch[:, i : i + size])
        i += size
        toks.append(t)
        audio.append(a)
    t, a = sc.flush()
    toks, audio = torch.cat(toks + [t], 1), torch.cat(audio + [a], 1)
    assert toks.shape == (2, 120) and audio.shape == (2, 57600)
    assert torch.equal(toks[0], io["stream_toks"][0])
    for row in range(2):
        single = StreamCodec(codec)
        t1, a1 = single.push(batch[row])
        t2, a2 = single.flush()
        assert torch.equal(toks[row], torch.cat([t1, t2]))
        torch.testing.assert_close(audio[row], torch.cat([a1, a2]), atol=SIG_ATOL, rtol=0)


def test_reset_restarts_the_stream() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    enc = StreamEncoder(codec)
    enc.push(torch.randn(3, 5000))  # a different batch, abandoned half-way
    enc.reset()
    assert enc.buffered == 0 and enc.samples_in == 0
    toks = torch.cat([enc.push(io["sig"]), enc.flush()], 1)
    assert torch.equal(toks, io["stream_toks"])
    # flush restarts too: the same stream again gives the same tokens
    assert torch.equal(torch.cat([enc.push(io["sig"]), enc.flush()], 1), io["stream_toks"])


def test_counters_and_errors() -> None:
    codec = fixture_model("tiny_causal_4k")
    enc = StreamEncoder(codec)
    assert enc.push(torch.zeros(1, 1279)).shape == (1, 0)
    assert enc.buffered == 1279 and enc.num_valid_tokens == 4
    assert enc.push(torch.zeros(1, 1)).shape == (1, 4)
    with pytest.raises(InputError, match="streams"):
        enc.push(torch.zeros(2, 10))
    with pytest.raises(InputError, match="NaN"):
        enc.push(torch.full((1, 10), float("nan")))
    with pytest.raises(InputError, match="flush"):
        StreamEncoder(codec).flush()
    dec = StreamDecoder(codec)
    with pytest.raises(InputError, match="lie in"):
        dec.push(torch.tensor([4096]))
    with pytest.raises(InputError, match="integers"):
        dec.push(torch.tensor([1.0]))
    with pytest.raises(InputError, match="causal"):
        StreamEncoder(fixture_model("tiny_50hz"))


def test_streaming_model_shares_weights_and_matches() -> None:
    codec = fixture_model("tiny_causal_4k")
    fast = streaming_model(codec)
    assert fast is streaming_model(codec)  # cached
    assert fast.encoder.feature_proj.weight.data_ptr() == codec.encoder.feature_proj.weight.data_ptr()
    sig = fixture_io("tiny_causal_4k")["sig"][:, :5120]
    with torch.inference_mode():
        torch.testing.assert_close(fast.sig_to_feats(sig), codec.sig_to_feats(sig), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rows", [1, 4, 64, 65])
def test_few_rows_linear_equals_linear(rows: int) -> None:
    """The streaming copy's linear (``W @ x^T`` for few rows, F.linear beyond) equals nn.Linear
    for contiguous and non-contiguous inputs, with and without bias."""
    from focalcodec.streaming import _FewRowsLinear

    torch.manual_seed(0)
    for bias in (True, False):
        ref = torch.nn.Linear(48, 80, bias=bias)
        fast = torch.nn.Linear(48, 80, bias=bias)
        fast.load_state_dict(ref.state_dict())
        fast.__class__ = _FewRowsLinear
        x = torch.randn(1, 48, rows).transpose(1, 2)  # (1, rows, 48), not contiguous
        for inp in (x, x.contiguous(), x[0]):
            out = fast(inp)
            assert out.shape == ref(inp).shape and out.is_contiguous()
            torch.testing.assert_close(out, ref(inp), atol=1e-5, rtol=0)


@pytest.mark.parametrize("frames", [1, 4, 32, 33])
def test_fast_depthwise_conv_equals_conv(frames: int) -> None:
    """Small depthwise convs as window sums equal the convolution (few frames and, past
    ``FEW_FRAMES``, the regular path), padded or not."""
    from focalcodec.nn.layers import strided_conv_time_major
    from focalcodec.streaming import _FastDepthwiseConv1d

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(24, 24, 7, groups=24)
    x = torch.randn(2, frames + 6, 24)
    ref = strided_conv_time_major(x, conv)
    ref_padded = strided_conv_time_major(x, conv, (2, 1))
    conv.__class__ = _FastDepthwiseConv1d
    conv._prepare()
    torch.testing.assert_close(conv.forward_time_major(x), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv.forward_time_major(x, (2, 1)), ref_padded, atol=1e-5, rtol=0)
    torch.testing.assert_close(conv(x.transpose(1, 2)), ref.transpose(1, 2), atol=1e-5, rtol=0)


def test_ring_buffer_equals_concatenation() -> None:
    """The mirrored ring keeps exactly the newest frames, across wrap-arounds, a growing
    context and, through the causal pad, pushes too large for it (the copying path)."""
    from focalcodec.nn.layers import CausalPad
    from focalcodec.streaming import RING_NEW_FRAMES, _Ring, _RingCausalPad

    g = torch.Generator().manual_seed(0)
    history = torch.randn(2, 3, 5, generator=g)
    ring = _Ring(history, dim=1, limit=11, max_new=4)
    for _ in range(40):
        new = torch.randn(2, int(torch.randint(1, 5, (1,), generator=g)), 5, generator=g)
        expected = torch.cat([history[:, -11:], new], dim=1) if history.shape[1] else new
        assert torch.equal(ring.append(new), expected)
        history = torch.cat([history, new], dim=1)
        assert ring.shape == (2, min(11, history.shape[1]), 5)
        assert torch.equal(ring.newest(ring.length), history[:, -ring.length :])

    plain, rings = CausalPad(70), CausalPad(70)
    rings.__class__ = _RingCausalPad
    ctx_plain = ctx_ring = None
    for frames in (4, 1, RING_NEW_FRAMES + 5, 4, 2 * RING_NEW_FRAMES, 3):
        x = torch.randn(1, frames, 6, generator=g)
        out_plain, ctx_plain = plain(x, ctx_plain)
        out_ring, ctx_ring = rings(x, ctx_ring)
        assert torch.equal(out_ring, out_plain) and isinstance(ctx_ring, _Ring)


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_quantised_streaming(precision: str) -> None:
    """float16 weights keep the tokens; int8 is an approximation that keeps the shapes and
    most of the signal."""
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    sc = StreamCodec(codec, precision=precision)
    t1, a1 = sc.push(io["sig"])
    t2, a2 = sc.flush()
    toks, audio = torch.cat([t1, t2], 1), torch.cat([a1, a2], 1)
    ref = io["stream_sig"]
    assert toks.shape == io["stream_toks"].shape and audio.shape == ref.shape
    agreement = (toks == io["stream_toks"]).float().mean()
    snr = 10 * torch.log10(ref.pow(2).sum() / (audio - ref).pow(2).sum())
    if precision == "float16":
        assert agreement > 0.95 and snr > 20
    else:
        assert agreement > 0.2 and torch.isfinite(audio).all()
    with pytest.raises(InputError, match="precision"):
        StreamEncoder(codec, precision="int4")


def test_mixed_precision_keeps_encoder_tokens() -> None:
    """float16 tokens with int8 synthesis: each stream quantises only its own half, so the
    tokens are those of the float16 encoder and the encoder copy's decoder stays float."""
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    mixed = StreamCodec(codec, precision="float16", decoder_precision="int8")
    half = StreamCodec(codec, precision="float16")
    toks, audio = mixed.push(io["sig"])
    assert torch.equal(toks, half.push(io["sig"])[0])
    assert audio.shape[-1] == 1920 * (toks.shape[-1] // 4) and torch.isfinite(audio).all()
    enc_model, dec_model = mixed.encoder.model, mixed.decoder.model
    assert type(enc_model.decoder.backbone.layers[0].pwconv1).__name__ == "_FewRowsLinear"
    quantized = torch.ao.nn.quantized.dynamic.Linear
    assert isinstance(dec_model.decoder.backbone.layers[0].pwconv1, quantized)
    assert isinstance(enc_model.compressor.layers[0].focal_block.feed_forward.in_proj, quantized)
    with pytest.raises(InputError, match="part"):
        streaming_model(codec, "int8", part="middle")


def test_chunked_pseudo_streaming_non_causal() -> None:
    codec, io = fixture_model("tiny_50hz"), fixture_io("tiny_50hz")
    sig = io["sig"][0]
    cs = ChunkedStream(codec)
    assert cs.latency_ms == pytest.approx(540.0)
    outs, i = [], 0
    for size in [3000, 9000, 1, 12000, 5000]:
        outs.append(cs.push(sig[i : i + size]))
        i += size
    outs.append(cs.push(sig[i:]))
    outs.append(cs.flush())
    out = torch.cat(outs)
    assert out.shape == sig.shape  # 16 kHz in and out, every sample accounted for
    offline = codec.sig_to_sig(sig[None])[0]
    # Away from the chunk joins the 3 s of context make it very close to the offline pass.
    err = (out - offline).pow(2).mean() / offline.pow(2).mean()
    assert err < 0.2
    # With one chunk covering the whole input it is exactly the offline pass.
    whole = ChunkedStream(codec, chunk_ms=5000)
    torch.testing.assert_close(torch.cat([whole.push(sig), whole.flush()]), offline, atol=SIG_ATOL, rtol=0)
