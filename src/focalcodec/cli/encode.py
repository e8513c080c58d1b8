"""``focalcodec encode IN... -o OUT``: audio files (any format, rate, channels) -> ``.fc``
bitstreams, or token arrays (``.npy``, int64 (T,)) for research."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from ..audio import AUDIO_EXTENSIONS
from ..compression import encode_audio
from ..outputs import write_bytes
from .batch import add_batch_options, plan, run_jobs, windowing
from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("encode", help="compress audio files to .fc bitstreams (or .npy tokens)")
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or directories (searched recursively)")
    add_batch_options(p, "created if needed")
    add_model_options(p)
    p.add_argument(
        "--format",
        choices=("fc", "npy"),
        default=None,
        help="fc bitstream (default) or npy token array; a single -o FILE.npy implies npy",
    )
    p.set_defaults(func=run)
    return p


def save_tokens(path: Path, tokens: np.ndarray, force: bool = False, inputs: tuple[Path, ...] = ()) -> None:
    """Write ``(T,)`` int64 tokens as .npy (see :func:`focalcodec.outputs.output_path`)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(tokens, dtype=np.int64))
    write_bytes(path, buf.getvalue(), force, inputs)


def run(args: argparse.Namespace) -> int:
    fmt = args.format or ("npy" if args.output.lower().endswith(".npy") else "fc")
    win = windowing(args)
    jobs = plan(args.inputs, args.output, AUDIO_EXTENSIONS, f".{fmt}", args.force)
    codec = load_model(args)

    def work(src: Path, dst: Path) -> str:
        stream = encode_audio(src, codec, windowing=win)
        if fmt == "npy":
            save_tokens(dst, stream.tokens, args.force, (src,))
            return f"{src} -> {dst}: {stream.duration:.2f} s, {stream.num_tokens} tokens"
        write_bytes(dst, stream.to_bytes(), args.force, (src,))
        return (
            f"{src} -> {dst}: {stream.duration:.2f} s, {stream.num_tokens} tokens, "
            f"{stream.size} bytes ({stream.bitrate:.0f} bit/s)"
        )

    return run_jobs(jobs, work, args, "encode")
