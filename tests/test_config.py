"""Configs: presets, the official JSON format with legacy fields, overrides, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SHARED

from focalcodec import PRESETS, ConfigError, FocalCodec, FocalCodecConfig


@pytest.mark.parametrize("name", PRESETS)
def test_presets_equal_the_official_files(name: str) -> None:
    official = json.loads((SHARED / "focalcodec" / "configs" / f"{name}.json").read_text())
    assert FocalCodecConfig.from_preset(name).to_dict() == official
    assert FocalCodecConfig.load(f"lucadellalib/{name}").to_dict() == official


def test_json_round_trip_keeps_legacy_fields(tmp_path: Path) -> None:
    cfg = FocalCodecConfig.load(FIXTURES / "tiny_50hz")
    assert cfg.decoder_config["input_channels"] == 64 and cfg.decoder_config["padding"] == 3
    assert cfg.part_kwargs("decoder")["input_dim"] == 64 and "padding" not in cfg.part_kwargs("decoder")
    cfg.to_json(tmp_path / "c.json")
    assert FocalCodecConfig.from_json(tmp_path / "c.json") == cfg
    # The fingerprint identifies the architecture, not the spelling of legacy fields.
    data = cfg.to_dict()
    data["decoder_config"]["input_dim"] = data["decoder_config"].pop("input_channels")
    del data["decoder_config"]["padding"]
    assert FocalCodecConfig.from_dict(data).fingerprint == cfg.fingerprint
    assert FocalCodecConfig.from_preset("focalcodec_25hz").fingerprint != cfg.fingerprint


def test_overrides() -> None:
    bits = {"quantizer_config.codebook_size": 4096, "compressor_config.output_dim": 12}
    with pytest.raises(ConfigError, match=r"decompressor_config.input_dim \(13\) must equal log2\(codebook_size\)"):
        FocalCodec.from_config(FIXTURES / "tiny_50hz" / "config.json", overrides=bits)  # cannot run
    model = FocalCodec.from_config(
        FIXTURES / "tiny_50hz" / "config.json", overrides={**bits, "decompressor_config.input_dim": 12}
    )
    assert model.codebook_size == 4096 and model.code_dim == 12
    assert model.decode(model.encode(torch.zeros(8000)).tokens).audio.shape == (7680,)
    with pytest.raises(ConfigError, match="no field 'nope'"):
        FocalCodecConfig.load("focalcodec_50hz").with_overrides({"nope.x": 1})


def test_invalid_configs_are_named() -> None:
    data = FocalCodecConfig.load("focalcodec_50hz").to_dict()
    bad = dict(data, compressor_config=dict(data["compressor_config"], focal_wnidow=7))
    with pytest.raises(ConfigError, match="focal_wnidow"):
        FocalCodecConfig.from_dict(bad)
    with pytest.raises(ConfigError, match="decoder_name 'HiFiGAN'"):
        FocalCodecConfig.from_dict(dict(data, decoder_name="HiFiGAN"))
    with pytest.raises(ConfigError, match="missing fields: quantizer_config"):
        FocalCodecConfig.from_dict({k: v for k, v in data.items() if k != "quantizer_config"})
    with pytest.raises(ConfigError, match="unknown preset"):
        FocalCodecConfig.from_preset("focalcodec_100hz")
    with pytest.raises(ConfigError, match="no config found"):
        FocalCodecConfig.load("focalcodec_100hz")


@pytest.mark.parametrize(
    "override, message",
    [
        ({"quantizer_config.codebook_size": 1000}, "power of two"),
        ({"encoder_config.strides": [5, 2, 2, 2, 2, 2, 0]}, r"encoder_config.strides must be whole numbers in \[1,"),
        ({"encoder_config.dim": 10**9}, r"encoder_config.dim must be a whole number in \[1, 32768\]"),
        ({"decoder_config.hop_length": 0}, "hop_length"),
        ({"encoder_config.num_heads": 3}, "divisible by num_heads"),
        ({"encoder_config.dim": 64.5}, "whole number"),
        ({"compressor_config.focal_level": 100}, "focal_level"),
        ({"decoder_config.n_fft": 2}, "n_fft"),
        ({"encoder_config.kernel_sizes": [10, 3]}, "one entry per layer"),
        ({"compressor_config.output_dim": 12}, "do not connect"),
    ],
)
def test_configs_that_cannot_run_are_refused_before_building(override, message) -> None:
    """Each of these used to build (or allocate 10^9-wide layers) and fail, if at all, deep
    inside a forward pass."""
    with pytest.raises(ConfigError, match=message):
        FocalCodec.from_config(FIXTURES / "tiny_50hz" / "config.json", overrides=override)


def test_absurd_sizes_are_counted_without_allocating() -> None:
    huge = {f"encoder_config.{k}": v for k, v in (("dim", 32768), ("ffn_dim", 131072), ("num_layers", 256))}
    huge["compressor_config.input_dim"] = 32768
    with pytest.raises(ConfigError, match="G parameters"):
        FocalCodec.from_config(FIXTURES / "tiny_50hz" / "config.json", overrides=huge)


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from focalcodec import CheckpointError

    shutil.copytree(FIXTURES / "tiny_50hz", tmp_path / "m")
    state = load_file(str(tmp_path / "m" / "model.safetensors"))
    key = sorted(k for k, v in state.items() if v.is_floating_point())[3]
    state[key][0] = float("nan")
    save_file(state, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=f"NaN or infinite weights in {key}"):
        FocalCodec.from_pretrained(tmp_path / "m")


def test_not_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FocalCodecConfig.from_json(tmp_path / "x.json")
