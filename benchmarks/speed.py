"""Offline speed: encode and decode 10 s of audio for each official config.

Random weights (speed does not depend on them). Each (config, batch, device) runs in a fresh
subprocess so that its peak memory (CPU: max RSS; GPU: torch.cuda.max_memory_allocated) is
its own; the memory held after each batch is recorded too ("growth MB": last minus first,
which should stay near 0). Prints a table and writes JSON.

    python benchmarks/speed.py                      # all configs, batch 1 and 16, CPU (+GPU)
    python benchmarks/speed.py --configs focalcodec_50hz --batch-sizes 1 --devices cpu
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


def measure(config: str, batch: int, device: str, seconds: float, repeats: int, dtype: str) -> dict:
    import torch

    from focalcodec import FocalCodec

    torch.manual_seed(0)
    codec = FocalCodec.from_config(config).to(device)
    if dtype != "float32":
        codec = codec.to(getattr(torch, dtype))
    n = int(seconds * codec.sample_rate_input)
    wav = (0.1 * torch.randn(batch, n)).to(device)

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
        toks, lens = codec.encode(wav)
        sync()
        t1 = time.perf_counter()
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
        "batch": batch,
        "device": device,
        "machine": machine(device),
        "dtype": dtype,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(PRESETS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    p.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", default="benchmarks/results/speed.json")
    p.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.single:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        print(
            json.dumps(
                measure(args.configs[0], args.batch_sizes[0], args.devices[0], args.seconds, args.repeats, args.dtype)
            )
        )
        return

    if args.devices is None:
        import torch

        args.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    header = (
        f"{'config':28} {'dev':5} {'B':>3} {'encode s':>9} {'decode s':>9} {'total s':>8} "
        f"{'x realtime':>10} {'peak MB':>8} {'growth MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for device in args.devices:
        for config in args.configs:
            for batch in args.batch_sizes:
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
                    "--dtype",
                    args.dtype,
                ]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows.append(r)
                print(
                    f"{config:28} {device:5} {batch:3d} {r['encode_s']:9.3f} {r['decode_s']:9.3f} "
                    f"{r['total_s']:8.3f} {r['rtf_x']:10.1f} {r['peak_mb']:8.0f} {r['growth_mb']:9.1f}",
                    flush=True,
                )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"machine: {rows[0]['machine'] if rows else '-'}; written {args.json}")


if __name__ == "__main__":
    main()
