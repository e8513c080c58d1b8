"""Command line: ``focalcodec <command> ...`` (also ``python -m focalcodec``).

Each sub-command lives in its own module ``focalcodec.cli.<name>`` that defines
``add_parser(subparsers)`` (returning the parser, with ``func`` set to its ``run(args)``).
Every failure is printed as one line, ``error: ...``, with exit code 1 (130 for Ctrl-C):
the package's own errors and OS errors as they are, anything else as an internal error
(``FOCALCODEC_DEBUG=1`` shows its traceback). :func:`fail` is that one error path; batch
commands use it per file and go on with the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
import warnings
from typing import NoReturn

from ..errors import FocalCodecError

COMMANDS = (
    "encode",
    "decode",
    "resynth",
    "info",
    "stream",
    "stream-encode",
    "stream-decode",
    "serve",
    "vc",
    "tokenize",
    "detokenize",
    "evaluate",
    "listen",
    "export",
    "prepare",
    "train",
)


class ArgumentParser(argparse.ArgumentParser):
    """Usage mistakes follow the one error rule too: one ``error:`` line, exit code 1."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        text = " ".join(message.split())
        sys.stderr.write(f"error: {self.prog}: {text} (see {self.prog} --help)\n")
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command; imports neither torch nor numpy."""
    from .. import __version__

    parser = ArgumentParser(
        prog="focalcodec",
        description="FocalCodec low-bitrate speech codec. Rules every command follows: outputs are checked before "
        "any work and never replace an existing file without -f/--force (nor ever an input); every failure is "
        "one 'error:' line with exit code 1; see `focalcodec COMMAND --help`.",
    )
    parser.add_argument("--version", action="version", version=f"focalcodec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name.replace('-', '_')}":
                continue  # command not available in this build
            raise
        module.add_parser(sub)
    return parser


_DEFAULT_SHOW = getattr(warnings, "_showwarnmsg_impl", None)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings as ``warning: ...`` lines written through tqdm, so progress bars stay intact."""
    from tqdm import tqdm

    tqdm.write(f"warning: {' '.join(str(message).split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if not exc.code:
            raise  # --help / --version: exit 0 as argparse does
        return int(exc.code)  # a usage error, already printed as one error line
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # Unless a caller records warnings itself (catch_warnings(record=True), pytest.warns),
        # show them as ``warning:`` lines through tqdm.
        if getattr(warnings, "_showwarnmsg_impl", None) is _DEFAULT_SHOW:
            warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one error path: every failure is one line
        print(f"error: {message(exc)}", file=sys.stderr)
        return 1


def message(exc: BaseException) -> str:
    """One line for any exception: the package's errors and OS errors as they are, anything
    else named as an internal error (with its traceback under ``FOCALCODEC_DEBUG=1``)."""
    if isinstance(exc, FocalCodecError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
    elif isinstance(exc, MemoryError):
        text = "out of memory; use a smaller --window or batch, or a machine with more memory"
    else:
        if os.environ.get("FOCALCODEC_DEBUG"):
            traceback.print_exception(exc, file=sys.stderr)
        text = (
            f"internal error ({type(exc).__name__}: {exc}); "
            "please report it with FOCALCODEC_DEBUG=1 set to see the traceback"
        )
    return " ".join(text.split()) or type(exc).__name__
