"""Loading and saving checkpoints: every accepted source, both layouts, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, fixture_io
from safetensors.torch import load_file

from focalcodec import CheckpointError, ConfigError, FocalCodec, HubError
from focalcodec.hub import load_state_dict


def _toks(codec: FocalCodec) -> torch.Tensor:
    with torch.no_grad():
        return codec.sig_to_toks(fixture_io("tiny_50hz")["sig"])


def test_legacy_and_current_layouts_give_identical_weights() -> None:
    a = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz").state_dict()
    b = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz_legacy").state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_pretrained_round_trip(tmp_path: Path) -> None:
    codec = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz_legacy")
    codec.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    # The config is written back exactly (legacy Vocos fields included).
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == json.loads(
        (FIXTURES / "tiny_50hz" / "config.json").read_text()
    )
    # Written in the current layout, equal to the current-layout fixture file.
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    ref = load_file(str(FIXTURES / "tiny_50hz" / "model.safetensors"))
    assert saved.keys() == ref.keys() and all(torch.equal(saved[k], ref[k]) for k in ref)
    assert torch.equal(_toks(FocalCodec.from_pretrained(tmp_path / "out")), fixture_io("tiny_50hz")["toks"])


def test_pt_weights_and_config_file_with_sibling(tmp_path: Path) -> None:
    codec = FocalCodec.from_pretrained(FIXTURES / "tiny_50hz")
    codec.save_pretrained(tmp_path / "pt", safetensors=False)
    assert (tmp_path / "pt" / "model.pt").is_file()
    assert torch.equal(_toks(FocalCodec.from_pretrained(tmp_path / "pt")), fixture_io("tiny_50hz")["toks"])
    # X.json with a sibling X.safetensors (the reference's from_config(..., pretrained=True) layout).
    shutil.copy(FIXTURES / "tiny_50hz" / "config.json", tmp_path / "mine.json")
    shutil.copy(FIXTURES / "tiny_50hz" / "model.safetensors", tmp_path / "mine.safetensors")
    loaded = FocalCodec.from_pretrained(tmp_path / "mine.json")
    assert loaded.model_id == "mine"
    assert torch.equal(_toks(loaded), fixture_io("tiny_50hz")["toks"])


def test_wrong_checkpoint_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    # Weights of the 25 Hz fixture under the 50 Hz config: shapes differ.
    shutil.copy(FIXTURES / "tiny_50hz" / "config.json", tmp_path / "config.json")
    shutil.copy(FIXTURES / "tiny_25hz" / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"wrong shapes: compressor\.layers\.0\.downscale\.downscale\.weight"):
        FocalCodec.from_pretrained(tmp_path)
    # Causal weights under a non-causal config: missing and unexpected keys are named.
    shutil.copy(FIXTURES / "tiny_causal_4k" / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as info:
        FocalCodec.from_pretrained(tmp_path)
    message = str(info.value)
    assert "missing keys: " in message and "modulation_norm.weight" in message
    assert "unexpected keys: " in message and "modulation_norm.alpha" in message
    assert ":;" not in message and "architecture of its config: missing keys: " in message  # one readable line


def test_missing_and_extra_tensor(tmp_path: Path) -> None:
    state = load_file(str(FIXTURES / "tiny_50hz" / "model.safetensors"))
    del state["decoder.head.proj.bias"]
    state["decoder.head.extra"] = torch.zeros(3)
    codec = FocalCodec.from_config(FIXTURES / "tiny_50hz" / "config.json")
    with pytest.raises(
        CheckpointError, match=r"missing keys: decoder\.head\.proj\.bias.*unexpected keys: decoder\.head\.extra"
    ):
        load_state_dict(codec, state)


def test_truncated_and_foreign_weight_files(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "tiny_50hz" / "config.json", tmp_path / "config.json")
    data = (FIXTURES / "tiny_50hz" / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        FocalCodec.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        FocalCodec.from_pretrained(tmp_path)


def test_directory_without_weights_or_config(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "tiny_50hz" / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors or model.pt"):
        FocalCodec.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="config file not found"):
        FocalCodec.from_pretrained(tmp_path / "missing.json")


def test_offline_hub_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set.*--local-dir DIR"):
        FocalCodec.from_pretrained("lucadellalib/focalcodec_50hz")
    with pytest.raises(HubError, match="focalcodec_25hz"):
        FocalCodec.from_pretrained("focalcodec_25hz")


def test_bad_source_strings() -> None:
    with pytest.raises(ConfigError, match="not a local directory"):
        FocalCodec.from_pretrained("no/such/thing/here")


def test_hub_messages_say_hf_download_and_fail_fast_without_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: the Hub's name does not resolve, so only the cache is tried (huggingface_hub
    used to retry for about 27 s) and the message names ``hf download`` (``huggingface-cli``
    is no longer installed by current huggingface_hub)."""
    import socket

    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    from focalcodec import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_RESOLVED", {})
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(socket.gaierror(-2, "unknown")))
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append(kwargs)
        if not kwargs.get("local_files_only"):
            raise AssertionError("tried the network although the Hub's name does not resolve")
        raise LocalEntryNotFoundError("not in the cache")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(HubError, match="does not resolve") as err:
        FocalCodec.from_pretrained("someone/some_codec")
    assert "`hf download someone/some_codec --local-dir DIR`" in str(err.value)
    assert "huggingface-cli" not in str(err.value) and calls == [{"local_files_only": True}]


def test_mistyped_local_paths_are_reported_as_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    for text in ("./my_model", "checkpoints/my_modle", str(tmp_path / "nope"), "../x/y"):
        with pytest.raises(CheckpointError, match="local checkpoint not found"):
            FocalCodec.from_pretrained(text)  # before: tried (and blamed) the Hub
