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


def load_model(args: argparse.Namespace):
    """The model named by ``--model`` on ``--device``, in eval mode."""
    from ..codec import FocalCodec

    return FocalCodec.from_pretrained(args.model, map_location=args.device)


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
