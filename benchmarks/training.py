"""Training smoke: a few optimiser steps of stage Q (quantizer) and stage D (decoder) of a
full-size architecture with random weights (no official weights offline; speed does not
depend on them) on real speech, with throughput and peak memory. The shipped recipes
(``stage_q_50hz``, ``stage_d_vocos``: their losses, discriminators and optimiser) with a random
encoder instead of WavLM's weights and this script's data, batch and step settings.

    python benchmarks/training.py --device cuda --steps 50                   # focalcodec_50hz
    python benchmarks/training.py --device cpu --steps 3 --model ../shared/fixtures/tiny_50hz --batch-size 2

Each (stage, precision) runs :class:`focalcodec.train.trainer.Trainer` end to end (data
loading in DataLoader workers, length buckets, the stage's losses, AdamW, the final
checkpoint) for ``--steps`` steps on utterances of ``--data`` (default
../shared/speech/eval). Seconds per step come from the trainer's own log (every
``--log-every`` steps; the first window, which holds the warm-up, is left out when there are
more); throughput is seconds of training audio per second: stage Q trains on segments of up
to ``--segment-seconds``, stage D on crops of ``crop_frames`` (0.44 s at 16 kHz). Peak memory:
``torch.cuda.max_memory_allocated`` on a GPU, the process's max RSS on the CPU. Prints a table
and writes JSON (rewritten after every row).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))
RECIPES = {"quantizer": "stage_q_50hz", "decoder": "stage_d_vocos"}  # shipped recipes (their losses, optimiser)


def run_stage(args: argparse.Namespace, stage: str, precision: str, manifest: Path, work: Path) -> dict:
    from focalcodec.train.config import load_train_config
    from focalcodec.train.trainer import Trainer

    recipe = RECIPES[stage]
    overrides = [
        f"model={args.model}",
        "init.encoder=random",  # random weights, asked for (no checkpoints offline; speed does not depend on them)
        f"data.train={manifest}",
        "data.valid=null",
        f"data.batch_size={args.batch_size}",
        f"data.num_workers={args.workers}",
        "data.num_buckets=1",
        f"data.segment_seconds={args.segment_seconds}",
        f"train.device={args.device}",
        f"train.precision={precision}",
        f"train.max_steps={args.steps}",
        f"train.log_every={args.log_every}",
        "train.ckpt_every=0",
        "train.valid_every=1000000000",  # no validation data: no epoch-end validation or checkpoint either
        "train.progress=false",
        "train.tensorboard=false",
        "train.resume=none",
        f"output_dir={work / f'{stage}_{precision}'}",
    ]
    if args.threads:
        overrides.append(f"train.num_threads={args.threads}")
    # options of another stage's sections (e.g. discriminator.* for stage Q) are left out:
    # a stage refuses options it does not use
    overrides += [kv for kv in args.set if not (stage != "decoder" and kv.startswith("discriminator."))]
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    trainer = Trainer(load_train_config(recipe, overrides))
    build_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    try:
        trainer.fit()
    finally:
        trainer.close()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t1
    logs = [json.loads(line) for line in (Path(trainer.output_dir) / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in logs if "sec_per_step" in r]
    windows = [r["sec_per_step"] for r in logs]
    steady = windows[1:] or windows
    sec_per_step = statistics.median(steady) if steady else float("nan")
    loss_key = "loss" if stage == "quantizer" else "loss_generator"
    losses = [r[loss_key] for r in logs if loss_key in r]
    sr = trainer.stage.sample_rate if hasattr(trainer.stage, "sample_rate") else 16000
    crop = trainer.cfg["data"]["crop_frames"]
    if stage == "decoder":
        audio_per_item = (crop * trainer.stage.hop / sr) if crop else float("nan")
    else:
        audio_per_item = float(args.segment_seconds)
    audio_per_step = audio_per_item * args.batch_size
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trainable = sum(p.numel() for net in trainer.stage.nets.values() for p in net.parameters() if p.requires_grad)
    return {
        "stage": stage,
        "model": trainer.stage.codec_config.name,
        "weights": "random",
        "precision": precision,
        "device": args.device,
        "card": torch.cuda.get_device_name(torch.device(args.device)) if cuda else None,
        "steps": trainer.step,
        "batch_size": args.batch_size,
        "trainable_params_m": round(trainable / 1e6, 2),
        "audio_s_per_step": audio_per_step,
        "sec_per_step": sec_per_step,
        "audio_s_per_s": audio_per_step / sec_per_step if sec_per_step > 0 else float("nan"),
        "wall_s": wall,
        "build_s": build_s,
        "peak_mb": peak_mb,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "finite": bool(losses) and all(math.isfinite(v) for v in losses),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="focalcodec_50hz", help="architecture (random weights): preset or config")
    p.add_argument("--stages", nargs="+", default=["quantizer", "decoder"], choices=["quantizer", "decoder"])
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--segment-seconds", type=float, default=4.0, help="stage Q segments (at most)")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data", default=str(SHARED / "speech" / "eval"), help="folder of speech")
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="more recipe overrides (discriminator.* apply to stage D only)",
    )
    p.add_argument("--json", default="benchmarks/results/training.json")
    args = p.parse_args()
    args.log_every = max(1, min(args.log_every, args.steps // 2 or 1))

    from focalcodec.train.data import build_manifest, write_manifest

    rows = []
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"{'stage':10} {'prec':5} {'steps':>5} {'s/step':>8} {'audio s/s':>10} {'peak MB':>9} {'loss first->last':>20}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        entries = build_manifest(args.data, min_duration=1.0, max_duration=30.0)
        manifest = write_manifest(entries, work / "train.jsonl")
        for stage in args.stages:
            for precision in args.precisions:
                try:
                    row = run_stage(args, stage, precision, manifest, work)
                except Exception as exc:  # one failed row (e.g. out of memory) does not end the table
                    row = {"stage": stage, "precision": precision, "device": args.device, "error": repr(exc)[:500]}
                    print(f"{stage:10} {precision:5} failed: {row['error']}", flush=True)
                else:
                    print(
                        f"{stage:10} {precision:5} {row['steps']:5d} {row['sec_per_step']:8.3f} "
                        f"{row['audio_s_per_s']:10.1f} {row['peak_mb']:9.0f} "
                        f"{row['first_loss'] or float('nan'):9.4g} -> {row['last_loss'] or float('nan'):<9.4g}",
                        flush=True,
                    )
                rows.append(row)
                out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{len(entries)} utterances of {args.data}; written {out}")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
