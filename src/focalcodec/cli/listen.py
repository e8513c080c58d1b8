"""``focalcodec listen``: a MUSHRA listening test (ITU-R BS.1534-3) from an evaluation run.

focalcodec evaluate --codec focalcodec codec2-3200 opus-6 --data DATA --save-audio -o runs/r1
focalcodec listen build runs/r1 -o mushra/            # stimuli, anchors, loudness matching
focalcodec listen serve mushra/                       # http://127.0.0.1:8000/ for the raters
focalcodec listen export mushra/ -o ratings.csv       # every rating as given
focalcodec listen analyze mushra/ -o mushra/results   # post-screening, means, CIs, plots
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ..errors import InputError
from .common import HelpFormatter, add_force_option, add_output_option, add_quiet_option

DESCRIPTION = (
    "MUSHRA listening test (ITU-R BS.1534-3) from a 'focalcodec evaluate --save-audio' run: build the stimuli "
    "(hidden reference, 3.5 kHz low-pass anchor, optional 7 kHz anchor, the codecs; delay-compensated and "
    "loudness-matched), serve them as a local web page that stores every rating in SQLite, export the ratings "
    "as CSV, and analyse them (post-screening, mean and 95 %% CI per system, score-vs-bitrate and distribution plots)."
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    fmt = HelpFormatter  # the commands' one formatter: each default shown once
    p = sub.add_parser("listen", help="MUSHRA listening test: build, serve, export, analyze", description=DESCRIPTION)
    steps = p.add_subparsers(dest="step", metavar="STEP", required=True)

    b = steps.add_parser(
        "build", formatter_class=fmt, help="make a test folder from an evaluation run",
        description="Make a MUSHRA test folder (test.json + opaque WAV stimuli) from the output folder of "
        "'focalcodec evaluate --save-audio'.",
    )  # fmt: skip
    b.add_argument("run", help="output folder of a focalcodec evaluate run made with --save-audio")
    add_output_option(b, "test folder to create")
    add_force_option(b, "an existing test folder")
    b.add_argument("--systems", nargs="+", metavar="CODEC", help="codecs of the run to test (default: all)")
    b.add_argument("--items", nargs="+", metavar="ID", help="utterance ids to use (default: drawn at random)")
    b.add_argument("--num-items", type=int, default=10, help="items drawn when --items is not given")
    b.add_argument("--max-duration", type=float, default=12.0, help="longest item drawn, in seconds")
    b.add_argument("--anchor-7k", action="store_true", help="add the 7 kHz low-pass mid anchor")
    b.add_argument("--loudness", type=float, default=-26.0, help="loudness of every stimulus, LUFS (ITU-R BS.1770)")
    b.add_argument("--seed", type=int, default=0, help="seed of the item draw")
    b.add_argument("--title", default="Speech codec listening test (MUSHRA)", help="title shown to the raters")
    add_quiet_option(b, "no progress lines")
    b.set_defaults(func=run_build)

    s = steps.add_parser(
        "serve", formatter_class=fmt, help="serve a test to raters (local web page)",
        description="Serve the test page; ratings are stored in SQLite as they are given. Binds 127.0.0.1 by "
        "default: give --host 0.0.0.0 only on a network you trust.",
    )  # fmt: skip
    s.add_argument("test", help="test folder made by 'focalcodec listen build'")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    s.add_argument("--db", default=None, help="ratings database (default: TEST/ratings.sqlite)")
    s.set_defaults(func=run_serve)

    e = steps.add_parser(
        "export", formatter_class=fmt, help="write every rating as CSV",
        description="Write every rating as given (one row per slider release) as CSV.",
    )  # fmt: skip
    e.add_argument("test", help="test folder")
    add_output_option(e, "CSV file to write ('-' = standard output)")
    add_force_option(e, "an existing CSV file")
    e.add_argument("--db", default=None, help="ratings database (default: TEST/ratings.sqlite)")
    e.set_defaults(func=run_export)

    a = steps.add_parser(
        "analyze", formatter_class=fmt, help="post-screen and summarise the ratings, plot them",
        description="Post-screening per ITU-R BS.1534-3 (raters scoring the hidden reference below 90 in more than "
        "15 %% of their trials are excluded), mean and 95 %% t interval per system, and the paper's Fig. 2 plots: "
        "results.json, results.md, mushra_vs_bitrate.png, mushra_distributions.png.",
    )  # fmt: skip
    a.add_argument("test", help="test folder")
    add_output_option(a, "folder for the results")
    add_force_option(a, "existing results")
    a.add_argument("--db", default=None, help="ratings database (default: TEST/ratings.sqlite)")
    add_quiet_option(a, "do not print the results table")
    a.set_defaults(func=run_analyze)
    return p


def run_build(args: argparse.Namespace) -> int:
    from ..eval.listening import build_test

    if args.num_items < 1 or args.max_duration <= 0:
        raise InputError("--num-items must be at least 1 and --max-duration positive")
    out = build_test(
        args.run,
        args.output,
        systems=args.systems,
        items=args.items,
        num_items=args.num_items,
        max_duration=args.max_duration,
        anchor_7k=args.anchor_7k,
        loudness=args.loudness,
        seed=args.seed,
        title=args.title,
        force=args.force,
        progress=not args.quiet,
    )
    if not args.quiet:
        print(f"test written to {out}; serve it with: focalcodec listen serve {out}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import time

    from ..eval.listen_server import ListeningServer
    from ..eval.listening import DB_FILE, RatingStore, load_test

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be 0..65535, got {args.port}")
    test = load_test(args.test)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warnings.warn(f"serving on {args.host}: anyone who can reach this address can rate", stacklevel=2)
    store = RatingStore(test, args.db or Path(args.test) / DB_FILE)
    try:
        with ListeningServer(args.test, test, store, args.host, args.port) as server:
            print(f"serving '{test['title']}' ({len(test['trials'])} trials) at {server.url}", flush=True)
            print(f"ratings go to {store.path}; stop with Ctrl-C", flush=True)
            while True:
                time.sleep(3600)
    finally:
        store.close()


def run_export(args: argparse.Namespace) -> int:
    from ..eval.listening import export_csv

    n = export_csv(args.test, args.output, args.db, args.force)
    if args.output != "-":
        print(f"{n} ratings written to {args.output}")
    return 0


def run_analyze(args: argparse.Namespace) -> int:
    from ..eval.listening import markdown_results, write_analysis

    result = write_analysis(args.test, args.output, args.db, args.force)
    if not args.quiet:
        sys.stdout.write(markdown_results(result))
        print(f"results written to {args.output}")
    return 0
