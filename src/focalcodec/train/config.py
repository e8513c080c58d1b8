"""Training configuration: YAML files with defaults and ``key.path=value`` overrides.

Every run is described by one nested dict (see :data:`DEFAULTS` for every key). A YAML file
gives the stage and whatever differs from the defaults; command-line overrides such as
``optim.lr=1e-4 data.batch_size=8 init.encoder=runs/enc`` are parsed as YAML values and
applied last. Unknown keys are errors (except under the free-form ``model_overrides``,
``init``, ``loss`` and ``discriminator`` sections), so typos do not pass silently.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["DEFAULTS", "apply_overrides", "builtin_configs", "load_train_config"]

FREE_SECTIONS = ("model_overrides", "init", "loss", "discriminator")

DEFAULTS: dict[str, Any] = {
    "stage": None,  # quantizer | decoder | pos_conv | encoder | joint
    "model": "focalcodec_50hz",  # architecture: preset, config .json or checkpoint folder
    "model_overrides": {},  # dot paths into the codec config, e.g. decompressor_config.lookahead_size: 0
    "init": {},  # part -> weight source (run folder, codec folder, hf-wavlm:DIR); teacher -> ...
    "output_dir": "runs/focalcodec",
    "seed": 0,
    "data": {
        "train": None,  # manifest .jsonl
        "valid": None,
        "sample_rate": 16000,
        "target_sample_rate": None,  # decoder targets (24000 for WaveNeXt)
        "min_duration": 1.0,
        "max_duration": 60.0,
        "limit": None,  # use only the first N utterances (smoke runs)
        "valid_limit": None,
        "batch_size": 16,
        "valid_batch_size": 8,
        "max_batch_seconds": None,  # dynamic batches instead of a fixed size
        "num_buckets": 10,
        "num_workers": 4,
        "crop_frames": None,  # decoder stage: 22 frames (7040 samples) at 16 kHz, 150 at 24 kHz
        "segment_seconds": None,  # random segments of at most this length (default: full utterances)
        "feature_cache": None,  # folder of cached encoder features (quantizer/decoder stages)
    },
    "optim": {
        "lr": 5.0e-4,
        "betas": [0.8, 0.99],
        "eps": 1.0e-8,
        "weight_decay": 0.01,
        "grad_clip": 5.0,
    },
    "scheduler": {
        "type": "plateau",  # plateau | exponential | constant
        "factor": 0.9,  # plateau: LR x factor when validation improves by < threshold (relative)
        "threshold": 0.0025,
        "gamma": 0.999,  # exponential: LR x gamma per interval
        "interval": "epoch",  # exponential: epoch | step
    },
    "loss": {},
    "discriminator": {},
    "train": {
        "max_steps": 100000,
        "max_epochs": 100,
        "grad_accum": 1,
        "precision": "fp32",  # fp32 | bf16 | fp16
        "log_every": 50,
        "valid_every": 0,  # steps; 0 = at the end of every epoch
        "validate_first": False,  # validate once before the first step (baseline metrics)
        "ckpt_every": 1000,
        "keep_last": 3,
        "resume": "auto",  # auto (latest in output_dir) | a checkpoint folder | none
        "tensorboard": True,
        "progress": True,
        "device": "auto",  # auto | cpu | cuda
        "num_threads": None,  # CPU threads per process (torch.set_num_threads); None = torch's default
        "backend": "auto",  # distributed backend: auto (nccl on GPU, gloo on CPU) | nccl | gloo
        "media_every_valid": 1,  # log audio / mel images every N validations (0 = never)
    },
}


def _merge(base: dict[str, Any], update: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """``base`` updated by ``update`` recursively; unknown keys outside the free-form
    sections are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        full = f"{path}{key}"
        free = full.split(".")[0] in FREE_SECTIONS
        if key not in out and not free:
            where = f"; options here: {', '.join(out)}" if out else ""
            raise ConfigError(f"unknown training option {full!r}{where}")
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, f"{full}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            return float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return value


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        nested: dict[str, Any] = {}
        node = nested
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _parse_value(text)
        if parts[0] == "model_overrides" and len(parts) > 1:  # dot paths into the codec config
            cfg = copy.deepcopy(cfg)
            cfg["model_overrides"][".".join(parts[1:])] = _parse_value(text)
            continue
        cfg = _merge(cfg, nested)
    return cfg


def builtin_configs() -> dict[str, Path]:
    """The shipped recipe files, ``{name: path}``."""
    root = resources.files("focalcodec.train").joinpath("configs")
    return {p.name[: -len(".yaml")]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def load_train_config(source: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults <- a YAML file (path or the name of a shipped recipe) or dict <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if source is not None:
        if isinstance(source, Mapping):
            data: Any = source
        else:
            import yaml

            path = Path(source)
            if not path.is_file():
                shipped = builtin_configs()
                name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
                if name not in shipped:
                    raise ConfigError(
                        f"training config not found: {source} (shipped recipes: {', '.join(sorted(shipped))})"
                    )
                path = shipped[name]
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ConfigError("a training config must be a mapping")
        cfg = _merge(cfg, data)
    cfg = apply_overrides(cfg, overrides)
    if cfg["stage"] is None:
        raise ConfigError(
            "the training config names no stage (stage: quantizer | decoder | pos_conv | encoder | joint)"
        )
    return cfg
