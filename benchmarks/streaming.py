"""Streaming speed: per-chunk latency side by side, and streams kept in real time by the engine.

    python benchmarks/streaming.py                                   # 4k causal model, random weights
    python benchmarks/streaming.py --reference-repo /tmp/authors_focalcodec --chunks 200
    python benchmarks/streaming.py --streams 1 2 4 8 16 --engine-precisions float16+int8
    python benchmarks/streaming.py --compile --streams 4             # torch.compile of the fixed-shape step

1. **Latency, side by side** (batch 1): every chunk of 1280 samples is pushed through each
   variant in turn (interleaved, so a load change hits all of them alike) and each push is
   timed (encode + decode: tokens and 24 kHz audio out). Variants: the authors' streaming loop
   on the same weights (``--reference-repo``, a checkout of lucadellalib/focalcodec: its
   ``sig_to_toks``/``toks_to_sig`` with states, as in its demo), then
   :class:`focalcodec.streaming.StreamCodec` at each precision (``float16+int8``: float16
   encode side, int8 decode side). ``--compare-package DIR`` adds the same precisions from
   another copy of this package importable from ``DIR`` under another name (development: a
   frozen earlier version), with their ratios.
2. **Streams in real time**: ``n`` resynthesis streams through one
   :class:`focalcodec.streaming.StreamEngine`, one chunk each per step; a step is timed from
   the pushes to the outputs. ``n`` streams are kept in real time when the step's p99 is within
   the chunk's 80 ms.
3. ``--compile``: the engine's fixed-shape step (``graph="fixed"``) against the same step through
   ``torch.compile`` (same tokens checked), and the compile time. On a CUDA device the engine rows
   also run with ``graph="cuda"`` (CUDA graphs).

The 1-minute load average is recorded beside every row: on a shared machine compare ratios
within one run, not absolute figures across runs. Prints tables and writes JSON (``--out``,
default benchmarks/results/streaming.json).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off sys.path: a sibling script named like a standard-library module would shadow it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from focalcodec import FocalCodec  # noqa: E402
from focalcodec.streaming import StreamCodec, StreamEngine  # noqa: E402

CHUNK_MS = 80.0


def split_variant(variant: str) -> tuple[str, str]:
    """``"float16+int8"`` -> ("float16", "int8"): encode-side and decode-side precisions."""
    enc, _, dec = variant.partition("+")
    return enc, dec or enc


def load() -> float:
    return os.getloadavg()[0]


def stats(times: list[float]) -> dict:
    a = np.asarray(times)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


def authors_loop(repo: str, codec: FocalCodec, config: Path) -> Callable:
    """A push function running the authors' streaming loop on ``codec``'s weights."""
    package = Path(repo) / "focalcodec"
    spec = importlib.util.spec_from_file_location(
        "authors_focalcodec", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["authors_focalcodec"] = module
    spec.loader.exec_module(module)
    theirs = module.FocalCodec.from_config(str(config)).eval()
    theirs.load_state_dict(codec.state_dict())  # the same key layout (SPEC §2.3)
    states: list = [(), (), (), ()]

    @torch.inference_mode()
    def push(chunk: torch.Tensor) -> torch.Tensor:
        toks, states[0], states[1] = theirs.sig_to_toks(chunk, states[0], states[1], return_state=True)
        audio, states[2], states[3] = theirs.toks_to_sig(toks, states[2], states[3], return_state=True)
        return audio

    return push


def package_codec(package: str, codec: FocalCodec, model: str) -> tuple[object, object]:
    """(module, codec) of another copy of this package named ``package``, with ``codec``'s weights."""
    other = importlib.import_module(package)
    twin = other.FocalCodec.from_config(model).eval()
    twin.load_state_dict(codec.state_dict())
    return importlib.import_module(f"{package}.streaming"), twin


def latency_table(args: argparse.Namespace, codec: FocalCodec) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    n = args.chunks + args.warmup
    sig = 0.1 * torch.randn(1, codec.chunk_size * n, generator=g)
    variants: dict[str, Callable] = {}
    if args.reference_repo:
        config = Path(importlib.import_module("focalcodec.configs").__file__).parent / f"{args.model}.json"
        variants["authors"] = authors_loop(args.reference_repo, codec, config)
    others = {}
    if args.compare_package:
        sys.path.insert(0, args.compare_package[0])
        module, twin = package_codec(args.compare_package[1], codec, args.model)
        others = {"streaming": module, "codec": twin}
    for variant in args.precisions:
        enc, dec = split_variant(variant)
        if others:
            # positional: a frozen copy may predate the keyword's current name
            old = others["streaming"].StreamCodec(others["codec"], None, 4, 1, True, enc, dec)
            variants[f"old {variant}"] = lambda x, s=old: s.push(x)[1]
        sc = StreamCodec(codec, precision=enc, decode_precision=dec)
        variants[variant] = lambda x, s=sc: s.push(x)[1]
    times: dict[str, list[float]] = {k: [] for k in variants}
    before = load()
    for i in range(n):
        chunk = sig[:, i * codec.chunk_size : (i + 1) * codec.chunk_size]
        for name, push in variants.items():
            t0 = time.perf_counter()
            audio = push(chunk)
            elapsed = time.perf_counter() - t0
            assert audio.shape[-1] == 1920
            if i >= args.warmup:
                times[name].append(1000.0 * elapsed)
    after = load()
    rows = [{"variant": k, **stats(v), "chunks": args.chunks, "load": [before, after]} for k, v in times.items()]
    print(f"\n1. per-chunk latency, batch 1, {args.chunks} chunks interleaved, load {before:.1f} -> {after:.1f}")
    print(f"{'variant':18} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'vs old p50':>10}")
    by_name = {r["variant"]: r for r in rows}
    for r in rows:
        old = by_name.get(f"old {r['variant']}")
        ratio = f"{r['p50_ms'] / old['p50_ms']:10.2f}" if old else " " * 10
        print(f"{r['variant']:18} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['mean_ms']:8.1f} {ratio}")
    return rows


