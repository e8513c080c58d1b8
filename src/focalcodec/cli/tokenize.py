"""``focalcodec tokenize``: a corpus (folder or manifest) -> Parquet shards of tokens.

Scale out with ``torchrun --nproc_per_node N -m focalcodec tokenize ...`` (plus torchrun's
``--nnodes/--node_rank/--rdzv_endpoint`` flags for several nodes). See :mod:`focalcodec.corpus`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import add_model_options


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "tokenize",
        help="tokenize a corpus into Parquet shards (resumable; scale out with torchrun)",
        description=(
            "Tokenize every file of a folder or manifest into Parquet shards plus index.json and "
            "errors.tsv under --out. Restarting the same command resumes; under torchrun the "
            "shards are split across ranks and the output is the same as with one process."
        ),
    )
    p.add_argument(
        "--data",
        required=True,
        help="folder of audio files (any format/rate) or manifest "
        "(.tsv/.csv with a path column, .jsonl, or one path a line)",
    )
    p.add_argument("--out", required=True, help="output folder")
    add_model_options(p)
    p.add_argument(
        "--root",
        default=None,
        help="folder that relative manifest paths start from "
        "(default: the manifest's folder or the nearest one above it holding the first path)",
    )
    p.add_argument(
        "--shard-size", type=int, default=1000, help="utterances per shard, also the unit of resuming (default: 1000)"
    )
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=60.0,
        help="padded seconds of audio per batch (default: 60; raise it on a GPU)",
    )
    p.add_argument("--max-batch-size", type=int, default=32, help="utterances per batch at most (default: 32)")
    p.add_argument("--window", type=int, default=256, help="utterances sorted by length together (default: 256)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="DataLoader processes reading and resampling audio, per rank (default: 2)",
    )
    p.add_argument(
        "--max-duration", type=float, default=None, help="files longer than this many seconds go to the errors list"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an --out folder that holds a different run (other files, shard size or model)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--autocast",
        choices=("float16", "bfloat16"),
        default=None,
        help="encode under torch.autocast in this dtype (GPU speed; ~99.6%% of tokens equal float32's with float16)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..corpus import tokenize_corpus

    summary = tokenize_corpus(
        args.data,
        args.out,
        args.model,
        root=args.root,
        device=args.device,
        shard_size=args.shard_size,
        window=args.window,
        batch_seconds=args.batch_seconds,
        max_batch_size=args.max_batch_size,
        num_workers=args.workers,
        max_duration=args.max_duration,
        overwrite=args.overwrite,
        progress=not args.quiet,
        autocast=args.autocast,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        rate = summary.encoded_duration_s / 3600 / max(summary.wall_s / 3600, 1e-9)
        print(
            f"{summary.num_utterances} utterances ({summary.duration_s / 3600:.3f} h, {summary.num_tokens} tokens) "
            f"in {summary.num_shards} shards under {summary.out} "
            f"(on {summary.world_size} process{'es' if summary.world_size > 1 else ''}); "
            f"{summary.skipped_shards} shards were already done; "
            f"{summary.num_errors} files skipped (see errors.tsv); {rate:.2f} h of audio per hour this run"
        )
        if summary.num_errors:
            print(
                f"warning: {summary.num_errors} files could not be tokenized, listed in {summary.out / 'errors.tsv'}",
                file=sys.stderr,
            )
    return 0
