"""Command line: ``focalcodec <command> ...`` (also ``python -m focalcodec``).

Each sub-command lives in its own module ``focalcodec.cli.<name>`` that defines
``add_parser(subparsers)`` (returning the parser, with ``func`` set to its ``run(args)``).
Errors of this package are printed as one line (``error: ...``) with exit code 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import FocalCodecError

COMMANDS = (
    "encode",
    "decode",
    "resynth",
    "info",
    "stream",
    "vc",
    "tokenize",
    "detokenize",
    "evaluate",
    "export",
    "prepare",
    "train",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="focalcodec", description="FocalCodec low-bitrate speech codec")
    parser.add_argument("--version", action="version", version=f"focalcodec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not available in this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"  # type: ignore[assignment]
    try:
        return int(args.func(args) or 0)
    except FocalCodecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
