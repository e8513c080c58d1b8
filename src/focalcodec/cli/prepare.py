"""``focalcodec prepare DATA_DIR... -o manifest.jsonl``: a training manifest from folders of audio."""

from __future__ import annotations

import argparse

from .common import add_command, add_force_option, add_output_option, positive_int


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "prepare",
        help="build a training manifest (JSON lines) from folders of audio (LibriTTS layout or any tree)",
        description="Scan folders for audio files and write one JSON line per utterance: path, duration, "
        "sample_rate and, where found, speaker and text (LibriTTS .normalized.txt, sibling .txt/.lab, manifest.tsv).",
    )
    p.add_argument("data_dirs", nargs="+", metavar="DATA_DIR", help="folders to scan (recursively)")
    add_output_option(p, "manifest file to write (.jsonl)")
    add_force_option(p, "an existing manifest")
    p.add_argument("--min-duration", type=float, default=0.0, help="drop shorter utterances (seconds; recipe: 1.0)")
    p.add_argument(
        "--max-duration", type=float, default=float("inf"), help="drop longer utterances (seconds; recipe: 60)"
    )
    p.add_argument("--relative", action="store_true", help="store paths relative to the manifest's folder")
    p.add_argument("--workers", type=positive_int, default=8, help="threads probing files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from ..errors import InputError
    from ..limits import check_seconds
    from ..outputs import check_targets
    from ..train.data import build_manifest, write_manifest

    check_seconds(args.min_duration, "--min-duration", 0.0, strict=False)
    if not args.max_duration > args.min_duration:
        raise InputError(f"--max-duration ({args.max_duration}) must exceed --min-duration ({args.min_duration})")
    check_targets([args.output], args.data_dirs, args.force)
    entries = build_manifest(args.data_dirs, args.min_duration, args.max_duration, num_workers=args.workers)
    out = Path(args.output)
    if args.relative:
        base = out.resolve().parent
        for e in entries:
            e["path"] = os.path.relpath(e["path"], base)
    write_manifest(entries, out)
    hours = sum(e["duration"] for e in entries) / 3600
    speakers = len({e.get("speaker") for e in entries if e.get("speaker")})
    print(f"{out}: {len(entries)} utterances, {hours:.2f} h, {speakers} speakers")
    return 0
