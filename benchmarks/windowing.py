"""What windowing long inputs costs and saves: ``tokenize`` (= ``encode``) tokens and ``vc``
audio, windowed (the default windows, 60 s + 3 s + 1 s) against one pass over the whole input, and the
peak memory of each way (docs/longform.md, docs/vc.md).

    python -P benchmarks/windowing.py                      # fixture models, 180 s of speech
    python -P benchmarks/windowing.py --models DIR ... --seconds 120 --memory 60 120 240

Agreement: the share of tokens equal to the one-pass tokens (and of those that differ, the
share within ``context`` seconds of a window boundary); vc: the SNR of the windowed audio
against the one-pass audio. Memory: peak RSS of a fresh process (getrusage) converting /
encoding a source of each length either way, minus that process's peak after loading the
model. Prints a table and writes benchmarks/results/windowing.json. Real speech from
../shared/speech/eval, tiled to the length asked.

    python -P benchmarks/windowing.py --one-pass           # full-size models, 16 / 32 / 64 s

``--one-pass``: what sets the default window. Peak RSS of one encode + decode pass of the
full-size models (``FocalCodec.from_config``, random weights: memory does not depend on their
values) over 16 / 32 / 64 s of speech, each size in a fresh process (getrusage ru_maxrss), on
the CPU with 1 thread. ``Windowing.window`` + ``context`` + ``lookahead`` is the longest input
processed in one pass, so the largest one-pass length that stays within the memory budget
(``--budget-mb``, 4096) bounds the window. Writes benchmarks/results/windowing_one_pass.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))


def speech(seconds: float):
    import numpy as np
    import soundfile as sf
    import torch

    parts, total = [], 0
    for p in sorted((SHARED / "speech" / "eval").glob("*.flac")):
        x, rate = sf.read(str(p), dtype="float32")
        assert rate == 16000
        parts.append(x)
        total += len(x)
        if total >= seconds * 16000:
            break
    x = np.concatenate(parts)
    while len(x) < seconds * 16000:
        x = np.concatenate([x, x])
    return torch.from_numpy(x[: int(seconds * 16000)].copy())


def agreement(model_dir: str, seconds: float) -> dict:
    import torch

    from focalcodec import FocalCodec
    from focalcodec.longform import DEFAULT, encode_long
    from focalcodec.vc import build_speaker_set, convert, convert_tokens

    torch.set_num_threads(1)
    codec = FocalCodec.from_pretrained(model_dir)
    sig = speech(seconds)
    with torch.inference_mode():
        whole = codec.encode(sig).tokens
        windowed = encode_long(codec, sig)
    diff = (whole != windowed).nonzero().flatten().tolist()
    core, left, _ = DEFAULT.token_geometry(codec.token_rate)
    total = whole.shape[0]
    count = -(-total // core)
    bounds = [round(k * total / count) for k in range(1, count)]
    near = [i for i in diff if any(abs(i - b) <= left for b in bounds)]
    target = build_speaker_set(
        codec if not codec.causal else FocalCodec.from_pretrained(model_dir), [sig[: 16000 * 10]]
    )
    with torch.inference_mode():
        one = convert_tokens(
            codec, codec.sig_to_toks(sig[None]), target, output_length=len(sig) * codec.sample_rate_output // 16000
        )[0]
    two = convert(codec, sig, target)
    noise = float(((one - two) ** 2).sum())
    snr = float("inf") if noise == 0 else 10 * float(torch.log10((one**2).sum() / noise))
    return {
        "model": Path(model_dir).name,
        "seconds": seconds,
        "tokens": total,
        "tokens_equal_pct": 100.0 * (total - len(diff)) / total,
        "differing_near_boundaries_pct": 100.0 * len(near) / len(diff) if diff else None,
        "vc_snr_db": snr,
        "vc_max_abs_diff": float((one - two).abs().max()),
    }


CHILD = r"""
import resource, sys, torch
torch.set_num_threads(1)
from focalcodec import FocalCodec
sys.path.insert(0, sys.argv[5])
from windowing import speech
codec = FocalCodec.from_pretrained(sys.argv[1])
mode, what, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4])
sig = speech(seconds)
from focalcodec.vc import build_speaker_set, convert, convert_tokens
from focalcodec.longform import encode_long
target = build_speaker_set(codec, [sig[:16000 * 10]]) if what == "vc" else None
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with torch.inference_mode():
    if what == "encode":
        out = codec.encode(sig).tokens if mode == "whole" else encode_long(codec, sig)
    elif mode == "whole":
        out = convert_tokens(codec, codec.sig_to_toks(sig[None]), target, output_length=len(sig))[0]
    else:
        out = convert(codec, sig, target)
