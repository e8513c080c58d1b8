"""Live serving: N loopback clients stream real speech in real time through `focalcodec serve`.

    python benchmarks/serve.py                                  # full-size 4k causal model, random weights
    python benchmarks/serve.py --model ../shared/fixtures/tiny_causal_4k --clients 1 2 4 8 16
    python benchmarks/serve.py --precision float16 --decode-precision int8
    python benchmarks/serve.py --device cuda --clients 1 16 64 256   # on a GPU

The server runs in its own process (`python -m focalcodec serve --port 0`), so the clients
(one asyncio loop in this process) do not share its interpreter. For each N, N clients open
resynth streams, staggered over one 80 ms chunk, and each sends ``--seconds`` of real speech
from ``shared/speech/eval`` (a different utterance per client, concatenated) in 80 ms blocks
at real-time pace. A client's per-chunk latency is the time from the moment a chunk's last
sample was available to the arrival of that chunk's audio (the 80 ms of algorithmic latency
come on top). A stream is "served in real time" when its p99 latency is at most ``--rt-ms``
(default 200 ms): a server that falls behind accumulates a backlog, and its latency grows
without bound over the stream. The table gives, per N, the streams served in real time, the
median of the clients' p50 and the worst p99, and the server's own step time and batch size
(from ``/health``); the load average is recorded before and after each row: on a shared
machine, rerun when it is low.

Prints a table and writes JSON (``--out``, default benchmarks/results/serve.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path (see benchmarks/streaming.py).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEECH = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared")) / "speech" / "eval"


def speech_signals(count: int, seconds: float) -> list[np.ndarray]:
    """``count`` signals of ``seconds`` of real speech at 16 kHz, each from other utterances."""
    from focalcodec.audio import load_audio

    files = sorted(SPEECH.glob("*.flac"))
    if not files:
        raise SystemExit(f"no speech in {SPEECH}; set FOCALCODEC_SHARED")
    need = int(seconds * 16000)
    out, k = [], 0
    for _ in range(count):
        parts, n = [], 0
        while n < need:
            x = load_audio(files[k % len(files)], 16000).numpy()
            k += 1
            parts.append(x)
            n += x.size
        out.append(np.concatenate(parts)[:need])
    return out


def model_dir(name: str, cache: Path) -> str:
    """A local directory for ``--model``: as given, or a config's random weights saved once."""
    if Path(name).exists():
        return name
    from focalcodec import FocalCodec

    target = cache / name.split("/")[-1]
    if not (target / "config.json").exists():
        print(f"saving random weights of {name} to {target}", flush=True)
        FocalCodec.from_config(name).save_pretrained(target)
    return str(target)


def start_server(args: argparse.Namespace, model: str, max_streams: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "focalcodec", "serve", "--model", model, "--port", "0", "--quiet"]
    cmd += ["--max-streams", str(max_streams), "--precision", args.precision, "--device", args.device]
    if args.decode_precision:
        cmd += ["--decode-precision", args.decode_precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, line.split(" on ")[1].split(" ")[0]


async def one_round(url: str, signals: list[np.ndarray], block: int, rate: int) -> list:
    from focalcodec.serve.client import paced, run_stream

    async def client(i: int, x: np.ndarray):
        await asyncio.sleep(0.08 * i / len(signals))  # clients arrive at different phases of a chunk
        return await run_stream(url, paced(x, block, rate), "resynth")

    return await asyncio.gather(*(client(i, x) for i, x in enumerate(signals)))


def measure(url: str, signals: list[np.ndarray], rt_ms: float) -> dict:
    from focalcodec.serve.client import health

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    results = asyncio.run(one_round(url, signals, 1280, 16000))
    wall = time.perf_counter() - t0
    info = health(url)
    p50s = [float(np.percentile(r.latencies_ms, 50)) for r in results]
    p99s = [float(np.percentile(r.latencies_ms, 99)) for r in results]
    return {
        "clients": len(signals),
        "realtime_streams": int(sum(p <= rt_ms for p in p99s)),
        "latency_p50_ms": float(np.median(p50s)),
        "latency_p99_ms": float(max(p99s)),
        "client_p99_ms": p99s,
        "server_step_p50_ms": info["step_ms_p50"],
        "server_step_p99_ms": info["step_ms_p99"],
        "server_batch_mean": info["batch_mean"],
        "audio_seconds_per_client": signals[0].size / 16000,
        "wall_seconds": wall,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="focalcodec_50hz_4k_causal", help="config name (random weights) or directory")
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=10.0, help="audio each client streams")
    ap.add_argument("--precision", default="float32", choices=("float32", "float16", "int8"))
    ap.add_argument("--decode-precision", default=None, choices=("float32", "float16", "int8"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="server's torch threads (default: one per core less one)")
    ap.add_argument("--rt-ms", type=float, default=200.0, help="p99 latency bound of a real-time stream")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "focalcodec-bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    args = ap.parse_args()

    model = model_dir(args.model, Path(args.cache))
    signals = speech_signals(max(args.clients), args.seconds)
    proc, url = start_server(args, model, max(args.clients))
    rows = []
    try:
        for n in args.clients:
            row = measure(url, signals[:n], args.rt_ms)
            rows.append(row)
            print(
                f"{n:>4} clients: {row['realtime_streams']:>4} in real time, latency p50 {row['latency_p50_ms']:7.1f} "
                f"ms, worst p99 {row['latency_p99_ms']:8.1f} ms; server step p50 {row['server_step_p50_ms']:.1f} ms, "
                f"batch {row['server_batch_mean']:.2f}; load {row['load_before']:.2f} -> {row['load_after']:.2f}",
                flush=True,
            )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    capacity = max([r["clients"] for r in rows if r["realtime_streams"] == r["clients"]], default=0)
    print(f"\nstreams served in real time (p99 <= {args.rt_ms:g} ms): {capacity} of the counts tried")
    print("\n| clients | in real time | latency p50 ms | worst p99 ms | server step p50 / p99 ms | batch | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['realtime_streams']} | {r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | "
            f"{r['server_step_p50_ms']:.1f} / {r['server_step_p99_ms']:.1f} | {r['server_batch_mean']:.2f} | "
            f"{r['load_before']:.2f} -> {r['load_after']:.2f} |"
        )
    import torch

    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "device": args.device
            if not args.device.startswith("cuda")
            else torch.cuda.get_device_name(torch.device(args.device)),
        },
        "model": args.model,
        "precision": args.precision,
        "decode_precision": args.decode_precision or args.precision,
        "threads": args.threads,
        "rt_ms": args.rt_ms,
        "engine": "batched StreamEngine",
        "realtime_capacity": capacity,
        "rows": rows,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from focalcodec.outputs import write_text

    write_text(args.out, json.dumps(result, indent=2) + "\n", force=True)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
