"""kNN voice conversion: the reference fixture, splits, streaming, real speech, speaker sets."""

from __future__ import annotations

import pytest
import torch
from conftest import fixture_io, fixture_model, speech_files

from focalcodec import InputError
from focalcodec.audio import load_audio
from focalcodec.streaming import StreamCodec, StreamDecoder
from focalcodec.vc import SpeakerSet, auto_splits, build_speaker_set, convert, convert_tokens

SIG_ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def short_speech():
    """The three shortest eval utterances (fast to encode)."""
    import soundfile as sf

    files = sorted(speech_files(), key=lambda f: sf.info(str(f)).frames)
    return files[:3]


@pytest.mark.parametrize("name", ["tiny_causal_4k", "tiny_50hz"])
@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_fixture_vc_sig(name: str, num_splits) -> None:
    codec, io = fixture_model(name), fixture_io(name)
    out = convert_tokens(codec, io["toks"], io["matching_set"], num_splits=num_splits)
    torch.testing.assert_close(out, io["vc_sig"], atol=SIG_ATOL, rtol=0)


def test_streaming_vc_matches_offline() -> None:
    codec, io = fixture_model("tiny_causal_4k"), fixture_io("tiny_causal_4k")
    dec = StreamDecoder(codec, matching_set=io["matching_set"])
    toks = io["toks"]
    out = torch.cat([dec.push(toks[:, i : i + 5]) for i in range(0, toks.shape[1], 5)] + [dec.flush()], 1)
    torch.testing.assert_close(out, io["vc_sig"], atol=SIG_ATOL, rtol=0)


def test_auto_splits_bounds_the_block() -> None:
    assert auto_splits(100, 1000) == 1
    assert auto_splits(50_000, 100_000, budget_bytes=2**20) == 19074


def test_real_speech_conversion_lengths(short_speech, tmp_path) -> None:
    feat_model = fixture_model("tiny_50hz")
    speaker = build_speaker_set(feat_model, short_speech[:2])
    assert speaker.dim == 64 and len(speaker.sources) == 2
    assert speaker.num_frames == sum(speaker.frames)
    assert speaker.model_fingerprint == feat_model.fingerprint
    src = load_audio(short_speech[2])
    out = convert(feat_model, src, speaker)  # 16 kHz -> 16 kHz
    assert out.shape == src.shape and torch.isfinite(out).all()
    causal = fixture_model("tiny_causal_4k")
    out = convert(causal, short_speech[2], speaker)  # from a file, 16 kHz -> 24 kHz
    assert out.shape == (src.shape[0] * 3 // 2,)
    # Streaming conversion with the same set gives the offline conversion of the input
    # zero-padded to whole chunks (what the stream codes).
    sc = StreamCodec(causal, matching_set=speaker.feats)
    _, a1 = sc.push(src)
    _, a2 = sc.flush()
    streamed = torch.cat([a1, a2])
    padded = torch.nn.functional.pad(src, (0, -src.shape[0] % causal.chunk_size))
    torch.testing.assert_close(streamed, convert(causal, padded, speaker), atol=SIG_ATOL, rtol=0)


def test_directory_reference(short_speech, tmp_path) -> None:
    import shutil

    for f in short_speech[:2]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "notes.txt").write_text("not audio")
    speaker = build_speaker_set(fixture_model("tiny_50hz"), [tmp_path])
    assert [p.split("/")[-1] for p in speaker.sources] == sorted(f.name for f in short_speech[:2])


def test_speaker_set_roundtrip(tmp_path) -> None:
    model = fixture_model("tiny_50hz")
    g = torch.Generator().manual_seed(3)
    speaker = build_speaker_set(model, [0.1 * torch.randn(9000, generator=g), 0.1 * torch.randn(4000, generator=g)])
    path = speaker.save(tmp_path / "voice.safetensors")
    again = SpeakerSet.load(path, model=model)
    assert torch.equal(again.feats, speaker.feats)
    assert (again.model_id, again.model_fingerprint, again.sources, again.frames) == (
        speaker.model_id,
        speaker.model_fingerprint,
        speaker.sources,
        speaker.frames,
    )
    src = fixture_io("tiny_50hz")["sig"]
    assert torch.equal(convert(model, src, again), convert(model, src, speaker))


