"""``focalcodec decode IN.fc... -o OUT``: bitstreams (or ``.npy`` token arrays) -> WAV/FLAC.

A ``.fc`` file restores the original duration exactly. Without ``--model`` the published
model named in each file's header is loaded; ``.npy`` tokens need ``--model``. Every header
is checked against the model before decoding, which writes the audio window by window.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .batch import add_audio_output_options, add_batch_options, audio_suffix, plan, progress_bar, run_jobs
from .common import add_command, add_model_options, check_device, load_model, windowing

# A .npy token file may hold at most this many tokens (about 11 days at 50 Hz): its header
# declares a shape, and nothing is allocated from it before this and the file size agree.
MAX_NPY_TOKENS = 1 << 26


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "decode",
        help="decode .fc bitstreams (or .npy tokens) to audio",
        description="Decode .fc bitstreams (or .npy token arrays, with --model) to WAV or FLAC, restoring the "
        "original duration. The model must be the one that made each file (same weights); without --model the "
        "published model named in the header is used.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help=".fc / .npy files or folders (searched recursively)")
    add_batch_options(p, "created if needed")
    add_model_options(p, default=None)
    p.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="decode files made by other weights of the same architecture with --model anyway (the audio will "
        "differ from what the encoder's model gives)",
    )
    add_audio_output_options(p)
    p.set_defaults(func=run)
    return p


def load_tokens(path: Path):
    """``(T,)`` int64 tokens from a .npy file written by ``encode --format npy``; the shape
    its header declares is checked against the file size before anything is read."""
    import numpy as np

    from ..bitstream import BitstreamError

    try:
        toks = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise BitstreamError(f"{path} is not a readable .npy token array (truncated or damaged?): {exc}") from None
    if toks.ndim != 1 or not np.issubdtype(toks.dtype, np.integer) or toks.size == 0:
        raise BitstreamError(f"{path} must hold a non-empty 1-D integer token array, got {toks.dtype} {toks.shape}")
    if toks.size > MAX_NPY_TOKENS:
        raise BitstreamError(f"{path} holds {toks.size} tokens, more than the {MAX_NPY_TOKENS} a file may hold")
    return np.array(toks, dtype=np.int64)


def run(args: argparse.Namespace) -> int:
    from ..bitstream import SUFFIX, BitstreamError, CompressedAudio
    from ..compression import decompress_to_file, resolve_model, tokens_to_file

    win = windowing(args)
    jobs = plan(args.inputs, args.output, (SUFFIX, ".npy"), audio_suffix(args), args.force)
    device = check_device(args.device)
    models: dict[str, Any] = {}
    if args.model is not None:
        models[""] = load_model(args)

    def work(src: Path, dst: Path) -> str:
        if src.suffix.lower() == ".npy":
            if "" not in models:
                raise BitstreamError(f"{src}: .npy tokens carry no model identity; pass --model")
            rate = None if args.output_rate == "input" else args.output_rate
            _, num, rate = tokens_to_file(
                load_tokens(src), models[""], dst, output_rate=rate, overwrite=args.force, windowing=win, inputs=(src,)
            )
            return f"{src} -> {dst}: {num} samples at {rate} Hz ({num / rate:.2f} s)"
        stream = CompressedAudio.load(src)
        if "" in models:
            codec = models[""]
        else:
            if stream.model_name not in models:
                models[stream.model_name] = resolve_model(None, stream).to(device)
            codec = models[stream.model_name]
        with progress_bar(stream.duration, args, f"decode {src.name}", win.window, len(jobs) == 1) as update:
            _, num, rate = decompress_to_file(
                stream,
                codec,
                dst,
                output_rate=args.output_rate,
                overwrite=args.force,
                windowing=win,
                check_weights=not args.allow_other_weights,
                inputs=(src,),
                progress=update,
            )
        return f"{src} -> {dst}: {num} samples at {rate} Hz ({stream.duration:.2f} s)"

    return run_jobs(jobs, work, args, "decode")
