"""Configs are data: the official ``config.json`` format, the six presets, and validation.

A config names a class and its constructor arguments for each stage::

    {"encoder_name": "WavLM", "encoder_config": {...}, "compressor_name": "FocalEncoder", ...,
     "decoder_name": "Vocos", "decoder_config": {...}}

Legacy fields are accepted: Vocos' ``input_channels`` (old name of ``input_dim``) and its
ignored ``padding``. A config is written back exactly as read, legacy fields included.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from torch import nn

from .errors import ConfigError
from .nn import BinarySphericalQuantizer, FocalDecoder, FocalEncoder, Vocos, WaveNeXt, WavLM

__all__ = ["FocalCodecConfig", "PRESETS", "STAGES", "preset_name"]

STAGES = ("encoder", "compressor", "quantizer", "decompressor", "decoder")
REGISTRY: dict[str, type] = {
    "WavLM": WavLM,
    "FocalEncoder": FocalEncoder,
    "BinarySphericalQuantizer": BinarySphericalQuantizer,
    "FocalDecoder": FocalDecoder,
    "Vocos": Vocos,
    "WaveNeXt": WaveNeXt,
}
PRESETS = (
    "focalcodec_50hz",
    "focalcodec_25hz",
    "focalcodec_12_5hz",
    "focalcodec_50hz_2k_causal",
    "focalcodec_50hz_4k_causal",
    "focalcodec_50hz_65k_causal",
)
HUB_OWNER = "lucadellalib"
# Fields of official configs that the constructors do not take.
LEGACY_RENAMES = {"input_channels": "input_dim"}
LEGACY_IGNORED = {"padding"}


def preset_name(name: str) -> str | None:
    """``"focalcodec_50hz"`` or ``"lucadellalib/focalcodec_50hz"`` -> the preset name, else None."""
    bare = name[len(HUB_OWNER) + 1 :] if name.startswith(HUB_OWNER + "/") else name
    return bare if bare in PRESETS else None


@dataclass
class FocalCodecConfig:
    """One FocalCodec architecture: a class name and constructor arguments per stage."""

    encoder_name: str
    encoder_config: dict[str, Any]
    compressor_name: str
    compressor_config: dict[str, Any]
    quantizer_name: str
    quantizer_config: dict[str, Any]
    decompressor_name: str
    decompressor_config: dict[str, Any]
    decoder_name: str
    decoder_config: dict[str, Any]
    name: str | None = field(default=None, compare=False)

    # -- reading -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], name: str | None = None) -> FocalCodecConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a FocalCodec config must be a JSON object, got {type(data).__name__}")
        expected = {f"{s}_{k}" for s in STAGES for k in ("name", "config")}
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        if missing or unknown:
            raise ConfigError(
                "not a FocalCodec config"
                + (f"; missing fields: {', '.join(missing)}" if missing else "")
                + (f"; unknown fields: {', '.join(unknown)}" if unknown else "")
            )
        config = cls(**copy.deepcopy({k: data[k] for k in expected}), name=name)
        for stage in STAGES:
            config.stage_kwargs(stage)  # validates names and fields
        return config

    @classmethod
    def from_json(cls, path: str | Path, name: str | None = None) -> FocalCodecConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data, name=name if name is not None else path.stem)

    @classmethod
    def from_preset(cls, name: str) -> FocalCodecConfig:
        preset = preset_name(name)
        if preset is None:
            raise ConfigError(f"unknown preset {name!r}; presets are: {', '.join(PRESETS)}")
        text = resources.files("focalcodec.configs").joinpath(f"{preset}.json").read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text), name=preset)

    @classmethod
    def load(cls, name_or_path: str | Path | FocalCodecConfig | Mapping[str, Any]) -> FocalCodecConfig:
        """A preset name, a ``.json`` file, a directory holding ``config.json``, a dict or a config."""
        if isinstance(name_or_path, FocalCodecConfig):
            return copy.deepcopy(name_or_path)
        if isinstance(name_or_path, Mapping):
            return cls.from_dict(name_or_path)
        text = str(name_or_path)
        if isinstance(name_or_path, str) and preset_name(text) is not None and not Path(text).exists():
            return cls.from_preset(text)
        path = Path(text)
        if path.is_dir():
            return cls.from_json(path / "config.json", name=path.name)
        if path.suffix != ".json" and not path.exists() and Path(text + ".json").exists():
            path = Path(text + ".json")
        if path.exists():
            return cls.from_json(path)
        raise ConfigError(
            f"no config found for {text!r}: give a preset ({', '.join(PRESETS)}), "
            "a config .json file or a directory holding config.json"
        )

    # -- writing -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The official JSON layout (legacy fields kept as read)."""
        return {f"{s}_{k}": copy.deepcopy(getattr(self, f"{s}_{k}")) for s in STAGES for k in ("name", "config")}

    def to_json(self, path: str | Path, force: bool = True) -> None:
        """Write the official JSON layout (through :func:`focalcodec.outputs.write_text`)."""
        from .outputs import write_text

        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n", force=force)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the architecture (legacy fields normalised)."""
        canonical = {s: [getattr(self, f"{s}_name"), self.stage_kwargs(s)] for s in STAGES}
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> FocalCodecConfig:
        """Apply dot-path overrides, e.g. ``{"encoder_config.max_cached_steps": 0}``."""
        data = self.to_dict()
        for key, value in (overrides or {}).items():
            node: Any = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node, dict) or part not in node:
                    raise ConfigError(f"override {key!r}: no field {part!r} in the config")
                node = node[part]
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r} does not point into a config section")
            node[parts[-1]] = value
        return FocalCodecConfig.from_dict(data, name=self.name)

    # -- building ----------------------------------------------------------------------------
    def stage_kwargs(self, stage: str) -> dict[str, Any]:
        """Validated constructor arguments of one stage, legacy fields translated."""
        cls_name = getattr(self, f"{stage}_name")
        if cls_name not in REGISTRY:
            raise ConfigError(f"{stage}_name {cls_name!r} is not one of: {', '.join(REGISTRY)}")
        raw = getattr(self, f"{stage}_config")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{stage}_config must be a JSON object")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in LEGACY_IGNORED:
                continue
            key = LEGACY_RENAMES.get(key, key) if key not in kwargs else key
            kwargs[key] = value
        accepted = set(inspect.signature(REGISTRY[cls_name].__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"{stage}_config has fields that {cls_name} does not take: {', '.join(unknown)}")
        return kwargs

    def build(self, stage: str) -> nn.Module:
        """Instantiate one stage with random weights."""
        kwargs = self.stage_kwargs(stage)
        try:
            return REGISTRY[getattr(self, f"{stage}_name")](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot build the {stage} from its config: {exc}") from None
