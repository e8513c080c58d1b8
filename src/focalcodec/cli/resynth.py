"""``focalcodec resynth IN... -o OUT``: audio -> tokens -> audio in one go (no bitstream
written), e.g. to listen to what the codec keeps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..limits import AUDIO_EXTENSIONS
from .batch import add_audio_output_options, add_batch_options, audio_suffix, plan, progress_bar, run_jobs
from .common import add_command, add_model_options, load_model, windowing
from .encode import _seconds


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "resynth",
        help="encode and decode audio files (file in, file out)",
        description="Encode audio files to tokens and decode them straight back to audio (no bitstream is written), "
        "to hear what the codec keeps. Long files go window by window (--window).",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders (searched recursively)")
    add_batch_options(p, "created if needed")
    add_model_options(p)
    add_audio_output_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..compression import decompress_to_file, encode_audio

    win = windowing(args)
    jobs = plan(args.inputs, args.output, AUDIO_EXTENSIONS, audio_suffix(args), args.force)
    codec = load_model(args)

    def work(src: Path, dst: Path) -> str:
        seconds = _seconds(src)
        with progress_bar(2 * seconds, args, f"resynth {src.name}", 2 * win.window, len(jobs) == 1) as update:
            stream = encode_audio(src, codec, windowing=win, progress=update)
            _, num, rate = decompress_to_file(
                stream,
                codec,
                dst,
                output_rate=args.output_rate,
                overwrite=args.force,
                windowing=win,
                inputs=(src,),
                progress=update,
            )
        return f"{src} -> {dst}: {num} samples at {rate} Hz ({stream.bitrate:.0f} bit/s as a file)"

    return run_jobs(jobs, work, args, "resynth")
