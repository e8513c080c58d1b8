"""``focalcodec stream-encode IN -o OUT``: audio to a streamable ``.fc`` bitstream as it
arrives (a header, then one fixed-size frame of tokens per 80 ms; docs/bitstream.md).

``IN`` is an audio file, or ``-``: headerless PCM on standard input (little-endian float32 at
16 kHz unless ``--raw s16`` / ``--rate`` say otherwise). ``-o -`` writes to standard output,
flushed after every frame, so it composes with any transport::

    arecord -r16000 -f FLOAT_LE -c1 -t raw | focalcodec stream-encode - -o - | nc HOST 7000

Ctrl-C ends the input: what was read is coded and written as for an end of file.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..outputs import STDOUT
from .common import add_command, add_model_options, add_output_option, hz, load_model
from .pipes import add_pipe_options, broken_pipe
from .stream import DEFAULT_MODEL


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "stream-encode",
        help="audio to a streamable .fc bitstream, frame by frame (pipes, sockets)",
        description="Encode audio to a streamable .fc bitstream as it arrives: a header, then one fixed-size "
        "frame of tokens per 80 ms chunk (600 bit/s with the 4k model). Causal models only.",
    )
    p.add_argument("input", metavar="IN", help="audio file, or - for raw PCM on standard input")
    add_output_option(p, "bitstream file (.fcs), or - for standard output")
    add_model_options(p, DEFAULT_MODEL)
    add_pipe_options(p, "in")
    p.add_argument(
        "--rate",
        type=hz,
        default=None,
        metavar="HZ",
        help="sample rate of raw PCM input (--raw, or IN = -), resampled to the model's (default: 16000; an audio "
        "file's rate comes from its header)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audio import AudioReader
    from ..outputs import check_targets, open_output
    from ..streamfile import FrameWriter, StreamHeader
    from ..streaming import StreamEncoder

    stdin = args.input == STDOUT
    raw = args.raw or ("f32" if stdin else None)
    if args.rate is not None and raw is None:
        raise InputError(
            f"--rate is the sample rate of raw PCM (--raw, or - for standard input); {args.input} has its rate "
            "in its header: leave --rate out"
        )
    check_targets([args.output], [] if stdin else [args.input], args.force)
    codec = load_model(args)
    if not codec.causal:
        raise InputError(
            f"stream-encode needs a causal model (e.g. {DEFAULT_MODEL}); {codec.model_id} is not causal: "
            "use `focalcodec encode` for whole files"
        )
    source = sys.stdin.buffer if stdin else args.input
    reader = AudioReader(source, codec.sample_rate_input, codec.chunk_size, raw=raw, raw_rate=args.rate or 16000)
    header = StreamHeader.for_model(codec, original_rate=reader.rate)
    encoder = StreamEncoder(codec, precision=args.precision)
    pieces = iter(reader)
    with broken_pipe(), open_output(args.output, "wb", args.force, [] if stdin else [args.input]) as f:
        writer = FrameWriter(f, header)
        try:
            for piece in pieces:
                writer.write(encoder.push(torch.from_numpy(piece)).numpy())
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the input (a live capture is stopped that way)
        if encoder.samples_in == 0:
            raise InputError(f"{reader.name}: no audio samples to encode")
        writer.write(encoder.flush().numpy())
    if not args.quiet:
        seconds = reader.samples_read / reader.rate
        print(
            f"{reader.name}: {seconds:.2f} s -> {writer.frames} frames of {header.frame_bytes} bytes "
            f"+ {header.size}-byte header = {writer.bytes_written} bytes ({header.bitrate:g} bit/s on the wire)"
            + ("" if args.output == STDOUT else f" -> {args.output}"),
            file=sys.stderr,
        )
    return 0
