"""Configs: presets, the official JSON format with legacy fields, overrides, validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    assert cfg.stage_kwargs("decoder")["input_dim"] == 64 and "padding" not in cfg.stage_kwargs("decoder")
    cfg.to_json(tmp_path / "c.json")
    assert FocalCodecConfig.from_json(tmp_path / "c.json") == cfg
    # The fingerprint identifies the architecture, not the spelling of legacy fields.
    data = cfg.to_dict()
    data["decoder_config"]["input_dim"] = data["decoder_config"].pop("input_channels")
    del data["decoder_config"]["padding"]
    assert FocalCodecConfig.from_dict(data).fingerprint == cfg.fingerprint
    assert FocalCodecConfig.from_preset("focalcodec_25hz").fingerprint != cfg.fingerprint


def test_overrides() -> None:
    model = FocalCodec.from_config(
        FIXTURES / "tiny_50hz" / "config.json", overrides={"quantizer_config.codebook_size": 4096}
    )
    assert model.codebook_size == 4096 and model.code_dim == 12
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


def test_not_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        FocalCodecConfig.from_json(tmp_path / "x.json")
