"""``focalcodec info [FILE]``: what a ``.fc`` bitstream holds (header fields, duration,
bitrate), what a ``.npy`` token file or an audio file holds, or (no FILE) a model's rates,
bitrate and size. Prints JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..audio import AudioError
from ..bitstream import FLAG_STREAM, MAGIC, CompressedAudio
from ..errors import InputError
from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="describe a .fc file, a token or audio file, or a model")
    p.add_argument(
        "file", nargs="?", metavar="FILE", help=".fc bitstream, .npy tokens or audio file (omit for --model)"
    )
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def describe_file(path: Path) -> dict[str, Any]:
    """Facts about a .fc, .npy or audio file; a bitstream is fully validated."""
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 2)
    if head[: len(MAGIC)] == MAGIC and len(head) > 5 and head[5] & FLAG_STREAM:
        return describe_stream(path)
    if head[: len(MAGIC)] == MAGIC or path.suffix.lower() == ".fc":
        stream = CompressedAudio.load(path)
        return {"file": str(path), "type": "focalcodec bitstream", **stream.info()}
    if path.suffix.lower() == ".npy":
        import numpy as np

        toks = np.load(path, mmap_mode="r", allow_pickle=False)
        return {"file": str(path), "type": "token array", "dtype": str(toks.dtype), "shape": list(toks.shape)}
    import soundfile as sf

    try:
        meta = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001
        raise AudioError(f"{path} is neither a .fc bitstream nor readable audio: {exc}") from None
    return {
        "file": str(path),
        "type": "audio",
        "format": meta.format,
        "subtype": meta.subtype,
        "sample_rate": meta.samplerate,
        "channels": meta.channels,
        "num_samples": meta.frames,
        "duration_s": round(meta.frames / meta.samplerate, 6) if meta.samplerate else None,
    }


def describe_stream(path: Path) -> dict[str, Any]:
    """Facts about a streamable .fc (``focalcodec stream-encode``): its header, and the
    frames the file holds."""
    from ..streamfile import StreamHeader

    with open(path, "rb") as f:
        header = StreamHeader.read(f, str(path))
    body = path.stat().st_size - header.size
    frames, trailing = divmod(body, header.frame_bytes)
    return {
        "file": str(path),
        "type": "focalcodec stream",
        **header.info(),
        "frames": frames,
        "trailing_bytes": trailing,
        "duration_s": round(frames * header.frame_seconds, 6),
    }


def run(args: argparse.Namespace) -> int:
    info = describe_file(Path(args.file)) if args.file else load_model(args).info()
    print(json.dumps(info, indent=2))
    return 0