def engine_steps(engine: StreamEngine, streams: int, steps: int, warmup: int, seed: int = 0) -> tuple[list, list]:
    """Times of ``steps`` engine steps with ``streams`` resynthesis streams, and their tokens."""
    g = torch.Generator().manual_seed(seed)
    sids = [engine.open("resynth") for _ in range(streams)]
    sig = 0.1 * torch.randn(streams, engine.chunk_samples * (steps + warmup), generator=g)
    times, toks = [], []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        for row, sid in enumerate(sids):
            engine.push(sid, sig[row, i * engine.chunk_samples : (i + 1) * engine.chunk_samples])
        outs = engine.step()
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        assert all(outs[sid].audio.shape[0] == engine.samples_per_chunk_out for sid in sids)
        toks.append(torch.stack([outs[sid].tokens for sid in sids]))
        if i >= warmup:
            times.append(1000.0 * elapsed)
    for sid in sids:
        engine.close(sid)
    return times, toks


def engine_table(args: argparse.Namespace, codec: FocalCodec, device: str) -> list[dict]:
    rows = []
    print(f"\n2. streams in real time through StreamEngine ({device}), {args.engine_chunks} steps per row")
    print(f"{'variant':14} {'graph':7} {'streams':>7} {'p50 ms':>8} {'p99 ms':>8} {'real time':>9} {'load':>9}")
    graphs = [None] + (["cuda"] if device == "cuda" else [])
    for variant in args.engine_precisions if device == "cpu" else ["float32"]:
        enc, dec = split_variant(variant)
        for graph in graphs:
            for n in args.streams if device == "cpu" else args.gpu_streams:
                engine = StreamEngine(codec, max_streams=n, precision=enc, decode_precision=dec, graph=graph)
                before = load()
                times, _ = engine_steps(engine, n, args.engine_chunks, args.warmup)
                row = {"device": device, "variant": variant, "graph": graph, "streams": n, **stats(times)}
                row.update(realtime=row["p99_ms"] <= CHUNK_MS, load=[before, load()])
                rows.append(row)
                print(
                    f"{variant:14} {str(graph):7} {n:7} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
                    f"{'yes' if row['realtime'] else 'no':>9} {before:4.1f}/{row['load'][1]:4.1f}",
                    flush=True,
                )
                del engine
    return rows


def compile_rows(args: argparse.Namespace, codec: FocalCodec) -> list[dict]:
    """The fixed-shape CPU step eagerly and through torch.compile: same tokens, time per step."""
    n = args.streams[0] if args.streams else 1
    fixed = StreamEngine(codec, max_streams=n, graph="fixed")
    t0 = time.perf_counter()
    compiled = StreamEngine(codec, max_streams=n, graph="compile")
    engine_steps(compiled, n, 1, 0)  # compiles every stage
    compile_s = time.perf_counter() - t0
    rows = []
    toks = {}
    for name, engine in (("fixed", fixed), ("compile", compiled)):
        before = load()
        times, toks[name] = engine_steps(engine, n, args.engine_chunks, args.warmup, seed=1)
        rows.append({"graph": name, "streams": n, **stats(times), "load": [before, load()]})
    same = all(torch.equal(a, b) for a, b in zip(toks["fixed"], toks["compile"], strict=True))
    print(f"\n3. torch.compile of the fixed-shape step, {n} stream(s): compile {compile_s:.0f} s, same tokens: {same}")
    for r in rows:
        print(f"{r['graph']:8} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  load {r['load'][0]:.1f}")
    for r in rows:
        r.update(compile_seconds=compile_s, same_tokens=same)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="focalcodec_50hz_4k_causal", help="a causal preset (random weights)")
    ap.add_argument("--precisions", nargs="+", default=["float32", "float16", "float16+int8"])
    ap.add_argument("--chunks", type=int, default=200, help="timed chunks per variant (latency table)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--reference-repo", help="a checkout of the authors' lucadellalib/focalcodec to time alongside")
    ap.add_argument("--compare-package", nargs=2, metavar=("DIR", "NAME"), help="another copy of this package")
    ap.add_argument("--streams", nargs="*", type=int, default=[1, 2, 4, 8, 16], help="concurrent streams (CPU)")
    ap.add_argument("--gpu-streams", nargs="*", type=int, default=[1, 64, 256, 1024])
    ap.add_argument("--engine-precisions", nargs="+", default=["float32", "float16+int8"])
    ap.add_argument("--engine-chunks", type=int, default=20, help="timed steps per engine row")
    ap.add_argument("--skip-latency", action="store_true", help="only the engine tables")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the fixed-shape step")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "streaming.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    codec = FocalCodec.from_config(args.model).eval()
    print(
        f"model {codec.model_id} (random weights), {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, load {load():.1f}"
    )
    result: dict = {
        "meta": {
            "model": codec.model_id,
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        }
    }
    if not args.skip_latency:
        result["latency"] = latency_table(args, codec)
    result["engine"] = engine_table(args, codec, "cpu") if args.streams else []
    if torch.cuda.is_available():
        result["engine"] += engine_table(args, codec.to("cuda"), "cuda")
        codec.to("cpu")
    if args.compile:
        result["compile"] = compile_rows(args, codec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
