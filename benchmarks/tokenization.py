"""Corpus tokenization throughput: hours of audio tokenized per hour of wall clock.

Runs :func:`focalcodec.corpus.tokenize_corpus` end to end (read + resample in DataLoader
workers, length-bucketed batches, Parquet shards, index) on real speech from
``../shared/speech/train`` (or any folder / manifest, ``--data``) with the full-size 50 Hz
architecture (random weights: speed does not depend on them), for a few batching / worker
settings, in float32 or under ``--autocast`` float16 / bfloat16. When ``--seconds`` asks for more
audio than the data holds, its utterances are listed again under other ids (``repeat1/...``),
so a small set measures long runs. Notes the machine load (``uptime``) before and after each
run, prints a table and writes JSON (rewritten after every setting).

    python benchmarks/tokenization.py                              # ~2 min of audio, CPU
    python benchmarks/tokenization.py --seconds 600 --device cuda  # on a GPU
    python benchmarks/tokenization.py --device cuda --seconds 3600 --data ../shared/speech/eval/manifest.tsv \
        --settings "one file at a time" "buckets of 600 s, 8 workers" --autocast none bfloat16
"""

from __future__ import annotations

import os
import sys

# This file shares its name with the standard library's ``tokenize``; run as a script, its
# folder comes first on sys.path and would shadow it. Take the folder off before any import.
if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))

# name -> (max_batch_size, batch_seconds, DataLoader workers)
SETTINGS = {
    "one file at a time": (1, 1e9, 1),
    "buckets of 60 s, 1 worker": (32, 60.0, 1),
    "buckets of 160 s, 1 worker": (32, 160.0, 1),
    "buckets of 160 s, no worker": (32, 160.0, 0),
    "buckets of 600 s, 8 workers": (128, 600.0, 8),
}


def load_average() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def pick_items(data: Path, seconds: float):
    """Utterances in a fixed pseudo-random order (a mix of short and long ones) until ``seconds``;
    listed again under ``repeat{k}/`` ids when the data holds less."""
    import dataclasses
    import random

    import soundfile

    from focalcodec.corpus import list_corpus

    every = [
        it if it.duration else dataclasses.replace(it, duration=soundfile.info(it.file).duration)
        for it in list_corpus(data)
    ]
    order = random.Random(0).sample(every, len(every))
    items, total, k = [], 0.0, 0
    while total < seconds:
        for item in order:
            if total >= seconds:
                break
            if k:
                item = dataclasses.replace(item, id=f"repeat{k}/{item.id}", path=f"repeat{k}/{item.path}")
            items.append(item)
            total += item.duration
        k += 1
    return items, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="focalcodec_50hz", help="architecture (random weights)")
    p.add_argument(
        "--data", "--manifest", default=str(SHARED / "speech" / "train" / "manifest.tsv"), help="folder or manifest"
    )
    p.add_argument("--seconds", type=float, default=120.0, help="audio per setting (default: 120)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS)[:4], choices=list(SETTINGS))
    p.add_argument(
        "--autocast", nargs="+", default=["none"], choices=["none", "float16", "bfloat16"], help="per setting"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default="benchmarks/results/tokenize.json")
    args = p.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from focalcodec import FocalCodec
    from focalcodec.corpus import tokenize_corpus

    torch.manual_seed(0)
    model = FocalCodec.from_config(args.config).to(args.device)
    items, audio_s = pick_items(Path(args.data), args.seconds)
    model.encode(torch.zeros(16000, device=args.device))  # warm-up
    machine = (
        torch.cuda.get_device_name(0)
        if args.device.startswith("cuda")
        else (
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads"
        )
    )
    rows = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, autocast in ((n, a) for n in args.settings for a in args.autocast):
        batch, batch_s, workers = SETTINGS[name]
        load_before = load_average()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            summary = tokenize_corpus(
                items,
                Path(tmp) / "tokens",
                model,
                device=args.device,
                shard_size=50,
                max_batch_size=batch,
                batch_seconds=batch_s,
                num_workers=workers,
                progress=False,
                autocast=None if autocast == "none" else autocast,
            )
            wall = time.perf_counter() - t0
        row = {
            "setting": name,
            "config": args.config,
            "model": model.model_id,
            "weights": "random",
            "autocast": None if autocast == "none" else autocast,
            "device": args.device,
            "machine": machine,
            "max_batch_size": batch,
            "batch_seconds": batch_s if batch_s < 1e8 else None,
            "workers": workers,
            "files": len(items),
            "audio_s": round(summary.duration_s, 2),
            "wall_s": round(wall, 2),
            "hours_per_hour": round(summary.duration_s / wall, 3),
            "errors": summary.num_errors,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None,
            "load_before": load_before,
            "load_after": load_average(),
        }
        rows.append(row)
        out.write_text(json.dumps(rows, indent=2) + "\n")
        print(json.dumps(row), flush=True)

    print()
    print(f"{args.config} on {machine}, {len(items)} files, {audio_s / 60:.1f} min of real speech per setting")
    print(f"{'setting':32s} {'autocast':9s} {'wall s':>8s} {'h audio / h':>12s}  load average before -> after")
    for r in rows:
        before = r["load_before"].split("load average:")[-1].strip()
        after = r["load_after"].split("load average:")[-1].strip()
        print(
            f"{r['setting']:32s} {r['autocast'] or '-':9s} {r['wall_s']:8.1f} {r['hours_per_hour']:12.3f}  "
            f"{before} -> {after}"
        )
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
