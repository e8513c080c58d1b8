"""The device-dependent checks, run on the device that ``pytest --device`` names (default:
``cpu``; skipped with the reason when that device is not available here)::

    python -m pytest -q tests/test_device.py --device cuda

Models live on the device and inputs go there; every result is compared with the reference
fixtures (tokens identical, floats within 1e-4) or with the same model on the same device
(batch invariance, streams, exports, tokenization). Covered: every part output in the fixtures,
padded batches against solo items, the stream classes (reference chunks, random pieces,
batches of streams, and the streaming engine's join/leave when it is present), ONNX and
TorchScript exports made from the device model, autocast in float16 and bfloat16 (float32
islands, float32 outputs) and a bfloat16 model end to end, corpus tokenization, and one
optimiser step of every training stage (fp32, and bf16 / fp16 mixed precision).
``benchmarks/gpu_suite.py`` runs this module with ``--device cuda`` before its benchmarks.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SPEECH, device_model, fixture_io, fixture_model
from test_batching import _batch, _signals
from test_fixtures import ALL, _stream, assert_same

from focalcodec.audio import load_audio
from focalcodec.streaming import StreamCodec, StreamDecoder, StreamEncoder, StreamEngine

pytestmark = pytest.mark.usefixtures("one_thread")

ATOL = 1e-4
CAUSAL = "tiny_causal_4k"


def _io(name: str, device: str) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in fixture_io(name).items()}


def _same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """``assert_same`` of tests/test_fixtures.py, for a result on any device."""
    assert_same(actual.cpu(), expected.cpu())


def _close(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual.cpu(), expected.cpu(), atol=atol, rtol=0)


# -- equivalence with the reference fixtures --------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@torch.no_grad()
def test_fixture_outputs(name: str, device: str) -> None:
    codec, io = device_model(name, device), _io(name, device)
    sig = io["sig"]
    assert next(codec.parameters()).device == sig.device
    _same(codec.sig_to_feats(sig), io["feats"])
    _same(codec.sig_to_lats(sig), io["lats"])
    _same(codec.sig_to_toks(sig), io["toks"])
    _same(codec.sig_to_codes(sig), io["codes"])
    _same(codec.sig_to_qfeats(sig), io["qfeats"])
    _same(codec.toks_to_sig(io["toks"]), io["toks_sig"])
    toks, codes, rec = codec(sig)
    _same(toks, io["toks"])
    _same(rec, io["rec_sig"])
    _same(codec.sig_to_toks(io["batch_sig"], length=io["batch_length"]), io["batch_toks"])
    _same(codec.toks_to_sig(io["toks"], matching_set=io["matching_set"], topk=4), io["vc_sig"])
    if codec.causal:
        stream_toks, stream_sig = _stream(codec, sig)
        _same(stream_toks, io["stream_toks"])
        _same(stream_sig, io["stream_sig"])
        _same(codec.sig_to_toks(sig.repeat(1, 5)), io["long_toks"])


# -- batch invariance -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_50hz", "tiny_12_5hz", CAUSAL])
def test_batches_equal_solo_items(name: str, device: str) -> None:
    codec = device_model(name, device)
    sigs = _signals()
    wav, lengths = _batch(sigs)
    toks, tok_lens = codec.encode(wav.to(device), lengths)
    assert toks.device.type == torch.device(device).type
    for i, s in enumerate(sigs):
        solo = codec.encode(s.to(device)).tokens
        assert torch.equal(toks[i, : tok_lens[i]].cpu(), solo.cpu()), f"item {i}: batch tokens differ from solo"
    # long items (the per-item feature path on CPU)
    long_sigs = [torch.cat([s, s])[: 70000 - 5000 * i] for i, s in enumerate(sigs[:2])]
    wav, lengths = _batch(long_sigs)
    toks, tok_lens = codec.encode(wav.to(device), lengths)
    for i, s in enumerate(long_sigs):
        assert torch.equal(toks[i, : tok_lens[i]].cpu(), codec.encode(s.to(device)).tokens.cpu()), f"long item {i}"
    lens = [37, 12, 50, 1]
    rand = torch.randint(0, codec.codebook_size, (len(lens), max(lens)), generator=torch.Generator().manual_seed(0))
    audio, out_lens = codec.decode(rand.to(device), lens)
    for i, n in enumerate(lens):
        solo = codec.decode(rand[i, :n].to(device)).audio
        _close(audio[i, : out_lens[i]], solo)
        assert not audio[i, out_lens[i] :].any()


# -- streaming --------------------------------------------------------------------------------
def _random_pieces(n: int, seed: int) -> list[int]:
    """Sizes of random pieces of ``n`` samples, empty and 1-sample pieces among them."""
    gen = torch.Generator().manual_seed(seed)
    sizes = [int(s) for s in torch.randint(0, 3000, (n // 500 + 1,), generator=gen)]
    sizes[::7] = [1] * len(sizes[::7])
    sizes[3::11] = [0] * len(sizes[3::11])
    sizes.append(max(0, n - sum(sizes)))
    return sizes


def _push_all(stream: StreamCodec, sig: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    toks, audio, i = [], [], 0
    for size in sizes:
        t, a = stream.push(sig[..., i : i + size])
        i += size
        toks.append(t)
        audio.append(a)
    t, a = stream.flush()
    return torch.cat(toks + [t], -1), torch.cat(audio + [a], -1)


@pytest.mark.parametrize("optimize", [False, True])
def test_streams_reproduce_the_fixture(optimize: bool, device: str) -> None:
    codec, io = device_model(CAUSAL, device), _io(CAUSAL, device)
    n = io["sig"].shape[1]
    enc, dec = StreamEncoder(codec, optimize=optimize), StreamDecoder(codec, optimize=optimize)
    toks = torch.cat([enc.push(io["sig"][:, i : i + 1280]) for i in range(0, n, 1280)] + [enc.flush()], 1)
    audio = torch.cat([dec.push(toks), dec.flush()], 1)
    _same(toks, io["stream_toks"])
    _same(audio, io["stream_sig"])
    sizes = _random_pieces(n, seed=0)
    toks, audio = _push_all(StreamCodec(codec, optimize=optimize), io["sig"][0], sizes)
    _same(toks, io["stream_toks"][0])
    _same(audio, io["stream_sig"][0])


def test_batch_of_streams_equals_single_streams(device: str) -> None:
    codec, io = device_model(CAUSAL, device), _io(CAUSAL, device)
    sizes = [1000, 3000, 17, 4000, 20000, 9683]
    toks, audio = _push_all(StreamCodec(codec), io["batch_sig"], sizes)
    _same(toks[0], io["stream_toks"][0])
    for row in range(io["batch_sig"].shape[0]):
        t, a = _push_all(StreamCodec(codec), io["batch_sig"][row], [io["batch_sig"].shape[1]])
        _same(toks[row], t)
        _close(audio[row], a)


def test_engine_streams_join_and_leave(device: str) -> None:
    codec, io = device_model(CAUSAL, device), _io(CAUSAL, device)
    sigs = [io["sig"][0], io["batch_sig"][1], 0.5 * io["sig"][0].flip(0)[:30000]]
    engine = StreamEngine(codec, max_streams=4)
    gen = torch.Generator().manual_seed(0)
    got: dict[int, list] = {}
    sid_of: dict[int, int] = {}
    pos = [0] * len(sigs)
    # stream 0 opens first, stream 1 joins after 5 pushes, stream 2 after stream 0 has left
    for rnd in range(200):
        for k, sig in enumerate(sigs):
            opens = (k == 0 and rnd == 0) or (k == 1 and rnd == 5) or (k == 2 and 0 in got and 0 not in sid_of)
            if opens and k not in got:
                sid_of[k] = engine.open(mode="resynth")
                got[k] = [[], []]
            if k not in sid_of or pos[k] >= len(sig):
                continue
            size = int(torch.randint(1, 3000, (1,), generator=gen))
            engine.push(sid_of[k], sig[pos[k] : pos[k] + size])
            pos[k] += size
            if pos[k] >= len(sig):
                engine.flush(sid_of[k])
        while engine.ready():
            for sid, out in engine.step().items():
                k = next(j for j, s in sid_of.items() if s == sid)
                got[k][0].append(out.tokens.reshape(-1).cpu())
                got[k][1].append(out.audio.reshape(-1).cpu())
                if out.flushed:
                    engine.close(sid)
                    del sid_of[k]
        if len(got) == len(sigs) and not sid_of:
            break
    assert len(got) == len(sigs) and not sid_of, "every stream must open, flush and close"
    for k, sig in enumerate(sigs):
        t, a = _push_all(StreamCodec(codec), sig, [len(sig)])  # the stream alone, same device
        assert torch.equal(torch.cat(got[k][0]), t), f"stream {k}: tokens differ from the stream alone"
        _close(torch.cat(got[k][1]), a)


# -- exports ----------------------------------------------------------------------------------
def test_exports_from_the_device_model(device: str, tmp_path: Path) -> None:
    import onnxruntime as ort

    from focalcodec.export import export_onnx, export_torchscript
    from focalcodec.streaming.export import initial_state

    codec, io = device_model(CAUSAL, device), _io(CAUSAL, device)
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    enc = ort.InferenceSession(str(export_onnx(codec, tmp_path / "e.onnx", "encode")), providers=providers)
    dec = ort.InferenceSession(str(export_onnx(codec, tmp_path / "d.onnx", "decode")), providers=providers)
    jenc = torch.jit.load(str(export_torchscript(codec, tmp_path / "e.pt", "encode")), map_location=device)
    jdec = torch.jit.load(str(export_torchscript(codec, tmp_path / "d.pt", "decode")), map_location=device)
    sig = io["sig"]
    for x in (sig, torch.cat([sig[:, :20001], 0.5 * sig[:, 5000:25001]])):
        with torch.no_grad():
            toks = codec.sig_to_toks(x)
            audio = codec.toks_to_sig(toks)
            assert torch.equal(jenc(x), toks)
            _close(jdec(toks), audio)
        assert torch.equal(torch.from_numpy(enc.run(None, {"sig": x.cpu().numpy()})[0]), toks.cpu())
        _close(torch.from_numpy(dec.run(None, {"toks": toks.cpu().numpy()})[0]), audio)
    assert torch.equal(torch.from_numpy(enc.run(None, {"sig": sig.cpu().numpy()})[0]), io["toks"].cpu())
    step = torch.jit.load(str(export_torchscript(codec, tmp_path / "se.pt", "stream_encode")), map_location=device)
    state = list(initial_state(codec, "encode").values())
    toks = []
    with torch.no_grad():
        for i in range(0, 12 * 1280, 1280):
            t, *state = step(sig[:, i : i + 1280], *state)
            toks.append(t)
    _same(torch.cat(toks, 1), io["stream_toks"][:, :48])


# -- reduced precision ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_50hz", CAUSAL])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_keeps_float32_islands(name: str, dtype: torch.dtype, device: str) -> None:
    codec, io = device_model(name, device), _io(name, device)
    with torch.inference_mode():
        toks = codec.sig_to_toks(io["sig"])
        ref = codec.toks_to_sig(toks)
        with torch.autocast(torch.device(device).type, dtype=dtype):
            lats = codec.sig_to_lats(io["sig"])
            auto_toks = codec.sig_to_toks(io["sig"])
            sig = codec.toks_to_sig(toks)
            enc = codec.encode(io["sig"][0])
            dec = codec.decode(toks[0])
    assert lats.dtype == torch.float32 and sig.dtype == torch.float32 and dec.audio.dtype == torch.float32
    _close(lats.norm(dim=-1), torch.ones(lats.shape[:-1]), atol=1e-5)
    assert (auto_toks == toks).float().mean() > 0.9
    assert (enc.tokens == toks[0]).float().mean() > 0.9
    snr = 10 * torch.log10(ref.pow(2).sum() / (sig - ref).pow(2).sum())
    assert sig.shape == ref.shape and snr > 25, f"SNR {float(snr):.1f} dB"


def test_bfloat16_model_end_to_end(device: str) -> None:
    """A model cast to bfloat16 encodes and decodes (the authors' Vocos head fails in bf16)."""
    for name in ("tiny_50hz", CAUSAL):
        io = _io(name, device)
        half = copy.deepcopy(fixture_model(name)).to(device=device, dtype=torch.bfloat16)
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            toks = half.sig_to_toks(io["sig"].bfloat16())
            sig = half.toks_to_sig(toks)
        # Measured on CPU: 0.88 (tiny_50hz) and 0.97 (causal) of the float32 tokens; random weights
        # sit closer to the sign boundaries than trained ones, so this bounds a broken cast, not bf16.
        assert toks.shape == io["toks"].shape and (toks == io["toks"]).float().mean() > 0.75
        assert sig.shape == io["toks_sig"].shape and torch.isfinite(sig.float()).all()
        out = half.decode(half.encode(io["sig"][0]).tokens).audio
        assert out.dtype == torch.float32 and torch.isfinite(out).all()


# -- corpus tokenization ----------------------------------------------------------------------
def test_tokenize_corpus_equals_solo_encode(device: str, tmp_path: Path) -> None:
    from focalcodec.corpus import TokenCorpus, list_corpus, tokenize_corpus

    items = [i for i in list_corpus(SPEECH / "eval") if i.id.startswith(("s2i_", "ravdess_"))][:6]
    assert len(items) == 6
    model = device_model("tiny_50hz", device)
    summary = tokenize_corpus(
        items,
        tmp_path / "tokens",
        model,
        model_source=str(FIXTURES / "tiny_50hz"),
        device=device,
        shard_size=4,
        window=6,
        batch_seconds=8.0,
        num_workers=0,
        progress=False,
    )
    assert summary.num_utterances == 6 and summary.num_errors == 0
    corpus = TokenCorpus(tmp_path / "tokens")
    assert sorted(corpus.ids()) == sorted(i.id for i in items)
    for item in items:
        solo = model.encode(load_audio(item.file, warn=False).to(device)).tokens
        assert torch.equal(corpus[item.id].tokens, solo.cpu()), item.id


# -- one optimiser step of every training stage -----------------------------------------------
TINY, TINY_CAUSAL = str(FIXTURES / "tiny_50hz"), str(FIXTURES / CAUSAL)
STAGES = {
    "quantizer": {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}},
    "decoder_vocos": {"stage": "decoder", "model": TINY, "init": {"encoder": TINY}, "discriminator": {"width": 0.05}},
    "decoder_wavenext": {
        "stage": "decoder",
        "model": TINY_CAUSAL,
        "init": {"encoder": TINY},
        "discriminator": {"width": 0.05},
    },
    "pos_conv": {"stage": "pos_conv", "model": TINY_CAUSAL, "init": {"teacher": TINY}},
    "encoder": {"stage": "encoder", "model": TINY_CAUSAL, "init": {"teacher": TINY, "encoder": TINY}},
    "joint": {
        "stage": "joint",
        "model": TINY_CAUSAL,
        "init": {"teacher": TINY, "encoder": TINY, "compressor": TINY_CAUSAL, "decompressor": TINY_CAUSAL},
    },
}


