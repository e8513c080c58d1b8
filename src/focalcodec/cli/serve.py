"""``focalcodec serve``: live streaming for many clients over WebSockets, with a browser page.

One engine runs every connected stream (continuous batching: all streams with a complete
80 ms chunk step together). ``GET /`` is the page (microphone, playback, live figures,
voice conversion, two-tab "link" mode), ``GET /health`` the server's state as JSON,
``/v1/stream`` the WebSocket protocol (docs/serve.md). Needs the ``serve`` extra (aiohttp).
``--speaker-sets`` are checked at start as ``vc --speaker-set`` is: each must have been built
by the features model (``--features-model``, ``--allow-other-weights``: same meaning).
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import InputError
from .common import add_command, add_features_model_options, add_model_options, features_model, load_model, positive_int
from .stream import DEFAULT_MODEL

PRECISIONS = ("float32", "float16", "int8")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "serve",
        help="serve live streaming to many clients (WebSocket protocol and a browser page)",
        description="Serve a causal FocalCodec model to many live clients: WebSocket /v1/stream (audio or tokens "
        "in, tokens and audio out, docs/serve.md), a browser page at / and GET /health. Binds the loopback "
        "address unless --host says otherwise.",
    )
    add_model_options(p, DEFAULT_MODEL)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but the loopback exposes the server",
    )
    p.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    p.add_argument("--max-streams", type=positive_int, default=8, help="streams open at once; more clients are refused")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="CPU only: engine weights in float16 or int8",
    )
    p.add_argument(
        "--decode-precision",
        choices=PRECISIONS,
        default=None,
        help="decode side: decompressor + decoder (default: --precision)",
    )
    p.add_argument(
        "--speaker-sets",
        metavar="DIR",
        help="folder of speaker sets (.safetensors, from `focalcodec vc --save-speaker-set`) offered for "
        "voice conversion (default: none); each must have been built by the features model",
    )
    add_features_model_options(p, "--speaker-sets")
    p.add_argument(
        "--allowed-origins",
        nargs="+",
        default=[],
        metavar="ORIGIN",
        help="web origins (e.g. https://example.org, or *) whose pages may connect "
        "(default: only the server's own page)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="torch CPU threads of the engine (default: torch's, one per core, less one left to the event loop)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors")
    p.set_defaults(func=run)
    return p


def engine_threads(requested: int | None, cores: int) -> int:
    """Torch threads for the engine: ``requested``, else one per core (torch's default,
    ``cores``) less one for the event loop and the clients' I/O. On 2 cores, 2 engine threads
    stalled on the busy event loop: the full 4k model's step took 106 ms p50 against 80 ms with
    one thread (docs/serve.md, Speed)."""
    return requested if requested is not None else max(1, cores - 1)


def run(args: argparse.Namespace) -> int:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        raise InputError('focalcodec serve needs aiohttp: pip install "focalcodec[serve]"') from None
    import torch

    from ..serve.server import _is_loopback, load_speaker_sets, run_server, speaker_set_files

    if args.max_streams < 1:
        raise InputError("--max-streams must be at least 1")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must lie in [0, 65535], got {args.port}")
    if not args.speaker_sets and (args.features_model or args.allow_other_weights):
        raise InputError("--features-model and --allow-other-weights apply to --speaker-sets DIR: give it too")
    if args.speaker_sets:
        speaker_set_files(args.speaker_sets)  # a missing or empty folder is refused before any model loads
    torch.set_num_threads(engine_threads(args.threads, torch.get_num_threads()))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    codec = load_model(args)
    if not codec.causal:
        raise InputError(f"serve needs a causal model (e.g. {DEFAULT_MODEL}); {codec.model_id} is not causal")
    speaker_sets = {}
    if args.speaker_sets:
        # The rule of `focalcodec vc --speaker-set`: every set was built by the features model.
        features = features_model(args, codec)
        speaker_sets = load_speaker_sets(args.speaker_sets, codec, features, not args.allow_other_weights)
        del features  # only needed for the check (unless it is the codec itself)
    if not _is_loopback(args.host):
        print(
            f"warning: listening on {args.host}: anyone who can reach port {args.port} can use this server "
            "(there is no authentication)",
            file=sys.stderr,
        )

    def started(port: int) -> None:
        host = f"[{args.host}]" if ":" in args.host else args.host
        voices = f", voices: {', '.join(sorted(speaker_sets))}" if speaker_sets else ""
        print(
            f"serving {codec.model_id} on http://{host}:{port} (page /, GET /health, WebSocket /v1/stream; "
            f"{args.max_streams} streams at most{voices}); Ctrl-C stops",
            flush=True,
        )

    run_server(
        codec,
        host=args.host,
        port=args.port,
        max_streams=args.max_streams,
        precision=args.precision,
        decode_precision=args.decode_precision,
        speaker_sets=speaker_sets,
        allowed_origins=args.allowed_origins,
        on_start=started,
    )
    return 0
