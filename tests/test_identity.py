"""One identity for a model: the weights (a hash of the state dict, cached), not the folder's
name. ``.fc`` files of format version 2 carry it; version-1 files still decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, SPEECH, fixture_model

import focalcodec
from focalcodec import CompressedAudio, FocalCodec
from focalcodec import hub as hub_module
from focalcodec.bitstream import ModelMismatchError
from focalcodec.cli import main

CLIP = SPEECH / "eval" / "s2i_9944c8ee.flac"


def one_error_line(capsys, argv) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "internal error" not in err[0], err
    return err[0]


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    """The tiny 50 Hz architecture with other weights, in a folder of the same name."""
    model = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz")
    with torch.no_grad():
        model.decoder.backbone.embedding.weight.mul_(1.5)
    folder = tmp_path_factory.mktemp("other") / "tiny_50hz"
    model.save_pretrained(folder)
    return folder


def test_weights_digest_is_the_state_dict_hash_and_is_cached(monkeypatch) -> None:
    model = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz")
    calls = []
    real = hub_module.state_dict_sha256  # the one definition of the digest
    monkeypatch.setattr("focalcodec.codec.state_dict_sha256", lambda sd: calls.append(1) or real(sd))
    first = model.weights_sha256
    assert first == real(model.state_dict()) and len(first) == 64
    assert model.weights_sha256 == first and len(calls) == 1  # cached
    with torch.no_grad():
        model.quantizer.dim  # noqa: B018 - no tensor touched: still cached
        next(model.decoder.parameters()).add_(1.0)
    assert model.weights_sha256 != first and len(calls) == 2  # an in-place change is seen
    # The same weights from another folder or key layout give the same digest.
    legacy = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz_legacy")
    assert legacy.weights_sha256 == fixture_model("tiny_50hz").weights_sha256


def test_same_weights_in_a_renamed_folder_decode(tmp_path) -> None:
    renamed = tmp_path / "my_renamed_copy"
    shutil.copytree(FIXTURES / "tiny_50hz", renamed)
    data = focalcodec.compress(CLIP, fixture_model("tiny_50hz"))
    audio, _ = focalcodec.decompress(data, renamed)  # before: refused, the names differ
    assert audio.shape[0] == sf.info(str(CLIP)).frames


def test_other_weights_in_a_same_named_folder_are_refused(other_weights, tmp_path, capsys) -> None:
    data = focalcodec.compress(CLIP, fixture_model("tiny_50hz"))
    with pytest.raises(ModelMismatchError, match="other weights"):  # before: decoded silently
        focalcodec.decompress(data, other_weights)
    audio, _ = focalcodec.decompress(data, other_weights, check_weights=False)  # the explicit override
    assert audio.shape[0] == sf.info(str(CLIP)).frames
    src = tmp_path / "x.fc"
    src.write_bytes(data)
    line = one_error_line(capsys, ["decode", str(src), "-o", str(tmp_path / "x.wav"), "--model", str(other_weights)])
    assert "other weights" in line and "--allow-other-weights" in line
    assert not (tmp_path / "x.wav").exists()
    argv = ["decode", str(src), "-o", str(tmp_path / "x.wav"), "--model", str(other_weights), "--allow-other-weights"]
    assert main(argv) == 0 and (tmp_path / "x.wav").is_file()


def test_version_1_files_decode_by_name(tmp_path) -> None:
    """A file written before format version 2 (no weights digest) is still read; its model
    is recognised by name, as version 1 did."""
    codec = fixture_model("tiny_50hz")
    new = CompressedAudio.from_bytes(focalcodec.compress(CLIP, codec))
    old = CompressedAudio(**{**new.__dict__, "weights": "", "version": None})
    data = old.to_bytes()
    assert data[4] == 1 and len(data) == new.size - 8
    audio, _ = focalcodec.decompress(data, codec)
    np.testing.assert_array_equal(audio.numpy(), focalcodec.decompress(new, codec).audio.numpy())
    renamed = tmp_path / "renamed"
    shutil.copytree(FIXTURES / "tiny_50hz", renamed)
    with pytest.raises(ModelMismatchError, match="version-1"):
        focalcodec.decompress(data, renamed)
    focalcodec.decompress(data, renamed, check_weights=False)


def test_model_dot_and_readable_names(tmp_path, monkeypatch, capsys) -> None:
    from focalcodec.hub import checkpoint_name

    folder = tmp_path / "my_codec"
    shutil.copytree(FIXTURES / "tiny_50hz", folder)
    monkeypatch.chdir(folder)
    assert main(["encode", str(CLIP), "-o", str(tmp_path / "a.fc"), "--model", "."]) == 0  # before: failed
    stream = CompressedAudio.load(tmp_path / "a.fc")
    assert stream.model_name == "my_codec" and stream.weights == fixture_model("tiny_50hz").weights_sha256[:16]
    assert main(["decode", str(tmp_path / "a.fc"), "-o", str(tmp_path / "a.wav"), "--model", "."]) == 0
    # Hugging Face cache snapshots are named after their repo, not their commit hash.
    for repo, name in (("lucadellalib--focalcodec_50hz", "focalcodec_50hz"), ("alice--mycodec", "alice/mycodec")):
        snap = tmp_path / "hub" / f"models--{repo}" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
        shutil.copytree(FIXTURES / "tiny_50hz", snap)
        assert checkpoint_name(snap) == name
        assert FocalCodec.from_pretrained(snap).model_id == name


def test_token_corpus_identity_is_the_same_digest() -> None:
    from focalcodec.corpus import model_identity
    from focalcodec.hub import state_dict_sha256

    model = fixture_model("tiny_50hz")
    assert model_identity(model)["weights_sha256"] == model.weights_sha256 == state_dict_sha256(model.state_dict())
