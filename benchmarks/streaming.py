"""Streaming speed: per-chunk latency (encode + decode of one 80 ms chunk) and the number of
concurrent streams that keep real time, on CPU (and GPU when present).

    python benchmarks/streaming.py                      # full-size 4k causal model, random weights
    python benchmarks/streaming.py --threads 1 --variants float16+int8 --batches 1

Variants: ``float32``, ``float16``, ``int8`` (both streams) and ``float16+int8`` (float16
encoder side, int8 decoder side). For each device / variant / thread count / batch size it pushes ``--chunks`` chunks of
1280 samples (after ``--warmup``) through :class:`focalcodec.streaming.StreamCodec` and
times every push (tokens out and 24 kHz audio out). "Streams in real time" is
``floor(80 ms / p99) * batch``: how many independent streams one process can serve, in
batches of that size, while every chunk finishes within its 80 ms. "reference" rows run the
model as is (no streaming copy), the way the codec's own ``sig_to_toks``/``toks_to_sig``
loop does. The machine load (1-minute load average) is recorded before and after each row;
on a shared machine, rerun when it is low.

Prints a table and writes JSON (``--out``, default benchmarks/results/streaming.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a sibling script named like a standard-library module (there
# was a benchmarks/tokenize.py) would otherwise shadow it when torch imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from focalcodec import FocalCodec  # noqa: E402
from focalcodec.streaming import StreamCodec  # noqa: E402


def split_variant(variant: str) -> tuple:
    """``"float16+int8"`` -> ("float16", "int8"): encoder-side and decoder-side precisions."""
    if variant == "reference":
        return "float32", "float32"
    enc, _, dec = variant.partition("+")
    return enc, dec or enc


def measure(codec: FocalCodec, device: str, variant: str, batch: int, chunks: int, warmup: int) -> dict:
    optimize = variant != "reference"
    precision, decoder_precision = split_variant(variant)
    sc = StreamCodec(codec, optimize=optimize, precision=precision, decoder_precision=decoder_precision)
    g = torch.Generator().manual_seed(0)
    sig = (0.1 * torch.randn(batch, codec.chunk_size * (chunks + warmup), generator=g)).to(device)
    cuda = device.startswith("cuda")
    times = []
    load_before = os.getloadavg()[0]
    for i in range(chunks + warmup):
        piece = sig[:, i * codec.chunk_size : (i + 1) * codec.chunk_size]
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        _, audio = sc.push(piece)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        assert audio.shape[-1] == 1920
        if i >= warmup:
            times.append(1000.0 * elapsed)
    a = np.asarray(times)
    p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
    chunk_ms = 1000.0 * codec.chunk_size / codec.sample_rate_input
    return {
        "device": device,
        "variant": variant,
        "threads": torch.get_num_threads() if not cuda else None,
        "batch": batch,
        "chunks": chunks,
        "p50_ms": p50,
        "p99_ms": p99,
        "mean_ms": float(a.mean()),
        "rtf": float(a.mean()) / chunk_ms,
        "streams_realtime": int(math.floor(chunk_ms / p99)) * batch,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


REDUCED = ("float16", "float16+int8", "int8")


def precision_agreement(codec: FocalCodec, seconds: float = 3.0) -> dict:
    """How close the reduced precisions are to float32 streaming on real speech (if available)."""
    speech = sorted((Path(__file__).resolve().parents[1].parent / "shared" / "speech" / "eval").glob("ls_*.flac"))
    if speech:
        from focalcodec.audio import load_audio

        sig = load_audio(speech[0])[: int(seconds * 16000)]
    else:
        sig = 0.1 * torch.randn(int(seconds * 16000), generator=torch.Generator().manual_seed(1))
    outs = {}
    for precision in ("float32",) + REDUCED:
        enc, dec = split_variant(precision)
        sc = StreamCodec(codec, precision=enc, decoder_precision=dec)
        t1, a1 = sc.push(sig)
        t2, a2 = sc.flush()
        outs[precision] = (torch.cat([t1, t2]), torch.cat([a1, a2]))
    tf, af = outs["float32"]
    result = {"input": str(speech[0]) if speech else "noise"}
    for precision in REDUCED:
        tq, aq = outs[precision]
        snr = 10 * torch.log10(af.pow(2).sum() / (af - aq).pow(2).sum().clamp(min=1e-12))
        result[precision] = {"token_agreement": float((tf == tq).float().mean()), "waveform_snr_db": float(snr)}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--model", default="focalcodec_50hz_4k_causal", help="preset or checkpoint (random weights for presets)"
    )
    ap.add_argument(
        "--pretrained", action="store_true", help="load weights with from_pretrained instead of random ones"
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["reference", "float32", "float16", "float16+int8", "int8"],
        choices=["reference", "float32", "float16", "float16+int8", "int8"],
    )
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--chunks", type=int, default=40, help="timed chunks per row (batch 1; batch > 1 uses half)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument(
        "--agreement", action="store_true", help="also compare the reduced precisions with float32 outputs on speech"
    )
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "streaming.json"))
    args = ap.parse_args()

    torch.manual_seed(0)
    codec = FocalCodec.from_pretrained(args.model) if args.pretrained else FocalCodec.from_config(args.model)
    codec.eval()
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    header = (
        f"{'device':6} {'variant':12} {'thr':>3} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'RTF':>6} {'streams':>7} {'load':>9}"
    )
    print(
        f"model {codec.model_id}, {codec.chunk_size}-sample chunks ({codec.latency:.0f} ms), "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), torch {torch.__version__}"
    )
    print(header)
    for device in devices:
        model = codec.to(device)
        for variant in args.variants:
            if variant not in ("reference", "float32") and device != "cpu":
                continue
            for threads in args.threads if device == "cpu" else [torch.get_num_threads()]:
                torch.set_num_threads(threads)
                for batch in args.batches:
                    chunks = args.chunks if batch == 1 else max(5, args.chunks // 2)
                    if variant == "reference":
                        chunks = max(5, chunks // 2)
                    row = measure(model, device, variant, batch, chunks, args.warmup)
                    rows.append(row)
                    print(
                        f"{device:6} {variant:12} {threads if device == 'cpu' else '-':>3} {batch:>5} "
                        f"{row['p50_ms']:8.1f} "
                        f"{row['p99_ms']:8.1f} {row['rtf']:6.3f} {row['streams_realtime']:>7} "
                        f"{row['load_before']:4.1f}/{row['load_after']:4.1f}",
                        flush=True,
                    )
    agreement = None
    if args.agreement:
        torch.set_num_threads(1)
        agreement = precision_agreement(codec.to("cpu"))
        for precision in REDUCED:
            a = agreement[precision]
            print(
                f"{precision} vs float32 streaming on {agreement['input']}: token agreement "
                f"{a['token_agreement']:.3f}, waveform SNR {a['waveform_snr_db']:.1f} dB"
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": codec.model_id,
        "weights": "pretrained" if args.pretrained else "random",
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows, "precision_agreement": agreement}, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
