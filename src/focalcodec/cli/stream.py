"""``focalcodec stream IN -o OUT``: play a file (or the microphone) through the streaming
codec at real-time pace or as fast as possible, and report per-chunk latency and RTF.

Causal models stream with 80 ms chunks (:class:`focalcodec.streaming.StreamCodec`);
non-causal models use chunked pseudo-streaming (:class:`~focalcodec.streaming.ChunkedStream`,
500 ms chunks, 540 ms algorithmic latency).
"""

from __future__ import annotations

import argparse
import json
import queue
import time
from collections.abc import Iterator

from ..errors import InputError
from .common import (
    add_command,
    add_force_option,
    add_model_options,
    add_output_option,
    add_output_rate_option,
    load_model,
    positive_int,
    positive_seconds,
)

DEFAULT_MODEL = "lucadellalib/focalcodec_50hz_4k_causal"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "stream",
        help="stream a file or the microphone through the codec; report latency",
        description="Feed a file (or the microphone) block by block through the streaming codec (causal models: "
        "80 ms chunks; non-causal models: chunked pseudo-streaming) and report per-chunk latency and the "
        "real-time factor (RTF = processing time / audio time; below 1 keeps up with real time).",
    )
    p.add_argument("input", nargs="?", metavar="IN", help="audio file (omit with --mic)")
    add_output_option(p, "output audio file (.wav/.flac); omit to only measure", required=False)
    add_force_option(p, "an existing output file")
    add_model_options(p, DEFAULT_MODEL)
    p.add_argument(
        "--realtime", action="store_true", help="feed input at real-time pace (default: as fast as possible)"
    )
    p.add_argument("--block-ms", type=positive_seconds, default=80.0, help="input block size in ms (80 = one chunk)")
    p.add_argument(
        "--precision",
        choices=("float32", "float16", "int8"),
        default="float32",
        help="CPU only: float16 weights (about 2x faster, same tokens in our tests) or int8 "
        "(about 3x faster, approximate output)",
    )
    p.add_argument(
        "--decode-precision",
        choices=("float32", "float16", "int8"),
        help="precision of the decode side, decompressor + decoder (default: --precision); --precision float16 "
        "--decode-precision int8 keeps the tokens and is faster still",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads (default: torch's, one per core; use 1 on a busy machine)",
    )
    p.add_argument(
        "--mic", action="store_true", help="record from the default microphone (needs the sounddevice extra)"
    )
    p.add_argument("--seconds", type=positive_seconds, default=10.0, help="with --mic: how long to record")
    add_output_rate_option(p, allow_input=False)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--server",
        metavar="URL",
        help="stream through a `focalcodec serve` server (e.g. http://127.0.0.1:8765) instead of a local model",
    )
    p.add_argument("--speaker-set", metavar="NAME", help="with --server: a voice the server offers (kNN-VC)")
    p.set_defaults(func=run)
    return p


def _file_blocks(sig, block: int, realtime: bool, rate: int) -> Iterator[tuple]:
    """(block, time it became available) pairs; with ``realtime`` waits for that time."""
    start = time.perf_counter()
    for i in range(0, sig.shape[0], block):
        piece = sig[i : i + block]
        due = start + (i + piece.shape[0]) / rate
        if realtime:
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        else:
            due = time.perf_counter()
        yield piece, due


