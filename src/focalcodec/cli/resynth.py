"""``focalcodec resynth IN... -o OUT``: audio -> tokens -> audio in one go (no bitstream
written), e.g. to listen to what the codec keeps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..compression import decompress_to_file, encode_audio
from .batch import add_audio_output_options, add_batch_options, audio_suffix, plan, run_jobs, windowing
from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("resynth", help="encode and decode audio files (file in, file out)")
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or directories (searched recursively)")
    add_batch_options(p, "created if needed")
    add_model_options(p)
    add_audio_output_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    win = windowing(args)
    jobs = plan(args.inputs, args.output, AUDIO_EXTENSIONS, audio_suffix(args), args.force)
    codec = load_model(args)

    def work(src: Path, dst: Path) -> str:
        stream = encode_audio(src, codec, windowing=win)
        _, num, rate = decompress_to_file(
            stream, codec, dst, output_rate=args.output_rate, overwrite=True, windowing=win
        )
        return f"{src} -> {dst}: {num} samples at {rate} Hz ({stream.bitrate:.0f} bit/s as a file)"

    return run_jobs(jobs, work, args, "resynth")
