"""Options and helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError


def add_model_options(parser: argparse.ArgumentParser, default: str = "lucadellalib/focalcodec_50hz") -> None:
    parser.add_argument(
        "--model", default=default, help="preset name, Hugging Face repo id or local checkpoint directory"
    )
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")


def check_device(name: str):
    """``--device`` as a ``torch.device`` that exists on this machine, else an
    :class:`~focalcodec.errors.InputError` saying what is available."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"--device {name!r} is not a torch device ({exc}); use e.g. cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def load_model(args: argparse.Namespace):
    """The model named by ``--model`` on ``--device``, in eval mode."""
    from ..codec import FocalCodec

    device = check_device(args.device)
    return FocalCodec.from_pretrained(args.model, map_location=device)


def expand_inputs(paths: Iterable[str], extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Files as given plus, for directories, every file below them with a matching suffix (sorted)."""
    exts = tuple(e.lower() for e in extensions)
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts))
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"input not found: {p}")
    if not out:
        raise InputError("no input files found")
    return out
