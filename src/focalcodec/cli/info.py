"""``focalcodec info [FILE]``: what a ``.fc`` bitstream holds (header fields, duration,
bitrate), what a ``.npy`` token file or an audio file holds, or (no FILE) a model's rates,
bitrate and size. Prints JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..limits import check_input_file
from .common import add_command, add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "info",
        help="describe a .fc file, a token or audio file, or a model",
        description="Print, as JSON, the header fields of a .fc bitstream (fully validated), the dtype and shape of "
        "a .npy token file, the format of an audio file, or (without FILE) a model's rates, bitrate, size and "
        "weights digest.",
    )
    p.add_argument(
        "file", nargs="?", metavar="FILE", help=".fc bitstream, .npy tokens or audio file (omit for --model)"
    )
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def describe_file(path: Path) -> dict[str, Any]:
    """Facts about a .fc, .npy or audio file; a bitstream is fully validated."""
    from ..audio import audio_info
    from ..bitstream import FLAG_STREAM, MAGIC, CompressedAudio

    check_input_file(path)
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 2)
    if head[: len(MAGIC)] == MAGIC and len(head) > 5 and head[5] & FLAG_STREAM:
        return describe_stream(path)
    if head[: len(MAGIC)] == MAGIC or path.suffix.lower() == ".fc":
        stream = CompressedAudio.load(path)
        return {"file": str(path), "type": "focalcodec bitstream", **stream.info()}
    if path.suffix.lower() == ".npy":
        import numpy as np

        try:
            toks = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path} is not a readable .npy array (truncated or damaged?): {exc}") from None
        return {"file": str(path), "type": "token array", "dtype": str(toks.dtype), "shape": list(toks.shape)}
    meta = audio_info(path)
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
