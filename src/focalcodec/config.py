"""Configs are data: the official ``config.json`` format, the six presets, and validation.

A config names a class and its constructor arguments for each part::

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
from .nn import BinarySphericalQuantizer, FocalCompressor, FocalDecompressor, Vocos, WaveNeXt, WavLM

__all__ = ["FocalCodecConfig", "PRESETS", "PARTS", "preset_name"]

PARTS = ("encoder", "compressor", "quantizer", "decompressor", "decoder")
# Class names as the official config.json files write them (the authors' names for the
# compressor and decompressor classes are FocalEncoder and FocalDecoder).
REGISTRY: dict[str, type] = {
    "WavLM": WavLM,
    "FocalEncoder": FocalCompressor,
    "BinarySphericalQuantizer": BinarySphericalQuantizer,
    "FocalDecoder": FocalDecompressor,
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
# Bounds of integer config fields (official models use at most 4096 / 8 layers / 16 heads):
# generous, but they refuse configs that cannot run or would need absurd memory.
MAX_WIDTH = 1 << 15
MAX_PARAMS = 4_000_000_000  # 16x the largest official model
_BOUNDS = {
    "dim": (1, MAX_WIDTH),
    "ffn_dim": (1, 4 * MAX_WIDTH),
    "input_dim": (1, MAX_WIDTH),
    "input_channels": (1, MAX_WIDTH),
    "output_dim": (1, MAX_WIDTH),
    "hidden_dims": (1, MAX_WIDTH),
    "num_layers": (0, 256),
    "num_heads": (1, 1024),
    "num_buckets": (1, 1 << 16),
    "max_distance": (1, 1 << 20),
    "conv_pos": (1, 1 << 12),
    "conv_pos_groups": (1, MAX_WIDTH),
    "kernel_sizes": (1, 1 << 12),
    "strides": (1, 1 << 12),
    "kernel_size": (1, 1 << 12),
    "downscale_factors": (1, 64),
    "upscale_factors": (1, 64),
    "focal_window": (1, 1 << 10),
    "focal_level": (1, 16),
    "focal_factor": (0, 1 << 10),
    "n_fft": (2, 1 << 16),
    "hop_length": (1, 1 << 16),
    "codebook_size": (2, 1 << 32),
}
# Fields of official configs that the constructors do not take.
LEGACY_RENAMES = {"input_channels": "input_dim"}
LEGACY_IGNORED = {"padding"}


def preset_name(name: str) -> str | None:
    """``"focalcodec_50hz"`` or ``"lucadellalib/focalcodec_50hz"`` -> the preset name, else None."""
    bare = name[len(HUB_OWNER) + 1 :] if name.startswith(HUB_OWNER + "/") else name
    return bare if bare in PRESETS else None


@dataclass
class FocalCodecConfig:
    """One FocalCodec architecture: a class name and constructor arguments per part."""

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
        """A config from the official ``config.json`` dict (``{part}_name`` / ``{part}_config`` for the five
        parts), validated; :class:`ConfigError` naming what is missing, unknown or out of bounds."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a FocalCodec config must be a JSON object, got {type(data).__name__}")
        expected = {f"{s}_{k}" for s in PARTS for k in ("name", "config")}
        missing = sorted(expected - set(data))
        unknown = sorted(set(data) - expected)
        if missing or unknown:
            raise ConfigError(
                "not a FocalCodec config"
                + (f"; missing fields: {', '.join(missing)}" if missing else "")
                + (f"; unknown fields: {', '.join(unknown)}" if unknown else "")
            )
        config = cls(**copy.deepcopy({k: data[k] for k in expected}), name=name)
        for part in PARTS:
            config.part_kwargs(part)  # validates names and fields
        config.validate()
        return config

    @classmethod
    def from_json(cls, path: str | Path, name: str | None = None) -> FocalCodecConfig:
        """A config from a ``config.json`` file (named after the file unless ``name`` is given)."""
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
        """One of the six shipped presets, by name (``focalcodec_50hz`` or ``lucadellalib/focalcodec_50hz``)."""
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
        return {f"{s}_{k}": copy.deepcopy(getattr(self, f"{s}_{k}")) for s in PARTS for k in ("name", "config")}

    def to_json(self, path: str | Path, force: bool = True) -> None:
        """Write the official JSON layout (through :func:`focalcodec.outputs.write_json`)."""
        from .outputs import write_json

        write_json(path, self.to_dict(), force=force)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the architecture (legacy fields normalised)."""
        canonical = {s: [getattr(self, f"{s}_name"), self.part_kwargs(s)] for s in PARTS}
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

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse, with a :class:`ConfigError` naming the field, configs that cannot run: integer
        fields out of :data:`_BOUNDS` (zero strides, 10^9 widths), a codebook size that is not
        a power of two, attention widths not divisible by the head count, lists of different
        lengths, and parts whose widths do not connect."""
        kw = {s: self.part_kwargs(s) for s in PARTS}
        for part, args in kw.items():
            for key, value in args.items():
                if key not in _BOUNDS:
                    continue
                lo, hi = _BOUNDS[key]
                values = value if isinstance(value, (list, tuple)) else [value]
                if isinstance(value, (list, tuple)) and not value:
                    raise ConfigError(f"{part}_config.{key} is an empty list")
                for v in values:
                    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                        raise ConfigError(
                            f"{part}_config.{key} must be {'whole numbers' if len(values) > 1 else 'a whole number'} "
                            f"in [{lo}, {hi}], got {value!r}"
                        )

        def get(part: str, *names: str, default: Any = None) -> Any:
            for n in names:
                if n in kw[part]:
                    return kw[part][n]
            return default

        size = get("quantizer", "codebook_size")
        if isinstance(size, int) and size & (size - 1):
            raise ConfigError(f"quantizer_config.codebook_size must be a power of two, got {size}")
        bits = size.bit_length() - 1 if isinstance(size, int) else None
        dim, heads = get("encoder", "dim"), get("encoder", "num_heads")
        if isinstance(dim, int) and isinstance(heads, int) and dim % heads:
            raise ConfigError(f"encoder_config.dim ({dim}) must be divisible by num_heads ({heads})")
        groups = get("encoder", "conv_pos_groups")
        if isinstance(dim, int) and isinstance(groups, int) and dim % groups:
            raise ConfigError(f"encoder_config.dim ({dim}) must be divisible by conv_pos_groups ({groups})")
        for part, names in (
            ("encoder", ("hidden_dims", "kernel_sizes", "strides")),
            ("compressor", ("hidden_dims", "downscale_factors")),
            ("decompressor", ("hidden_dims", "upscale_factors")),
        ):
            lists = {n: kw[part][n] for n in names if isinstance(kw[part].get(n), (list, tuple))}
            if len({len(v) for v in lists.values()}) > 1:
                sizes = ", ".join(f"{n} has {len(v)}" for n, v in lists.items())
                raise ConfigError(f"{part}_config lists must have one entry per layer: {sizes}")
        links = [
            ("encoder_config.dim", dim, "compressor_config.input_dim", get("compressor", "input_dim")),
            ("log2(codebook_size)", bits, "compressor_config.output_dim", get("compressor", "output_dim")),
            ("log2(codebook_size)", bits, "decompressor_config.input_dim", get("decompressor", "input_dim")),
            (
                "decompressor_config.output_dim",
                get("decompressor", "output_dim"),
                "decoder_config.input_dim",
                get("decoder", "input_dim", "input_channels"),
            ),
        ]
        for a, va, b, vb in links:
            if va is not None and vb is not None and va != vb:
                raise ConfigError(f"{b} ({vb}) must equal {a} ({va}): the parts do not connect")
        n_fft, hop = get("decoder", "n_fft"), get("decoder", "hop_length")
        if isinstance(n_fft, int) and isinstance(hop, int) and n_fft < hop:
            raise ConfigError(f"decoder_config.n_fft ({n_fft}) must be at least hop_length ({hop})")

    def num_parameters(self) -> int:
        """Parameters of the model this config builds, counted without allocating them (the
        parts are built on PyTorch's ``meta`` device)."""
        import torch

        with torch.device("meta"):
            return sum(p.numel() for s in PARTS for p in self.build(s).parameters())

    # -- building ----------------------------------------------------------------------------
    def part_kwargs(self, part: str) -> dict[str, Any]:
        """Validated constructor arguments of one part, legacy fields translated."""
        cls_name = getattr(self, f"{part}_name")
        if cls_name not in REGISTRY:
            raise ConfigError(f"{part}_name {cls_name!r} is not one of: {', '.join(REGISTRY)}")
        raw = getattr(self, f"{part}_config")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{part}_config must be a JSON object")
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in LEGACY_IGNORED:
                continue
            key = LEGACY_RENAMES.get(key, key) if key not in kwargs else key
            kwargs[key] = value
        accepted = set(inspect.signature(REGISTRY[cls_name].__init__).parameters) - {"self"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise ConfigError(f"{part}_config has fields that {cls_name} does not take: {', '.join(unknown)}")
        return kwargs

    def build(self, part: str) -> nn.Module:
        """Instantiate one part with random weights."""
        kwargs = self.part_kwargs(part)
        try:
            return REGISTRY[getattr(self, f"{part}_name")](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"cannot build the {part} from its config: {exc}") from None