print(base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def memory(model_dir: str, what: str, mode: str, seconds: float) -> tuple[float, float] | None:
    """(peak RSS MB before the operation: model, input, speaker set; peak RSS MB after it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, model_dir, mode, what, str(seconds), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return None  # e.g. out of memory
    before, after = proc.stdout.strip().splitlines()[-1].split()
    return float(before), float(after)


ONE_PASS_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[3])
from windowing import speech
from focalcodec import FocalCodec

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

torch.manual_seed(0)
codec = FocalCodec.from_config(sys.argv[1]).eval()
sig = speech(float(sys.argv[2]))
row = {"loaded_mb": peak()}
with torch.inference_mode():
    start = time.perf_counter()
    toks = codec.encode(sig).tokens
    row["encode_s"], row["encode_peak_mb"] = time.perf_counter() - start, peak()
    start = time.perf_counter()
    audio = codec.decode(toks).audio
    row["decode_s"], row["peak_mb"] = time.perf_counter() - start, peak()
row["tokens"], row["samples_out"] = int(toks.shape[0]), int(audio.shape[0])
print(json.dumps(row))
"""


def one_pass(config: str, seconds: float) -> dict:
    """Peak RSS (MB) of one encode + decode pass over ``seconds`` of speech in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-c", ONE_PASS_CHILD, config, str(seconds), str(Path(__file__).parent)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    row = {"config": config, "seconds": seconds}
    if proc.returncode != 0:  # e.g. killed for memory
        return {**row, "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return {**row, **json.loads(proc.stdout.strip().splitlines()[-1])}


def main_one_pass(args: argparse.Namespace) -> None:
    load = open("/proc/loadavg").read().split()[:3]
    started = time.time()
    rows = [one_pass(c, s) for c in args.configs for s in args.one_pass_seconds]
    print(f"load {' '.join(load)} before, {' '.join(open('/proc/loadavg').read().split()[:3])} after; 1 thread")
    print("peak RSS of a fresh process, MB: full-size model (random weights), one encode + decode pass")
    print(f"{'config':<18} {'s':>4} {'loaded':>7} {'+encode':>8} {'+decode':>8} {'encode s':>9} {'decode s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<18} {r['seconds']:>4.0f} failed: {r['error']}")
            continue
        print(
            f"{r['config']:<18} {r['seconds']:>4.0f} {r['loaded_mb']:>7.0f} {r['encode_peak_mb']:>8.0f} "
            f"{r['peak_mb']:>8.0f} {r['encode_s']:>9.1f} {r['decode_s']:>9.1f}"
        )
    fits = [r["seconds"] for r in rows if "error" not in r and r["peak_mb"] <= args.budget_mb]
    worst = {s: max(r.get("peak_mb", float("inf")) for r in rows if r["seconds"] == s) for s in args.one_pass_seconds}
    fit_all = [s for s, mb in sorted(worst.items()) if mb <= args.budget_mb]
    print(f"longest one pass within {args.budget_mb:.0f} MB for every config: {fit_all[-1] if fit_all else None} s")
    result = {
        "load_before": load,
        "load_after": open("/proc/loadavg").read().split()[:3],
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": 1,
        "budget_mb": args.budget_mb,
        "wall_s": time.time() - started,
        "one_pass": rows,
        "longest_one_pass_within_budget_s": fit_all[-1] if fit_all else None,
        "within_budget_any_config_s": sorted(set(fits)),
    }
    out = args.out or str(ROOT / "benchmarks" / "results" / "windowing_one_pass.json")
    Path(out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    fixtures = SHARED / "fixtures"
    ap.add_argument("--models", nargs="+", default=[str(fixtures / "tiny_50hz"), str(fixtures / "tiny_causal_4k")])
    ap.add_argument("--seconds", type=float, default=180.0, help="length of the agreement input")
    ap.add_argument("--memory", nargs="*", type=float, default=[60, 120, 240], help="lengths for the memory runs")
    ap.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/windowing[_one_pass].json)")
    ap.add_argument("--only-memory", action="store_true", help="skip the agreement runs")
    ap.add_argument("--one-pass", action="store_true", help="only the one-pass peak RSS of the full-size models")
    ap.add_argument("--configs", nargs="+", default=["focalcodec_50hz", "focalcodec_25hz", "focalcodec_12_5hz"])
    ap.add_argument("--one-pass-seconds", nargs="+", type=float, default=[16, 32, 64])
    ap.add_argument("--budget-mb", type=float, default=4096)
    args = ap.parse_args()
    if args.one_pass:
        return main_one_pass(args)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "windowing.json")
    load = open("/proc/loadavg").read().split()[:3]
    started = time.time()
    rows = [] if args.only_memory else [agreement(m, args.seconds) for m in args.models]
    print(f"load {' '.join(load)}; {platform.processor() or platform.machine()}, 1 thread")
    print(
        f"{'model':<16} {'s':>5} {'tokens':>7} {'equal %':>8} {'near edge %':>11} {'vc SNR dB':>10} {'vc max|d|':>10}"
    )
    for r in rows:
        near = "-" if r["differing_near_boundaries_pct"] is None else f"{r['differing_near_boundaries_pct']:.0f}"
        print(
            f"{r['model']:<16} {r['seconds']:>5.0f} {r['tokens']:>7} {r['tokens_equal_pct']:>8.2f} {near:>11} "
            f"{r['vc_snr_db']:>10.1f} {r['vc_max_abs_diff']:>10.4f}"
        )
    mem = []
    for seconds in args.memory:
        for what in ("encode", "vc"):
            row = {"model": Path(args.models[0]).name, "what": what, "seconds": seconds}
            for mode in ("whole", "windowed"):
                got = memory(args.models[0], what, mode, seconds)
                row[f"{mode}_before_mb"], row[f"{mode}_peak_mb"] = got if got else (None, None)
            mem.append(row)
    print(f"\nload {' '.join(open('/proc/loadavg').read().split()[:3])}; peak RSS of a fresh process, MB")
    print(f"{'model':<16} {'what':<7} {'s':>5} {'loaded':>7} {'one pass':>9} {'windowed':>9}")
    for r in mem:
        show = {k: ("failed" if r[k] is None else f"{r[k]:.0f}") for k in ("whole_peak_mb", "windowed_peak_mb")}
        loaded = "-" if r["windowed_before_mb"] is None else f"{r['windowed_before_mb']:.0f}"
        print(
            f"{r['model']:<16} {r['what']:<7} {r['seconds']:>5.0f} {loaded:>7} {show['whole_peak_mb']:>9} "
            f"{show['windowed_peak_mb']:>9}"
        )
    result = {
        "load": load,
        "machine": platform.platform(),
        "wall_s": time.time() - started,
        "agreement": rows,
        "memory_peak_rss_mb": mem,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
