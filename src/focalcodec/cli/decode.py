"""``focalcodec decode IN.fc... -o OUT``: bitstreams (or ``.npy`` token arrays) -> WAV/FLAC.

A ``.fc`` file restores the original duration exactly. Without ``--model`` the published
model named in each file's header is loaded; ``.npy`` tokens need ``--model``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import save_audio
from ..bitstream import SUFFIX, BitstreamError, CompressedAudio
from ..compression import decompress_to_file, resolve_model
from ..longform import decode_long
from .batch import add_audio_output_options, add_batch_options, audio_suffix, plan, run_jobs, windowing
from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("decode", help="decode .fc bitstreams (or .npy tokens) to audio")
    p.add_argument("inputs", nargs="+", metavar="IN", help=".fc / .npy files or directories (searched recursively)")
    add_batch_options(p, "created if needed")
    add_model_options(p, default=None)
    p.set_defaults(model=None)
    add_audio_output_options(p)
    p.set_defaults(func=run)
    return p


def load_tokens(path: Path) -> np.ndarray:
    """``(T,)`` int64 tokens from a .npy file written by ``encode --format npy``."""
    try:
        toks = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BitstreamError(f"{path} is not a readable .npy token array: {exc}") from None
    if toks.ndim != 1 or not np.issubdtype(toks.dtype, np.integer) or toks.size == 0:
        raise BitstreamError(f"{path} must hold a non-empty 1-D integer token array, got {toks.dtype} {toks.shape}")
    return toks.astype(np.int64)


def run(args: argparse.Namespace) -> int:
    win = windowing(args)
    jobs = plan(args.inputs, args.output, (SUFFIX, ".npy"), audio_suffix(args), args.force)
    models: dict[str, Any] = {}
    if args.model is not None:
        models[""] = load_model(args)

    def work(src: Path, dst: Path) -> str:
        if src.suffix.lower() == ".npy":
            if "" not in models:
                raise BitstreamError(f"{src}: .npy tokens carry no model identity; pass --model")
            codec = models[""]
            audio = decode_long(codec, torch.from_numpy(load_tokens(src)), windowing=win)
            rate = codec.sample_rate_output
            out_rate = (
                None if args.output_rate is None else (rate if args.output_rate == "input" else int(args.output_rate))
            )
            save_audio(dst, audio, rate, output_rate=out_rate)
            return f"{src} -> {dst}: {audio.shape[0] / rate:.2f} s"
        stream = CompressedAudio.load(src)
        if "" in models:
            codec = models[""]
        else:
            if stream.model_name not in models:
                models[stream.model_name] = resolve_model(None, stream).to(args.device)
            codec = models[stream.model_name]
        _, num, rate = decompress_to_file(
            stream, codec, dst, output_rate=args.output_rate, overwrite=True, windowing=win
        )
        return f"{src} -> {dst}: {num} samples at {rate} Hz ({stream.duration:.2f} s)"

    return run_jobs(jobs, work, args, "decode")
