"""Reduced precision: token agreement with float32 under ``torch.autocast`` (bfloat16 and
float16) on the real speech of ../shared/speech/eval, and the time it takes.

    python benchmarks/precision.py                          # 50 Hz, CPU (+ CUDA when present)
    python benchmarks/precision.py --model focalcodec_25hz --files 5 --devices cpu

The codec keeps float32 where precision decides (the compressor's output projection, whose
signs are the tokens, and the waveform heads with their inverse FFT); everything else runs
in the autocast dtype. For every file it encodes in float32 and under autocast, and reports
the share of identical tokens and the waveform SNR of decoding the float32 tokens under
autocast against float32 decoding. Random weights unless ``--pretrained`` (with random
weights, the latents sit closer to the sign boundaries than a trained model's, so the
agreement measured here is a pessimistic estimate). ``--reference-device cpu`` adds a
"float32 vs cpu" row per device: float32 tokens on that device against float32 on the CPU
for the first ``--reference-files`` files (the same model on another device should give the
same tokens). Prints a table and writes JSON (rewritten after every row).

    python benchmarks/precision.py --devices cuda --files 0 --reference-device cpu --reference-files 8
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from focalcodec import FocalCodec  # noqa: E402
from focalcodec.audio import load_audio  # noqa: E402

SHARED = Path(os.environ.get("FOCALCODEC_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SPEECH = SHARED / "speech" / "eval"


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="focalcodec_50hz")
    ap.add_argument("--pretrained", action="store_true", help="load weights with from_pretrained")
    ap.add_argument("--speech", default=str(SPEECH), help="folder of speech files (default: ../shared/speech/eval)")
    ap.add_argument("--files", type=int, default=8, help="how many files (sorted by name; 0 = all)")
    ap.add_argument("--seconds", type=float, default=10.0, help="crop each file to this length")
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float16"])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--reference-device", default=None, help="also compare float32 tokens with this device's")
    ap.add_argument("--reference-files", type=int, default=8, help="files for the --reference-device row")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", "--json", default=str(Path(__file__).parent / "results" / "precision.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    codec = (FocalCodec.from_pretrained if args.pretrained else FocalCodec.from_config)(args.model).eval()
    files = sorted(p for p in Path(args.speech).iterdir() if p.suffix in (".flac", ".wav"))[: args.files or None]
    if not files:
        raise SystemExit(f"no .flac/.wav files in {args.speech}")
    sigs = [load_audio(f, codec.sample_rate_input)[: int(args.seconds * codec.sample_rate_input)] for f in files]
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    rows = []
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "model": codec.model_id,
        "weights": "pretrained" if args.pretrained else "random",
        "files": [f.name for f in files],
        "seconds": args.seconds,
        "audio_s": sum(len(s) for s in sigs) / codec.sample_rate_input,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }

    def write() -> None:
        out_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))

    def card(device: str) -> str | None:
        return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None

    print(
        f"model {codec.model_id} ({'pretrained' if args.pretrained else 'random'} weights), {len(files)} files of "
        f"<= {args.seconds:g} s from {args.speech}"
    )
    print(
        f"{'device':6} {'dtype':9} {'tokens same':>11} {'SNR dB':>7} {'enc s':>7} {'dec s':>7} "
        f"{'fp32 enc s':>10} {'fp32 dec s':>10}"
    )
    for device in devices:
        model = codec.to(device)
        ref = []
        t32 = [0.0, 0.0]
        with torch.inference_mode():
            for sig in sigs:
                x = sig[None].to(device)
                toks, te = timed(lambda m=model, x=x: m.sig_to_toks(x), device)
                audio, td = timed(lambda m=model, t=toks: m.toks_to_sig(t), device)
                ref.append((toks, audio))
                t32[0] += te
                t32[1] += td
            for name in args.dtypes:
                dtype = getattr(torch, name)
                same = total = 0
                err = energy = 0.0
                tt = [0.0, 0.0]
                with torch.autocast(device.split(":")[0], dtype=dtype):
                    for sig, (toks, audio) in zip(sigs, ref, strict=False):
                        x = sig[None].to(device)
                        low, te = timed(lambda m=model, x=x: m.sig_to_toks(x), device)
                        out, td = timed(lambda m=model, t=toks: m.toks_to_sig(t), device)
                        same += int((low == toks).sum())
                        total += toks.numel()
                        err += float((out.float() - audio).pow(2).sum())
                        energy += float(audio.pow(2).sum())
                        tt[0] += te
                        tt[1] += td
                row = {
                    "device": device,
                    "card": card(device),
                    "dtype": name,
                    "compared_with": f"float32 on {device}",
                    "token_agreement": same / total,
                    "waveform_snr_db": 10.0 * torch.log10(torch.tensor(energy / max(err, 1e-20))).item(),
                    "encode_s": tt[0],
                    "decode_s": tt[1],
                    "float32_encode_s": t32[0],
                    "float32_decode_s": t32[1],
                }
                rows.append(row)
                write()
                print(
                    f"{device:6} {name:9} {row['token_agreement']:11.4f} {row['waveform_snr_db']:7.1f} {tt[0]:7.2f} "
                    f"{tt[1]:7.2f} {t32[0]:10.2f} {t32[1]:10.2f}",
                    flush=True,
                )
        if args.reference_device:
            row = cross_device(codec, model, sigs, ref, device, args.reference_device, args.reference_files)
            row["card"] = card(device)
            rows.append(row)
            write()
            print(
                f"{device:6} {'float32':9} {row['token_agreement']:11.4f} {row['waveform_snr_db']:7.1f} "
                f"(vs float32 on {args.reference_device}, {row['files']} files)",
                flush=True,
            )
    write()
    print(f"-> {out_path}")


def cross_device(codec, model, sigs, ref, device: str, other: str, count: int) -> dict:
    """float32 on ``device`` (``ref``: its tokens and audio per file) against float32 on
    ``other`` for the first ``count`` files: identical tokens expected."""
    import copy

    twin = copy.deepcopy(model).to(other)
    same = total = 0
    err = energy = 0.0
    with torch.inference_mode():
        for sig, (toks, audio) in list(zip(sigs, ref, strict=False))[:count]:
            theirs = twin.sig_to_toks(sig[None].to(other)).to(toks.device)
            out = twin.toks_to_sig(toks.to(other)).to(audio.device)
            same += int((theirs == toks).sum())
            total += toks.numel()
            err += float((out.float() - audio).pow(2).sum())
            energy += float(audio.pow(2).sum())
    return {
        "device": device,
        "dtype": "float32",
        "compared_with": f"float32 on {other}",
        "files": min(count, len(sigs)),
        "token_agreement": same / max(total, 1),
        "waveform_snr_db": 10.0 * torch.log10(torch.tensor(energy / max(err, 1e-20))).item(),
    }


if __name__ == "__main__":
    main()
