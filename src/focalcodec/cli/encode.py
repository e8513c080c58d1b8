"""``focalcodec encode IN... -o OUT``: audio files (any format, rate, channels) -> ``.fc``
bitstreams, or token arrays (``.npy``, int64 (T,)) for research."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from ..limits import AUDIO_EXTENSIONS
from .batch import add_batch_options, plan, progress_bar, run_jobs
from .common import add_command, add_model_options, load_model, windowing


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "encode",
        help="compress audio files to .fc bitstreams (or .npy tokens)",
        description="Compress audio files (any format, sample rate and channel count) to .fc bitstreams, or to "
        ".npy token arrays with --format npy. Long files are encoded window by window (--window).",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders (searched recursively)")
    add_batch_options(p, "created if needed", stdout=True)
    add_model_options(p)
    p.add_argument(
        "--format",
        choices=("fc", "npy"),
        default=None,
        help="fc bitstream (default) or npy token array; a single -o FILE.npy implies npy",
    )
    p.set_defaults(func=run)
    return p


def save_tokens(path: Path, tokens, force: bool = False, inputs: tuple[Path, ...] = ()) -> None:
    """Write ``(T,)`` int64 tokens as .npy (see :func:`focalcodec.outputs.output_path`)."""
    import numpy as np

    from ..outputs import write_bytes

    buf = io.BytesIO()
    np.save(buf, np.asarray(tokens, dtype=np.int64))
    write_bytes(path, buf.getvalue(), force, inputs)


def run(args: argparse.Namespace) -> int:
    from ..compression import encode_audio
    from ..outputs import write_bytes

    fmt = args.format or ("npy" if args.output.lower().endswith(".npy") else "fc")
    win = windowing(args)
    jobs = plan(args.inputs, args.output, AUDIO_EXTENSIONS, f".{fmt}", args.force)
    codec = load_model(args)

    def work(src: Path, dst: Path) -> str:
        with progress_bar(_seconds(src), args, f"encode {src.name}", win.window, len(jobs) == 1) as update:
            stream = encode_audio(src, codec, windowing=win, progress=update)
        if fmt == "npy":
            save_tokens(dst, stream.tokens, args.force, (src,))
            return f"{src} -> {dst}: {stream.duration:.2f} s, {stream.num_tokens} tokens"
        write_bytes(dst, stream.to_bytes(), args.force, (src,))
        return (
            f"{src} -> {dst}: {stream.duration:.2f} s, {stream.num_tokens} tokens, "
            f"{stream.size} bytes ({stream.bitrate:.0f} bit/s)"
        )

    return run_jobs(jobs, work, args, "encode")


def _seconds(path: Path) -> float:
    """The duration soundfile reports (0 when unknown; the reader reports real problems)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate > 0 else 0.0
    except Exception:  # noqa: BLE001
        return 0.0