@pytest.fixture(scope="module")
def short_speech(tmp_path_factory) -> Path:
    """A manifest of the 4 shortest utterances of at least 1 s of the eval speech."""
    from focalcodec.train.data import build_manifest, write_manifest

    entries = sorted(build_manifest(SPEECH / "eval", min_duration=1.0), key=lambda e: e["duration"])[:4]
    return write_manifest(entries, tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.mark.parametrize(
    "stage, precision",
    [(s, "fp32") for s in STAGES] + [("quantizer", "bf16"), ("quantizer", "fp16"), ("decoder_vocos", "bf16")],
)
def test_training_step(stage: str, precision: str, device: str, short_speech: Path, tmp_path: Path) -> None:
    from focalcodec.train.config import load_train_config
    from focalcodec.train.trainer import Trainer

    overrides = [
        f"data.train={short_speech}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.num_buckets=1",
        "data.segment_seconds=1.0",
        "data.crop_frames=22",
        f"train.device={device}",
        f"train.precision={precision}",
        "train.max_steps=1",
        "train.log_every=1",
        "train.ckpt_every=0",
        "train.progress=false",
        "train.tensorboard=false",
        "train.resume=none",
        "train.num_threads=1",
        f"output_dir={tmp_path}",
    ]
    if STAGES[stage]["stage"] != "decoder":
        overrides.remove("data.crop_frames=22")
    if stage == "decoder_wavenext":
        overrides.append("data.target_sample_rate=24000")
    trainer = Trainer(load_train_config(STAGES[stage], overrides))
    params = [p for net in trainer.stage.nets.values() for p in net.parameters() if p.requires_grad]
    assert params and all(p.device.type == torch.device(device).type for p in params)
    before = [p.detach().clone() for p in params]
    logs = trainer.fit()
    trainer.close()
    loss = logs.get("loss", logs.get("loss_generator"))
    assert loss is not None and torch.isfinite(torch.tensor(loss)), logs
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params, strict=True))
    assert changed > len(params) // 2, f"only {changed} of {len(params)} trained tensors changed"
    assert (tmp_path / "checkpoints" / "latest").is_file()