def test_speaker_set_is_checked_against_its_feature_model(tmp_path) -> None:
    """A set is used only with the feature model that built it (architecture and weights), as a
    .fc file only with its decoder; older sets without that identity load with one warning."""
    import copy
    import warnings

    from safetensors.torch import save_file

    model = fixture_model("tiny_50hz")
    speaker = build_speaker_set(model, [0.1 * torch.randn(9000, generator=torch.Generator().manual_seed(3))])
    path = speaker.save(tmp_path / "voice.safetensors")
    with pytest.raises(InputError, match="architecture") as exc:
        SpeakerSet.load(path, model=fixture_model("tiny_25hz"))
    assert "tiny_50hz" in str(exc.value) and "tiny_25hz" in str(exc.value) and "--save-speaker-set" in str(exc.value)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.decoder.backbone.embedding.weight.mul_(1.5)
    with pytest.raises(InputError, match="other weights") as exc:
        SpeakerSet.load(path, model=other)
    assert "--allow-other-weights" in str(exc.value) and "--features-model" in str(exc.value)
    assert torch.equal(SpeakerSet.load(path, model=other, check_weights=False).feats, speaker.feats)
    # An older set: no weights digest (or no identity at all) -> one warning, then it loads.
    for dropped in (("model_weights_sha256",), ("model_fingerprint", "model_weights_sha256")):
        meta = {"format": "focalcodec-speaker-set", "model_id": "tiny_50hz", "model_fingerprint": model.fingerprint}
        for key in dropped:
            meta.pop(key, None)
        old = tmp_path / f"old{len(dropped)}.safetensors"
        save_file({"feats": speaker.feats}, str(old), metadata=meta)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert torch.equal(SpeakerSet.load(old, model=model).feats, speaker.feats)
        assert len(caught) == 1 and "older speaker set" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SpeakerSet.load(path, model=model)  # a set with its identity: no warning


def test_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    model = fixture_model("tiny_50hz")
    with pytest.raises(InputError, match="not found"):
        SpeakerSet.load(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="speaker set"):
        SpeakerSet.load(tmp_path / "other.safetensors")
    with pytest.raises(InputError, match="too short"):
        build_speaker_set(model, [torch.zeros(100)])
    with pytest.raises(InputError, match="not found"):
        build_speaker_set(model, [tmp_path / "nope.wav"])
    with pytest.raises(InputError, match="width"):
        convert(model, torch.zeros(4000), torch.zeros(10, 32))


def test_python_api_takes_arrays_and_refuses_interleaved_references():
    """NumPy/list tokens, NumPy matching sets and NumPy references work as tensors do (they
    failed with AttributeError / TypeError); a (N, 2) reference was flattened into an
    interleaved signal at twice the length (garbage features) and is now refused."""
    from focalcodec.vc import build_speaker_set, convert_tokens, matching_features

    model = fixture_model("tiny_50hz")
    ref = torch.linspace(-0.3, 0.3, 8000)
    speaker = build_speaker_set(model, [ref])
    assert torch.equal(build_speaker_set(model, [ref.numpy()]).feats, speaker.feats)
    assert torch.equal(build_speaker_set(model, [ref[None]]).feats, speaker.feats)  # (1, N) is one signal
    with pytest.raises(InputError, match=r"one mono signal.*\(8000, 2\)"):
        build_speaker_set(model, [torch.stack([ref, ref], dim=1)])
    assert torch.equal(matching_features(model, speaker.feats.numpy()), speaker.feats)
    toks = model.encode(ref).tokens
    want = convert_tokens(model, toks, speaker)
    for other in (toks.numpy(), toks.tolist()):
        assert torch.equal(convert_tokens(model, other, speaker), want)
    with pytest.raises(InputError, match="integers"):
        convert_tokens(model, toks.float(), speaker)
