"""``focalcodec tokenize``: a corpus (folder or manifest) -> Parquet shards of tokens.

Scale out with ``torchrun --nproc_per_node N -m focalcodec tokenize ...`` (plus torchrun's
``--nnodes/--node_rank/--rdzv_endpoint`` flags for several nodes). See :mod:`focalcodec.corpus`.
"""

from __future__ import annotations

import argparse
import os
import sys

from .common import (
    add_command,
    add_force_option,
    add_model_options,
    add_output_option,
    add_quiet_option,
    add_window_option,
    check_device,
    non_negative_int,
    positive_int,
    positive_seconds,
    windowing,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "tokenize",
        help="tokenize a corpus into Parquet shards (resumable; scale out with torchrun)",
        description=(
            "Tokenize every file of a folder or manifest into Parquet shards plus index.json and "
            "errors.tsv under -o. Restarting the same command resumes; under torchrun the "
            "shards are split across ranks and the output is the same as with one process. "
            "Files longer than one window are encoded window by window, exactly as `focalcodec encode` does."
        ),
    )
    p.add_argument(
        "--data",
        required=True,
        help="folder of audio files (any format/rate) or manifest "
        "(.tsv/.csv with a path column, .jsonl, or one path a line)",
    )
    add_output_option(p, "output folder (resumed when it holds this very run)", required=False)
    p.add_argument("--out", dest="output", help=argparse.SUPPRESS)  # old name
    add_model_options(p)
    p.add_argument(
        "--root",
        default=None,
        help="folder that relative manifest paths start from "
        "(default: the manifest's folder or the nearest one above it holding the first path)",
    )
    p.add_argument(
        "--shard-size", type=positive_int, default=1000, help="utterances per shard, also the unit of resuming"
    )
    p.add_argument(
        "--batch-seconds",
        type=positive_seconds,
        default=60.0,
        help="padded seconds of audio per batch (raise it on a GPU)",
    )
    p.add_argument("--max-batch-size", type=positive_int, default=32, help="utterances per batch at most")
    p.add_argument("--sort-group", type=positive_int, default=256, help="utterances sorted by length together")
    add_window_option(p)
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,
        help="DataLoader processes reading and resampling audio, per rank",
    )
    p.add_argument(
        "--max-duration",
        type=positive_seconds,
        default=None,
        help="files longer than this many seconds go to the errors list",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="redo the finished shards that skipped files (after restoring them), instead of keeping their errors",
    )
    add_force_option(p, "an output folder that holds a different run (other files, shard size, model or window)")
    p.add_argument("--overwrite", dest="force", action="store_true", help=argparse.SUPPRESS)  # old name
    add_quiet_option(p)
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
    from ..errors import InputError
    from ..outputs import check_writable

    if not args.output:
        raise InputError("give the output folder with -o/--output")
    check_writable(args.output, folder=True)
    check_device(args.device)
    summary = tokenize_corpus(
        args.data,
        args.output,
        args.model,
        root=args.root,
        device=args.device,
        shard_size=args.shard_size,
        window=args.sort_group,
        windowing=windowing(args),
        batch_seconds=args.batch_seconds,
        max_batch_size=args.max_batch_size,
        num_workers=args.workers,
        max_duration=args.max_duration,
        overwrite=args.force,
        progress=not args.quiet,
        autocast=args.autocast,
        retry_errors=args.retry_errors,
    )
    if summary.num_utterances == 0:  # every rank: the same exit code
        raise InputError(
            f"no file could be tokenized: all {summary.num_errors} failed, with the reasons in "
            f"{summary.out / 'errors.tsv'}"
        )
    if int(os.environ.get("RANK", "0")) == 0:
        totals = (
            f"{summary.num_utterances} utterances ({summary.duration_s / 3600:.3f} h, {summary.num_tokens} tokens) "
            f"in {summary.num_shards} shards under {summary.out}"
        )
        if summary.skipped_shards == summary.num_shards:
            print(f"nothing to do: this run was already complete: {totals}; {summary.num_errors} files skipped")
        else:
            rate = summary.encoded_duration_s / 3600 / max(summary.wall_s / 3600, 1e-9)
            print(
                f"{totals} (on {summary.world_size} process{'es' if summary.world_size > 1 else ''}); "
                f"{summary.skipped_shards} shards were already done; "
                f"{summary.num_errors} files skipped (see errors.tsv); {rate:.2f} h of audio per hour this run"
            )
        if summary.num_errors:
            print(
                f"warning: {summary.num_errors} files could not be tokenized, listed in {summary.out / 'errors.tsv'}",
                file=sys.stderr,
            )
    return 0
