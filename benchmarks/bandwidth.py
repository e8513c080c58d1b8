"""Memory-traffic floor of one streaming chunk: how fast can this machine possibly stream?

    python benchmarks/bandwidth.py                     # full-size 4k causal model, 1 and 2 threads
    python benchmarks/bandwidth.py --threads 2 --mb 512

At batch 1 a streaming step (encode + decode of one 80 ms chunk, 4 frames) multiplies every
weight matrix of the model by only 4 rows, so every weight is read from memory once per chunk
and the step cannot be faster than ``bytes of weights / memory bandwidth``. This script
measures, for each thread count:

- ``stream``: plain memory bandwidth (sum of a large float32 tensor, cold cache);
- the weight throughput of the kernels the streaming engine uses for its linear layers, with 4
  rows and weights cycled through a pool larger than the last-level cache (what the model
  sees): ``float32`` (``W @ x^T``), ``float16`` and ``int8`` (fbgemm dynamic linears);

and counts the bytes each variant of the engine's part streams holds (the
linear layers at their stored precision, everything else float32). It prints, per variant, the
megabytes read per chunk and two lower bounds on the chunk time: at the plain bandwidth, and at
the kernels' measured throughput (other weights at the plain bandwidth). The non-matrix work
(the 512-tap depthwise convolutions, activations, attention, ISTFT) comes on top.

Prints a table and writes JSON (``--out``, default benchmarks/results/bandwidth.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from focalcodec import FocalCodec  # noqa: E402
from focalcodec.streaming.engine import Side  # noqa: E402
from focalcodec.streaming.layers import StreamingConv  # noqa: E402

VARIANTS = ("float32", "float16", "float16+int8", "int8")


def best_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def plain_bandwidth(mb: int, repeats: int) -> float:
    """GB/s of a float32 sum over ``mb`` megabytes (far larger than any cache)."""
    x = torch.ones(mb * 2**20 // 4)
    return x.numel() * 4 / best_seconds(lambda: x.sum(), repeats) / 1e9


def kernel_throughput(kind: str, pool_mb: int, repeats: int, rows: int = 4) -> float:
    """GB/s of weights consumed by ``rows``-row products (1024 -> 4096, the FFN shape) whose
    weights cycle through a ``pool_mb`` pool, so each call reads its weight from memory."""
    out_f, in_f = 4096, 1024
    per_weight = out_f * in_f * {"float32": 4, "float16": 2, "int8": 1}[kind]
    count = max(2, pool_mb * 2**20 // per_weight)
    x = torch.randn(1, rows, in_f)
    if kind == "float32":
        weights = [torch.randn(out_f, in_f) for _ in range(count)]
        xt = x[0].contiguous()

        def run() -> None:
            for w in weights:
                torch.mm(w, xt.t())

    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            dtype = torch.float16 if kind == "float16" else torch.qint8
            layers = [
                quantize_dynamic(nn.Sequential(nn.Linear(in_f, out_f)), {nn.Linear}, dtype=dtype) for _ in range(count)
            ]

        def run() -> None:
            for layer in layers:
                layer(x)

    return count * per_weight / best_seconds(run, repeats) / 1e9


def weight_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of weights a part stream reads per call: ``{"float32": ..., "float16": ...,
    "int8": ...}`` (quantised linear layers by their stored type, every other parameter and
    buffer as is, each tensor once; a conv run as per-group linear layers counts only those)."""
    run_by_kernel = {id(m.conv) for m in model.modules() if isinstance(m, StreamingConv) and m.kernel is not None}
    totals = {"float32": 0, "float16": 0, "int8": 0}
    seen = set()
    for module in model.modules():
        if id(module) in run_by_kernel:
            continue  # a conv run by a kernel module (linear layers, taps): its forward reads only those
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            kind = "int8" if weight.dtype == torch.qint8 else "float16"
            totals[kind] += weight.numel() * (1 if kind == "int8" else 2)
            if bias is not None:
                totals["float32"] += bias.numel() * 4
            continue
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            if tensor.is_floating_point() and (tensor.data_ptr(), tensor.numel()) not in seen:
                seen.add((tensor.data_ptr(), tensor.numel()))
                totals["float32"] += tensor.numel() * tensor.element_size()
    return totals


def variant_bytes(codec: FocalCodec, variant: str) -> dict[str, int]:
    """Bytes per storage type read per chunk by ``variant`` (encode side + decode side)."""
    enc, _, dec = variant.partition("+")
    totals = {"float32": 0, "float16": 0, "int8": 0}
    for precision, side in ((enc, "encode"), (dec or enc, "decode")):
        for part in Side(codec, side, precision=precision).parts:
            for kind, n in weight_bytes(part.model).items():
                totals[kind] += n
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="focalcodec_50hz_4k_causal", help="preset (random weights: only sizes matter)"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--mb", type=int, default=1024, help="size of the plain-bandwidth tensor")
    parser.add_argument("--pool-mb", type=int, default=256, help="weight pool per kernel (> last-level cache)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target-ms", type=float, default=40.0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "bandwidth.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    codec = FocalCodec.from_config(args.model).eval()
    sizes = {v: variant_bytes(codec, v) for v in VARIANTS}
    rows: list[dict] = []
    print(f"model {args.model}, 4-row products, {platform.machine()}, torch {torch.__version__}")
    print(f"{'thr':>3} {'stream GB/s':>11} {'fp32 GB/s':>9} {'fp16 GB/s':>9} {'int8 GB/s':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            rates = {
                "stream": plain_bandwidth(args.mb, args.repeats),
                **{k: kernel_throughput(k, args.pool_mb, args.repeats) for k in ("float32", "float16", "int8")},
            }
        print(
            f"{threads:3d} {rates['stream']:11.1f} {rates['float32']:9.1f} {rates['float16']:9.1f} {rates['int8']:9.1f}"
        )
        for variant in VARIANTS:
            b = sizes[variant]
            total = sum(b.values())
            # Linear weights at their kernel's rate; the float32 share is linears and convs at
            # the float32 kernel's rate at best (convs run slower than that in practice).
            at_kernels = sum(n / (rates[kind] * 1e9) for kind, n in b.items())
            rows.append(
                {
                    "threads": threads,
                    "variant": variant,
                    "mb_per_chunk": total / 2**20,
                    "bytes": b,
                    "floor_ms_bandwidth": 1e3 * total / (rates["stream"] * 1e9),
                    "floor_ms_kernels": 1e3 * at_kernels,
                    "rates_gb_s": rates,
                }
            )
    print()
    print(
        f"{'variant':13s} {'thr':>3} {'MB/chunk':>8} {'floor@stream ms':>15} "
        f"{'floor@kernels ms':>16}  vs {args.target_ms:g} ms"
    )
    for r in rows:
        verdict = "below" if r["floor_ms_kernels"] <= args.target_ms else "ABOVE"
        print(
            f"{r['variant']:13s} {r['threads']:3d} {r['mb_per_chunk']:8.0f} {r['floor_ms_bandwidth']:15.1f} "
            f"{r['floor_ms_kernels']:16.1f}  {verdict}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": args.model,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "torch": torch.__version__,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
