"""Many inputs to many outputs for encode / decode / resynth: output naming, the output check
done before any work (:func:`focalcodec.outputs.check_targets`), a progress bar, and per-file
errors that do not stop the batch. (Not a sub-command: ``focalcodec.cli`` only loads the
modules named in ``COMMANDS``.)"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import InputError
from ..inputs import expand_inputs
from ..outputs import STDOUT, check_targets
from . import message
from .common import (
    add_force_option,
    add_output_option,
    add_output_rate_option,
    add_quiet_option,
    add_window_option,
)

Job = tuple[Path, Path]


def add_batch_options(parser: argparse.ArgumentParser, what: str, stdout: bool = False) -> None:
    """``-o`` (``stdout``: ``-`` is standard output), ``-f``, ``-q`` and ``--window``."""
    dash = ", or - for standard output (one input)" if stdout else ""
    add_output_option(parser, f"output file (one input) or folder ({what}){dash}")
    add_force_option(parser, "existing output files")
    add_quiet_option(parser)
    add_window_option(parser)


def add_audio_output_options(parser: argparse.ArgumentParser) -> None:
    add_output_rate_option(parser)
    parser.add_argument(
        "--format",
        choices=("wav", "flac"),
        default=None,
        help="audio format for folder outputs (default: wav, or flac for a single -o FILE.flac)",
    )


def audio_suffix(args: argparse.Namespace) -> str:
    """``.wav`` or ``.flac``: ``--format``, else a single ``-o FILE.flac``, else WAV."""
    return "." + (args.format or ("flac" if args.output.lower().endswith(".flac") else "wav"))


def plan(inputs: Sequence[str], output: str, extensions: Iterable[str], suffix: str, force: bool) -> list[Job]:
    """(input, output) pairs. One input file and an output that is not a folder: that file.
    Otherwise ``output`` is a folder; files found under an input folder keep their relative
    sub-folders. ``-`` (standard output) takes one input's ``.fc`` / ``.npy`` bytes. Every
    output is checked before any work (exists without ``force``, is an input, collides with
    another, cannot be written)."""
    files = expand_inputs(inputs, extensions)
    out = Path(output)
    single = len(inputs) == 1 and Path(inputs[0]).is_file()
    if output == STDOUT:
        if suffix not in (".fc", ".npy"):
            raise InputError(
                "-o -: WAV/FLAC audio cannot go to standard output (its header needs the length); give a file "
                "name (raw PCM to standard output: focalcodec stream-decode --raw)"
            )
        if not single:
            raise InputError("-o -: standard output takes one input file; give a folder for several")
        check_targets([], [files[0]], force)
        return [(files[0], Path(STDOUT))]
    if single and not out.is_dir() and not output.endswith(("/", "\\")):
        jobs = [(files[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} is a file; with several inputs or a folder, -o must be a folder")
        jobs = []
        for given in map(Path, inputs):
            if given.is_dir():
                found = [f for f in files if given in f.parents]
                jobs.extend((f, out / f.relative_to(given).with_suffix(suffix)) for f in found)
            else:
                jobs.append((given, out / given.with_suffix(suffix).name))
    check_targets([o for _, o in jobs], [i for i, _ in jobs], force)
    return jobs


@contextlib.contextmanager
def progress_bar(
    total_seconds: float, args: argparse.Namespace, desc: str, threshold: float = 0.0, show: bool = True
) -> Iterator[Callable[[float], object] | None]:
    """A tqdm bar counting audio seconds for one long file: yields its ``update`` (None when
    quiet, not ``show``n or at most ``threshold`` seconds long) and closes it afterwards."""
    if not show or getattr(args, "quiet", False) or total_seconds <= threshold:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=round(total_seconds, 1), desc=desc, unit="s", unit_scale=False, file=sys.stderr, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def run_jobs(jobs: list[Job], work: Callable[[Path, Path], str | None], args: argparse.Namespace, desc: str) -> int:
    """Run ``work(src, dst)`` per job with a progress bar; a failing file is reported on one
    line and the others go on. Returns the exit code (1 if any file failed)."""
    from tqdm import tqdm

    failed = 0
    quiet = getattr(args, "quiet", False)
    bar = tqdm(jobs, desc=desc, unit="file", disable=quiet or len(jobs) < 2, file=sys.stderr)
    for src, dst in bar:
        try:
            note = work(src, dst)
        except Exception as exc:  # noqa: BLE001 - one failing file must not stop the batch
            failed += 1
            text = message(exc)
            bar.write(f"error: {text if str(src) in text else f'{src}: {text}'}", file=sys.stderr)
            continue
        if note and not quiet and len(jobs) < 2:
            print(note, file=sys.stderr if str(dst) == STDOUT else sys.stdout)  # stdout carries the data
    if failed:
        if len(jobs) > 1:
            print(f"error: {failed} of {len(jobs)} files failed", file=sys.stderr)
        return 1
    return 0