def _mic_blocks(block: int, seconds: float, rate: int) -> Iterator[tuple]:
    try:
        import sounddevice as sd  # type: ignore[import-not-found]
    except ImportError:
        raise InputError("microphone input needs the optional 'sounddevice' package: pip install sounddevice") from None
    import torch

    q: queue.Queue[tuple] = queue.Queue()

    def callback(data, frames, time_info, status) -> None:  # noqa: ANN001 - sounddevice API
        q.put((torch.from_numpy(data[:, 0].copy()), time.perf_counter()))

    total = int(seconds * rate)
    got = 0
    with sd.InputStream(samplerate=rate, channels=1, dtype="float32", blocksize=block, callback=callback):
        while got < total:
            piece, at = q.get()
            got += piece.shape[0]
            yield piece, at


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audio import load_audio
    from ..outputs import check_targets
    from ..streaming import ChunkedStream, StreamCodec
    from ..timing import real_time_factor

    if args.mic == bool(args.input):
        raise InputError("give either an input file or --mic")
    if args.output:
        check_targets([args.output], [args.input] if args.input else [], args.force)
    if args.server:
        return run_remote(args)
    if args.speaker_set:
        raise InputError("--speaker-set names a voice of a server: use it with --server")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    codec = load_model(args)
    rate = codec.sample_rate_input
    block = max(1, int(round(args.block_ms * rate / 1000)))
    if codec.causal:
        stream = StreamCodec(codec, precision=args.precision, decode_precision=args.decode_precision)
        latency_ms = stream.latency_ms
        push = lambda x: stream.push(x)[1]  # noqa: E731
        flush = lambda: stream.flush()[1]  # noqa: E731
    else:
        if args.precision != "float32" or args.decode_precision not in (None, "float32"):
            raise InputError("--precision / --decode-precision other than float32 need a causal model")
        stream = ChunkedStream(codec)
        latency_ms = stream.latency_ms
        push, flush = stream.push, stream.flush

    if args.mic:
        blocks = _mic_blocks(block, args.seconds, rate)
    else:
        sig = load_audio(args.input, rate)
        blocks = _file_blocks(sig, block, args.realtime, rate)

    outs, times = [], []
    samples_in = 0
    processing = 0.0  # seconds spent inside the codec (not waiting for input)
    begin = time.perf_counter()
    for piece, available in blocks:
        start = time.perf_counter()
        out = push(piece)
        done = time.perf_counter()
        processing += done - start
        samples_in += piece.shape[0]
        if out.shape[-1] > 0:  # a block that completed at least one chunk
            times.append(1000.0 * (done - available))
        outs.append(out)
    start = time.perf_counter()
    outs.append(flush())
    processing += time.perf_counter() - start
    wall = time.perf_counter() - begin
    audio = torch.cat(outs)[: samples_in * codec.sample_rate_output // rate]
    duration = samples_in / rate
    report = {
        "model": codec.model_id,
        "mode": "stream" if codec.causal else "chunked pseudo-stream",
        "precision": args.precision,
        "decode_precision": args.decode_precision or args.precision,
        "threads": torch.get_num_threads(),
        "algorithmic_latency_ms": latency_ms,
        "block_ms": 1000.0 * block / rate,
        "chunks": len(times),
        "latency_p50_ms": _percentile(times, 50),
        "latency_p99_ms": _percentile(times, 99),
        "audio_seconds": duration,
        "processing_seconds": processing,
        "rtf": real_time_factor(processing_seconds=processing, audio_seconds=duration),
        "wall_seconds": wall,
    }
    return _finish(
        args,
        report,
        audio,
        codec.sample_rate_output,
        f"{report['mode']} of {duration:.2f} s with {codec.model_id} ({args.precision}, {report['threads']} "
        f"thread(s)): {len(times)} chunks, latency p50 {report['latency_p50_ms']:.1f} ms / p99 "
        f"{report['latency_p99_ms']:.1f} ms (+{latency_ms:.0f} ms algorithmic), RTF {report['rtf']:.3f}",
    )


def _finish(args: argparse.Namespace, report: dict, audio, rate: int, line: str) -> int:
    """Write the audio (``-o``) and print the report: JSON (``--json``) or ``line``."""
    from ..audio import save_audio

    if args.output:
        inputs = [args.input] if args.input else []
        save_audio(args.output, audio, rate, args.output_rate, force=args.force, inputs=inputs)
        report["output"] = str(args.output)
    print(json.dumps(report, indent=2) if args.json else line + (f" -> {args.output}" if args.output else ""))
    return 0


def run_remote(args: argparse.Namespace) -> int:
    """``--server URL``: the same stream and report, through a ``focalcodec serve`` server."""
    import asyncio

    from ..audio import load_audio
    from ..serve.client import health, paced, run_stream

    if args.precision != "float32" or args.decode_precision:
        raise InputError("--precision / --decode-precision are the server's (focalcodec serve --precision)")
    info = health(args.server)
    rate = int(info["sample_rate_in"])
    block = max(1, int(round(args.block_ms * rate / 1000)))
    if args.mic:
        blocks = _mic_blocks(block, args.seconds, rate)
    else:
        x = load_audio(args.input, rate).numpy()
        blocks = paced(x, block, rate if args.realtime else None)
    begin = time.perf_counter()
    result = asyncio.run(run_stream(args.server, blocks, "resynth", args.speaker_set))
    busy = time.perf_counter() - begin
    samples_in = result.input_steps
    audio = result.audio[: samples_in * int(info["sample_rate_out"]) // rate]
    duration = samples_in / rate
    times = result.latencies_ms
    report = {
        "model": info["model"],
        "mode": "server",
        "server": args.server,
        "precision": info.get("precision"),
        "decode_precision": info.get("decode_precision"),
        "speaker_set": args.speaker_set,
        "algorithmic_latency_ms": info["latency_ms"],
        "block_ms": 1000.0 * block / rate,
        "chunks": len(times),
        "latency_p50_ms": _percentile(times, 50),
        "latency_p99_ms": _percentile(times, 99),
        "audio_seconds": duration,
        "wall_seconds": busy,
    }
    return _finish(
        args,
        report,
        audio,
        int(info["sample_rate_out"]),
        f"stream of {duration:.2f} s through {args.server} ({info['model']}): {len(times)} chunks, "
        f"latency p50 {report['latency_p50_ms']:.1f} ms / p99 {report['latency_p99_ms']:.1f} ms "
        f"(+{info['latency_ms']:.0f} ms algorithmic)",
    )
