"""Training configuration: YAML files with defaults and ``key.path=value`` overrides.

Every run is described by one nested dict (see :data:`DEFAULTS` for every key, and
:data:`STAGE_OPTIONS` for the ``loss``, ``discriminator`` and ``init`` options of each stage).
A YAML file gives the stage and whatever differs from the defaults; command-line overrides
such as ``optim.lr=1e-4 data.batch_size=8 init.encoder=runs/enc`` are parsed as YAML values
and applied last. The resolved config holds every value the run uses (the stage's loss
weights included), so ``--print-config`` shows them all.

Nothing is silently ignored or silently defaulted: unknown keys in any section, values of
the wrong type or range, ``init`` sources a stage does not use, and a missing source for a
part the stage needs trained weights for (the frozen encoder, the student that a streaming
step continues from) are :class:`~focalcodec.errors.ConfigError` naming the setting.
Random weights for such a part must be asked for explicitly (``init.encoder: random``).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "DEFAULTS",
    "RANDOM",
    "STAGE_OPTIONS",
    "apply_overrides",
    "builtin_configs",
    "load_train_config",
    "validate_config",
]

FREE_SECTIONS = ("model_overrides", "init", "loss", "discriminator")
RANDOM = "random"  # init value that asks for random weights on purpose

DEFAULTS: dict[str, Any] = {
    "stage": None,  # quantizer | decoder | pos_conv | encoder | joint
    "model": "focalcodec_50hz",  # architecture: preset, config .json or checkpoint folder
    "model_overrides": {},  # dot paths into the codec config, e.g. decompressor_config.lookahead_size: 0
    "init": {},  # part -> weight source (run folder, codec folder, hf-wavlm:DIR, random); teacher -> ...
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
        "crop_frames": None,  # decoder stage (required there): 22 frames = 7040 samples at 16 kHz, 150 at 24 kHz
        "segment_seconds": None,  # random segments of at most this length (default: full utterances)
        "feature_cache": None,  # folder of cached encoder features (quantizer/decoder stages)
    },
    "optim": {
        "lr": 5.0e-4,
        "betas": [0.8, 0.99],
        "eps": 1.0e-8,
        "weight_decay": 0.01,
        "grad_clip": 5.0,  # max gradient norm; null = no clipping
    },
    "scheduler": {
        "type": "plateau",  # plateau | exponential | constant
        "factor": 0.9,  # plateau: LR x factor when validation improves by < threshold (relative)
        "threshold": 0.0025,
        "signed": False,  # plateau: divide the improvement by the signed previous loss (SpeechBrain NewBob)
        "gamma": 0.999,  # exponential: LR x gamma per interval
        "interval": "epoch",  # exponential: epoch | step
        "every": 1,  # exponential, interval epoch: decay after epochs 1, 1 + every, 1 + 2 every, ...
    },
    "loss": {},  # per stage, see STAGE_OPTIONS
    "discriminator": {},  # decoder stage, see STAGE_OPTIONS
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

_QUANTIZER_LOSS = {"entropy_weight": 0.1, "inv_temperature": 100.0, "diversity_gamma": 1.0}

# Per stage: the defaults of ``loss`` and ``discriminator`` (every accepted key), the
# ``init`` keys it uses and which of them must be given (a source, or ``random``).
STAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "quantizer": {
        "loss": _QUANTIZER_LOSS,
        "discriminator": {},
        "init": ("encoder", "compressor", "decompressor"),
        "required": ("encoder",),
    },
    "decoder": {
        "loss": {
            "adv_weight": 1.0,
            "fm_weight": 54.0,
            "mel_weight": 45.0,
            # hop_length null = the decoder's hop; f_max null = half the output rate
            "mel": {
                "n_mels": 80,
                "n_fft": 1024,
                "win_length": None,
                "hop_length": None,
                "f_min": 0.0,
                "f_max": None,
                "clamp": 1.0e-5,
            },
        },
        "discriminator": {"periods": [2, 3, 5, 7, 11], "num_scales": 3, "width": 1.0},
        "init": ("encoder", "decoder"),
        "required": ("encoder",),
    },
    "pos_conv": {"loss": {}, "discriminator": {}, "init": ("teacher",), "required": ("teacher",)},
    "encoder": {
        "loss": {"layer_weights": None},  # null = 0.5, 0.6, ..., 1.0 (evenly spaced for other depths)
        "discriminator": {},
        "init": ("teacher", "encoder"),
        "required": ("teacher", "encoder"),
    },
    "joint": {
        "loss": _QUANTIZER_LOSS,
        "discriminator": {},
        "init": ("teacher", "encoder", "compressor", "decompressor"),
        "required": ("teacher", "encoder", "compressor", "decompressor"),
    },
}


# --------------------------------------------------------------------------------------------
# value checks: (what is expected, test)
# --------------------------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _int(lo: int) -> tuple[str, Callable[[Any], bool]]:
    return f"an integer >= {lo}", lambda v: _is_int(v) and v >= lo


def _pos() -> tuple[str, Callable[[Any], bool]]:
    return "a number > 0", lambda v: _is_num(v) and v > 0


def _nonneg() -> tuple[str, Callable[[Any], bool]]:
    return "a number >= 0", lambda v: _is_num(v) and v >= 0


def _unit() -> tuple[str, Callable[[Any], bool]]:
    return "a number in (0, 1]", lambda v: _is_num(v) and 0 < v <= 1


def _one_of(*options: str) -> tuple[str, Callable[[Any], bool]]:
    return f"one of {', '.join(options)}", lambda v: v in options


def _opt(check: tuple[str, Callable[[Any], bool]]) -> tuple[str, Callable[[Any], bool]]:
    return f"{check[0]} or null", lambda v: v is None or check[1](v)


_BOOL = ("true or false", lambda v: isinstance(v, bool))
_STR = ("a string", lambda v: isinstance(v, str) and v != "")
_BETAS = (
    "two numbers in [0, 1), e.g. [0.8, 0.99]",
    lambda v: isinstance(v, list) and len(v) == 2 and all(_is_num(b) and 0 <= b < 1 for b in v),
)

CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "stage": _one_of("quantizer", "decoder", "pos_conv", "encoder", "joint"),
    "model": _STR,
    "output_dir": _STR,
    "seed": _int(0),
    "data.train": _opt(_STR),
    "data.valid": _opt(_STR),
    "data.sample_rate": _int(1),
    "data.target_sample_rate": _opt(_int(1)),
    "data.min_duration": _nonneg(),
    "data.max_duration": _pos(),
    "data.limit": _opt(_int(1)),
    "data.valid_limit": _opt(_int(1)),
    "data.batch_size": _int(1),
    "data.valid_batch_size": _int(1),
    "data.max_batch_seconds": _opt(_pos()),
    "data.num_buckets": _int(1),
    "data.num_workers": _int(0),
    "data.crop_frames": _opt(_int(1)),
    "data.segment_seconds": _opt(_pos()),
    "data.feature_cache": _opt(_STR),
    "optim.lr": _pos(),
    "optim.betas": _BETAS,
    "optim.eps": _pos(),
    "optim.weight_decay": _nonneg(),
    "optim.grad_clip": _opt(_pos()),
    "scheduler.type": _one_of("plateau", "exponential", "constant"),
    "scheduler.factor": _unit(),
    "scheduler.threshold": _nonneg(),
    "scheduler.signed": _BOOL,
    "scheduler.gamma": _unit(),
    "scheduler.interval": _one_of("epoch", "step"),
    "scheduler.every": _int(1),
    "train.max_steps": (
        "an integer >= 1 (a run of no step would save untrained weights)",
        lambda v: _is_int(v) and v >= 1,
    ),
    "train.max_epochs": (
        "an integer >= 1 (a run of no epoch would save untrained weights)",
        lambda v: _is_int(v) and v >= 1,
    ),
    "train.grad_accum": _int(1),
    "train.precision": _one_of("fp32", "bf16", "fp16"),
    "train.log_every": _int(0),
    "train.valid_every": _int(0),
    "train.validate_first": _BOOL,
    "train.ckpt_every": _int(0),
    "train.keep_last": _int(0),
    "train.resume": ("auto, none or a checkpoint folder", lambda v: v in (None, False) or isinstance(v, str)),
    "train.tensorboard": _BOOL,
    "train.progress": _BOOL,
    "train.device": _one_of("auto", "cpu", "cuda"),
    "train.num_threads": _opt(_int(1)),
    "train.backend": _one_of("auto", "nccl", "gloo"),
    "train.media_every_valid": _int(0),
    "loss.entropy_weight": _nonneg(),
    "loss.inv_temperature": _pos(),
    "loss.diversity_gamma": _nonneg(),
    "loss.adv_weight": _nonneg(),
    "loss.fm_weight": _nonneg(),
    "loss.mel_weight": _nonneg(),
    "loss.mel.n_mels": _int(1),
    "loss.mel.n_fft": _int(2),
    "loss.mel.win_length": _opt(_int(1)),
    "loss.mel.hop_length": _opt(_int(1)),
    "loss.mel.f_min": _nonneg(),
    "loss.mel.f_max": _opt(_pos()),
    "loss.mel.clamp": _pos(),
    "loss.layer_weights": (
        "a list of numbers >= 0 (one per encoder layer) or null",
        lambda v: v is None or (isinstance(v, list) and len(v) > 0 and all(_is_num(w) and w >= 0 for w in v)),
    ),
    "discriminator.periods": (
        "a non-empty list of integers >= 1",
        lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(p) and p >= 1 for p in v),
    ),
    "discriminator.num_scales": _int(0),
    "discriminator.width": _pos(),
}


def _merge(
    base: dict[str, Any], update: Mapping[str, Any], path: str = "", free: Sequence[str] = FREE_SECTIONS
) -> dict[str, Any]:
    """``base`` updated by ``update`` recursively; unknown keys outside the ``free`` sections
    are errors."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        full = f"{path}{key}"
        if key not in out and full.split(".")[0] not in free:
            where = f"; options here: {', '.join(out)}" if out else ""
            raise ConfigError(f"unknown training option {full!r}{where}")
        if isinstance(out.get(key), dict) and isinstance(value, Mapping):
            out[key] = _merge(out[key], value, f"{full}.", free)
        else:
            out[key] = copy.deepcopy(value)
    return out


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 (PyYAML) reads ``1e-4`` (no dot) as a string: read such strings as numbers,
    in files as in overrides."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        text = value.strip()
        return float(text) if any(c in text for c in ".eE") else int(text)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return _numbers(value)


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` strings (values parsed as YAML)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a key path such as optim.lr")
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


def _lookup(cfg: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _resolve_stage_sections(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill the stage's ``loss``/``discriminator`` defaults (unknown keys are errors) and
    check ``init``: only the sources the stage uses, every required one given."""
    stage = cfg["stage"]
    opts = STAGE_OPTIONS[stage]
    for section in ("loss", "discriminator"):
        given = cfg.get(section) or {}
        if not isinstance(given, Mapping):
            raise ConfigError(f"{section}: must be a mapping of options, not {given!r}")
        if given and not opts[section]:
            raise ConfigError(f"the {stage} stage has no {section} options: remove {section}: {dict(given)}")
        try:
            cfg[section] = _merge(opts[section], given, f"{section}.", free=())
        except ConfigError as exc:
            raise ConfigError(f"{exc} (stage {stage})") from None
    init = cfg.get("init") or {}
    if not isinstance(init, Mapping):
        raise ConfigError(f"init: must map parts to weight sources, not {init!r}")
    for key, value in init.items():
        if key not in opts["init"]:
            raise ConfigError(
                f"init.{key} is not used by the {stage} stage (it takes init.{', init.'.join(opts['init'])}): remove it"
            )
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"init.{key} must be a weight source (run folder, checkpoint folder, preset, hf-wavlm:DIR) "
                f"or {RANDOM!r}, not {value!r}"
            )
    for key in opts["required"]:
        if key not in init:
            what = "the non-causal teacher encoder" if key == "teacher" else f"the {key}"
            raise ConfigError(
                f"init.{key} is not set: the {stage} stage needs trained weights for {what} "
                f"(e.g. init.{key}=hf-wavlm:microsoft/wavlm-large, a run folder or a codec folder); "
                f"write init.{key}={RANDOM} to use random weights on purpose"
            )
    cfg["init"] = dict(init)
    return cfg


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the type and range of every known value (see :data:`CHECKS`); raise a
    :class:`ConfigError` naming the first bad setting."""
    for path, (expected, ok) in CHECKS.items():
        present, value = _lookup(cfg, path)
        if present and not ok(value):
            raise ConfigError(f"{path} must be {expected}, not {value!r} (fix the recipe or override {path}=...)")
    d = cfg["data"]
    if d["min_duration"] > d["max_duration"]:
        raise ConfigError(f"data.min_duration ({d['min_duration']}) is above data.max_duration ({d['max_duration']})")
    if cfg["stage"] == "decoder" and d["crop_frames"] is None:
        raise ConfigError(
            "data.crop_frames is not set: the decoder stage trains on crops of this many feature frames "
            "(recipes: 22 = 7040 samples for Vocos, 150 = 72000 samples at 24 kHz for WaveNeXt)"
        )
    return cfg


def load_train_config(source: str | Path | Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults <- a YAML file (path or the name of a shipped recipe) or dict <- overrides,
    then the stage's option defaults; every value validated."""
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
        cfg = _merge(cfg, _numbers(data))
    cfg = apply_overrides(cfg, overrides)
    if cfg["stage"] is None:
        raise ConfigError(
            "the training config names no stage (stage: quantizer | decoder | pos_conv | encoder | joint)"
        )
    if cfg["stage"] not in STAGE_OPTIONS:
        raise ConfigError(f"unknown stage {cfg['stage']!r}; stages are: {', '.join(STAGE_OPTIONS)}")
    return validate_config(_resolve_stage_sections(cfg))
