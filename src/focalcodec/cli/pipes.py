"""Options shared by ``stream-encode`` and ``stream-decode`` (raw token pipes). Not a
sub-command: ``focalcodec.cli`` only loads the modules named in ``COMMANDS``."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator

from ..errors import OutputError
from .common import add_force_option, add_quiet_option

RAW_FORMATS = ("f32", "s16")  # focalcodec.audio.RAW_FORMATS (torch-free copy, for --help)

PRECISIONS = ("float32", "float16", "int8")


def add_pipe_options(p: argparse.ArgumentParser, direction: str) -> None:
    add_force_option(p, "an existing output file")
    p.add_argument(
        "--raw",
        nargs="?",
        const="f32",
        choices=RAW_FORMATS,
        default=None,
        help=f"audio {direction} is headerless mono PCM: f32 (little-endian float32, the default with --raw) "
        "or s16 (little-endian int16)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="CPU only: weights in float16 (same tokens in our tests) or int8 (approximate)",
    )
    add_quiet_option(p)


@contextlib.contextmanager
def broken_pipe() -> Iterator[None]:
    """A reader that goes away (``... | head``) ends the command with one error line, not a
    traceback (and no second one when Python flushes standard output at exit)."""
    try:
        yield
    except BrokenPipeError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise OutputError("the output pipe was closed by its reader") from None
