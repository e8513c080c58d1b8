"""Many inputs to many outputs for encode / decode / resynth: output naming, the overwrite
check done before any work, a progress bar, and per-file errors that do not stop the batch.
(Not a sub-command: ``focalcodec.cli`` only loads the modules named in ``COMMANDS``.)"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import InputError
from ..longform import Windowing
from . import message
from .common import expand_inputs

Job = tuple[Path, Path]


def add_batch_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", required=True, help=f"output file (one input) or directory ({what})")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite existing output files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--window",
        type=float,
        default=Windowing().window,
        help="seconds per window for long inputs (non-causal models, >= 1)",
    )


def output_rate(text: str) -> object:
    """``--output-rate`` values: a positive number of Hz, or ``input``."""
    if text == "input":
        return text
    try:
        rate = int(text)
    except ValueError:
        rate = 0
    if rate <= 0:
        raise argparse.ArgumentTypeError(f"expected a sample rate in Hz or 'input', got {text!r}")
    return rate


def add_audio_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output-rate",
        type=output_rate,
        default=None,
        help="sample rate of the written audio: Hz, or 'input' for the original file's rate "
        "(default: the model's output rate)",
    )
    parser.add_argument(
        "--format", choices=("wav", "flac"), default=None, help="audio format for directory outputs (default wav)"
    )


def audio_suffix(args: argparse.Namespace) -> str:
    """``.wav`` or ``.flac``: ``--format``, else a single ``-o FILE.flac``, else WAV."""
    return "." + (args.format or ("flac" if args.output.lower().endswith(".flac") else "wav"))


def windowing(args: argparse.Namespace) -> Windowing:
    return Windowing(window=args.window)


def plan(inputs: Sequence[str], output: str, extensions: Iterable[str], suffix: str, force: bool) -> list[Job]:
    """(input, output) pairs. One input file and an output that is not a directory: that
    file. Otherwise ``output`` is a directory; files found under an input directory keep
    their relative sub-folders. Raises before any work if an output exists (without
    ``force``) or two inputs map to one output."""
    files = expand_inputs(inputs, extensions)
    out = Path(output)
    single = len(inputs) == 1 and Path(inputs[0]).is_file()
    if single and not out.is_dir() and not output.endswith(("/", "\\")):
        jobs = [(files[0], out)]
    else:
        if out.exists() and not out.is_dir():
            raise InputError(f"{out} is a file; with several inputs or a directory, -o must be a directory")
        jobs = []
        for given in map(Path, inputs):
            if given.is_dir():
                found = [f for f in files if given in f.parents]
                jobs.extend((f, out / f.relative_to(given).with_suffix(suffix)) for f in found)
            else:
                jobs.append((given, out / given.with_suffix(suffix).name))
    targets = [o for _, o in jobs]
    dupes = {str(t) for t in targets if targets.count(t) > 1}
    if dupes:
        raise InputError(f"several inputs would be written to {sorted(dupes)[0]}; rename them or use separate runs")
    for src, dst in jobs:
        if dst.resolve() == src.resolve():
            raise InputError(f"output {dst} is the input itself; choose another output")
    if not force:
        existing = [str(o) for o in targets if o.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise InputError(f"{existing[0]}{more} exists; use --force to overwrite")
    return jobs


def run_jobs(jobs: list[Job], work: Callable[[Path, Path], str | None], args: argparse.Namespace, desc: str) -> int:
    """Run ``work(src, dst)`` per job with a progress bar; a failing file is reported on one
    line and the others go on. Returns the exit code (1 if any file failed)."""
    from tqdm import tqdm

    failed = 0
    bar = tqdm(jobs, desc=desc, unit="file", disable=args.no_progress or len(jobs) < 2, file=sys.stderr)
    for src, dst in bar:
        made = [d for d in [dst.parent, *dst.parent.parents] if not d.exists()]
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            note = work(src, dst)
        except Exception as exc:  # noqa: BLE001 - one failing file must not stop the batch
            failed += 1
            text = message(exc)
            bar.write(f"error: {text if str(src) in text else f'{src}: {text}'}", file=sys.stderr)
            for d in made:  # leave no empty folders behind (deepest first)
                if d.is_dir() and not any(d.iterdir()):
                    d.rmdir()
            continue
        if note and (args.no_progress or len(jobs) < 2):
            print(note)
    if failed:
        if len(jobs) > 1:
            print(f"error: {failed} of {len(jobs)} files failed", file=sys.stderr)
        return 1
    return 0
