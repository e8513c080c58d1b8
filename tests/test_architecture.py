"""Full-size architectures: state-dict keys and shapes equal the official checkpoints'
(both layouts), published sizes, rates and bitrates. Built on the meta device (no memory)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES

from focalcodec import PRESETS, FocalCodec
from focalcodec.hub import convert_legacy_state_dict

# name: (million parameters as published, token rate, bitrate, output rate, causal)
EXPECTED = {
    "focalcodec_50hz": (142.126, 50.0, 650.0, 16000, False),
    "focalcodec_25hz": (144.223, 25.0, 325.0, 16000, False),
    "focalcodec_12_5hz": (145.272, 12.5, 162.5, 16000, False),
    "focalcodec_50hz_2k_causal": (249.036, 50.0, 550.0, 24000, True),
    "focalcodec_50hz_4k_causal": (249.038, 50.0, 600.0, 24000, True),
    "focalcodec_50hz_65k_causal": (249.047, 50.0, 800.0, 24000, True),
}


def meta_model(name: str) -> FocalCodec:
    with torch.device("meta"):
        return FocalCodec.from_config(name)


def shapes(state_dict) -> dict:
    return {k: list(v.shape) for k, v in state_dict.items()}


@pytest.mark.parametrize("name", PRESETS)
def test_keys_and_shapes_match_manifest(name: str) -> None:
    manifest = json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())
    model = meta_model(name)
    assert shapes(model.state_dict()) == manifest["state_dict"]
    assert model.config.to_dict() == manifest["config"]


@pytest.mark.parametrize("name", [n for n in PRESETS if "causal" not in n])
def test_legacy_layout_converts_to_current(name: str) -> None:
    manifest = json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())
    legacy = {k: torch.empty(v, device="meta") for k, v in manifest["legacy_state_dict"].items()}
    assert shapes(convert_legacy_state_dict(legacy)) == manifest["state_dict"]


@pytest.mark.parametrize("name", PRESETS)
def test_published_sizes_and_rates(name: str) -> None:
    params, token_rate, bitrate, sr_out, causal = EXPECTED[name]
    model = meta_model(name)
    numel = sum(v.numel() for v in model.state_dict().values())
    assert round(numel / 1e6, 3) == params
    assert model.token_rate == token_rate
    assert model.bitrate == bitrate
    assert model.sample_rate_input == 16000 and model.sample_rate_output == sr_out
    assert model.causal is causal
    assert model.chunk_size == 1280
    assert model.latency == (80.0 if causal else None)
    assert model.codebook_size == 2**model.code_dim
    # what features need to know, said by the codec (not read from its parts)
    assert model.hop_length == 16000 / token_rate and model.output_hop_length == sr_out / token_rate
    assert model.frames_per_token == 50 / token_rate and model.feature_hop_length == 320
    assert model.feature_dim == 1024 and model.receptive_field == 400
    assert model.num_output_samples(16001) == 16001 * sr_out // 16000
    assert model.device.type == "meta" and model.dtype == torch.float32


def test_lucadellalib_prefix_is_accepted() -> None:
    assert meta_model("lucadellalib/focalcodec_25hz").config == meta_model("focalcodec_25hz").config
