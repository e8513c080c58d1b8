"""``focalcodec stream-decode IN -o OUT``: a streamable ``.fc`` bitstream back to audio,
frame by frame as it arrives (``focalcodec stream-encode`` writes it; docs/bitstream.md).

``IN`` is a file or ``-`` (standard input). ``OUT`` is a WAV/FLAC file, or with ``--raw``
headerless PCM (``-`` is standard output, flushed after every frame)::

    nc -l 7000 | focalcodec stream-decode - -o - --raw | aplay -r24000 -f FLOAT_LE -c1 -t raw

A stream cut anywhere decodes every complete frame (a warning names the bytes of the
incomplete one); a damaged header or frame is one error line.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from ..limits import check_input_file
from ..outputs import STDOUT
from .common import add_command, add_model_options, add_output_option, add_output_rate_option, check_device
from .pipes import add_pipe_options, broken_pipe


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "stream-decode",
        help="a streamable .fc bitstream back to audio, frame by frame",
        description="Decode a streamable .fc bitstream (from `focalcodec stream-encode`) to audio as the frames "
        "arrive. Without --model, the published model named in the stream's header is loaded.",
    )
    p.add_argument("input", metavar="IN", help="bitstream file, or - for standard input")
    add_output_option(p, "audio file (.wav/.flac), or with --raw a file or - (stdout)")
    add_model_options(p, default=None)
    p.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="decode a stream made by other weights of the same architecture with --model anyway (the audio "
        "will differ from what the encoder's model gives)",
    )
    add_pipe_options(p, "out")
    add_output_rate_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audio import AudioWriter
    from ..compression import resolve_model
    from ..outputs import check_targets
    from ..streamfile import FrameReader
    from ..streaming import StreamDecoder

    stdin = args.input == STDOUT
    inputs = [] if stdin else [args.input]
    check_targets([args.output], inputs, args.force)
    device = check_device(args.device)
    with contextlib.ExitStack() as stack:
        if stdin:
            reader = FrameReader(sys.stdin.buffer, "standard input")
        else:
            path = check_input_file(args.input, "stream file")
            reader = FrameReader(stack.enter_context(open(path, "rb")), args.input)
        header = reader.header
        codec = resolve_model(args.model, header).to(device)
        header.check_model(codec, check_weights=not args.allow_other_weights)
        out_rate = args.output_rate
        rate = None if out_rate is None else header.original_rate if out_rate == "input" else out_rate
        decoder = StreamDecoder(codec, precision=args.precision)
        writer = AudioWriter(args.output, codec.sample_rate_output, rate, args.raw, args.force, inputs)
        with broken_pipe(), writer:
            for tokens in reader:
                writer.write(decoder.push(torch.from_numpy(tokens)))
            if reader.frames:
                writer.write(decoder.flush())
    if reader.trailing:
        warnings.warn(
            f"{reader.source} ends inside a frame: its last {reader.trailing} byte(s), an incomplete frame, "
            "were ignored (the stream was cut)",
            stacklevel=1,
        )
    if not args.quiet:
        seconds = reader.frames * header.frame_seconds
        print(
            f"{reader.source}: {reader.frames} frames -> {seconds:.2f} s at {writer.rate} Hz"
            + ("" if args.output == STDOUT else f" -> {args.output}"),
            file=sys.stderr,
        )
    return 0
