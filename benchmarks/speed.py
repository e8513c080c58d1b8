"""Offline speed: encode and decode 10 s of audio for each official config.

Random weights (speed does not depend on them). Each (config, batch, device, dtype) runs in a
fresh subprocess so that its peak memory (CPU: max RSS; GPU: torch.cuda.max_memory_allocated)
is its own; the memory held after each batch is recorded too ("growth MB": last minus first,
which should stay near 0). Prints a table and writes JSON (rewritten after every row, so a run
cut short keeps the rows it finished).

``--dtypes bfloat16 float16`` casts the weights to that dtype; with ``--autocast`` they stay
float32 and the model runs under ``torch.autocast`` (the codec keeps its float32 islands:
the latents whose signs are the tokens, the waveform heads), which is how reduced precision
is meant to be used.

    python benchmarks/speed.py                      # all configs, batch 1 and 16, CPU (+GPU)
    python benchmarks/speed.py --configs focalcodec_50hz --batch-sizes 1 --devices cpu
    python benchmarks/speed.py --configs focalcodec_50hz --batch-sizes 1 32 128 --devices cuda \
        --dtypes float32 bfloat16 float16 --autocast --json speed_gpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from focalcodec.config import PRESETS


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def measure(
    config: str, batch: int, device: str, seconds: float, repeats: int, dtype: str, autocast: bool = False
) -> dict:
    import contextlib

    import torch

    from focalcodec import FocalCodec

    if device.startswith("cuda"):  # peak memory of this row alone (rows may share a process)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    codec = FocalCodec.from_config(config).to(device)
    reduced = dtype != "float32"
    if reduced and not autocast:
        codec = codec.to(getattr(torch, dtype))
    n = int(seconds * codec.sample_rate_input)
    wav = (0.1 * torch.randn(batch, n)).to(device)

    def precision():
        if reduced and autocast:
            return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))
        return contextlib.nullcontext()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def memory_mb() -> float:
        """Memory held now: GPU tensors, or the process's resident set on CPU (Linux)."""
        if device.startswith("cuda"):
            return torch.cuda.memory_allocated() / 2**20
        try:
            return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20
        except OSError:
            return float("nan")

    enc, dec, held = [], [], []
    for i in range(repeats + 1):  # first run is warm-up
        sync()
        t0 = time.perf_counter()
        with precision():
            toks, lens = codec.encode(wav)
        sync()
        t1 = time.perf_counter()
        with precision():
            codec.decode(toks, lens)
        sync()
        t2 = time.perf_counter()
        if i:
            enc.append(t1 - t0)
            dec.append(t2 - t1)
        held.append(memory_mb())
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    e, d = statistics.median(enc), statistics.median(dec)
    return {
        "config": config,
        "model": codec.model_id,
        "weights": "random",
        "batch": batch,
        "device": device,
        "machine": machine(device),
        "torch": torch.__version__,
        "dtype": dtype,
        "autocast": reduced and autocast,
        "seconds_audio": seconds,
        "encode_s": e,
        "decode_s": d,
        "total_s": e + d,
        "rtf_x": batch * seconds / (e + d),
        "peak_mb": peak_mb,
        # memory held after each batch (warm-up first): it must not grow with the batch count
        "held_mb_per_batch": held,
        "growth_mb": held[-1] - held[0] if len(held) > 1 else 0.0,
    }


def subprocess_row(config: str, batch: int, device: str, args: argparse.Namespace, dtype: str) -> dict:
    """One row in a fresh process (its own peak memory); a failure (e.g. out of memory) is a row."""
    cmd = [
        sys.executable,
        __file__,
        "--single",
        "--configs",
        config,
        "--batch-sizes",
        str(batch),
        "--devices",
        device,
        "--seconds",
        str(args.seconds),
        "--repeats",
        str(args.repeats),
        "--dtypes",
        dtype,
    ]
    if args.autocast:
        cmd.append("--autocast")
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode:
        error = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        return {"config": config, "batch": batch, "device": device, "dtype": dtype, "error": error}
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "own_process": True}


def in_process_row(config: str, batch: int, device: str, args: argparse.Namespace, dtype: str) -> dict:
    import gc

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        row = measure(config, batch, device, args.seconds, args.repeats, dtype, args.autocast)
        return {**row, "own_process": False}
    except Exception as exc:  # e.g. out of memory at a large batch: the next rows still run
        return {"config": config, "batch": batch, "device": device, "dtype": dtype, "error": repr(exc)[:300]}
    finally:
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(PRESETS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtypes", "--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--autocast", action="store_true", help="reduced dtypes run under torch.autocast on float32 weights")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default="benchmarks/results/speed.json")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="every row in this process (saves a start per row; GPU peaks are still per row, CPU peaks are not)",
    )
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.single:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        row = measure(
            args.configs[0],
            args.batch_sizes[0],
            args.devices[0],
            args.seconds,
            args.repeats,
            args.dtypes[0],
            args.autocast,
        )
        print(json.dumps(row))
        return

    if args.devices is None:
        import torch

        args.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    header = (
        f"{'config':28} {'dev':5} {'dtype':9} {'B':>3} {'encode s':>9} {'decode s':>9} {'total s':>8} "
        f"{'x realtime':>10} {'peak MB':>8} {'growth MB':>9}"
    )
    print(header)
    print("-" * len(header))
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    for device, config, batch, dtype in (
        (d, c, b, t) for d in args.devices for c in args.configs for b in args.batch_sizes for t in args.dtypes
    ):
        if args.in_process:
            r = in_process_row(config, batch, device, args, dtype)
        else:
            r = subprocess_row(config, batch, device, args, dtype)
        rows.append(r)
        if "error" in r:
            print(f"{config:28} {device:5} {dtype:9} {batch:3d} failed: {r['error']}", flush=True)
        else:
            print(
                f"{config:28} {device:5} {dtype:9} {batch:3d} {r['encode_s']:9.3f} {r['decode_s']:9.3f} "
                f"{r['total_s']:8.3f} {r['rtf_x']:10.1f} {r['peak_mb']:8.0f} {r['growth_mb']:9.1f}",
                flush=True,
            )
        out.write_text(json.dumps(rows, indent=2) + "\n")
    ok = [r for r in rows if "error" not in r]
    print(f"machine: {ok[0]['machine'] if ok else '-'}; written {args.json}")
    if len(ok) < len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
