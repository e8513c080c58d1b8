"""``focalcodec evaluate``: measure codecs on a data set, write report.json, report.md and plots.

    focalcodec evaluate --codec focalcodec opus-6 codec2-1200 --model lucadellalib/focalcodec_50hz \\
        --data LibriSpeech/test-clean -o reports/ls
    focalcodec evaluate --task vc --codec focalcodec --data VCTK_SUBSET -o reports/vc
"""

from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path
from typing import Any

from ..errors import InputError
from .common import (
    add_command,
    add_force_option,
    add_model_options,
    add_output_option,
    add_quiet_option,
    check_device,
    positive_int,
    positive_seconds,
    require,
)

REPORT_FILES = ("report.json", "report.md")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "evaluate",
        help="measure codecs (dWER, speaker similarity, MOS, PESQ, STOI, bitrate, RTF ...) and write a report",
        description="Evaluate codecs on a folder or manifest: resynthesis (default) or voice conversion (--task vc). "
        "Writes report.json, report.md and plots into -o. RTF = processing time / audio time (lower is faster).",
    )
    p.add_argument(
        "--codec",
        nargs="+",
        default=["focalcodec"],
        metavar="NAME",
        help="codecs: focalcodec (uses --model), focalcodec:MODEL, codec2-700c/1200/1300/1400/1600/2400/3200, "
        "opus-6, opus-8, opus-KBPS, identity, reference:CONFIG, package.module:factory (default: focalcodec)",
    )
    add_model_options(p)
    p.add_argument(
        "--data",
        required=True,
        help="folder of audio files (with optional manifest.tsv) or a manifest .tsv/.csv/.jsonl",
    )
    add_output_option(p, "report folder (created)")
    add_force_option(p, "an earlier report in the folder")
    p.add_argument(
        "--task",
        choices=("resynth", "vc"),
        default="resynth",
        help="resynth: every utterance through each codec; vc: sources converted to target speakers (see --vc-pairs)",
    )
    p.add_argument(
        "--metrics",
        default="auto",
        help="comma-separated metric names, or 'auto' = every default metric available here "
        "(pesq_wb,pesq_nb,stoi,estoi,si_sdr,mel_distance,mcd_f0,dwer,sim,utmos,dnsmos,distillmos); --task vc "
        "leaves out the ones that compare waveforms",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep utterances whose manifest field matches "
        "(repeatable; VALUE may be a|b; lang=en matches 'en (L1 zh)')",
    )
    p.add_argument(
        "--max-duration", type=positive_seconds, default=None, help="skip utterances longer than this (seconds)"
    )
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate at most this many utterances")
    p.add_argument(
        "--asr-model",
        default=None,
        help="CTranslate2 Whisper model folder for dWER (default: an installed offline model)",
    )
    p.add_argument(
        "--speaker-backend",
        choices=("auto", "wavlm", "resemblyzer"),
        default="auto",
        help="speaker-similarity model: WavLM-base-SV (the paper's, when its weights are present), resemblyzer, "
        "or auto (the first available)",
    )
    p.add_argument(
        "--vc-pairs", default=None, help="--task vc: .tsv with source and target (references separated by |) columns"
    )
    p.add_argument(
        "--vc-references",
        type=positive_int,
        default=5,
        help="--task vc without --vc-pairs: target utterances per trial",
    )
    p.add_argument(
        "--no-align",
        action="store_true",
        help="do not estimate and compensate each output's delay before time-aligned metrics (default: align)",
    )
    p.add_argument("--max-delay-ms", type=float, default=500.0, help="largest output delay searched for (default: 500)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for the 95 %% confidence intervals, 0 for none (default: 1000)",
    )
    p.add_argument("--save-audio", action="store_true", help="also write every reconstruction under OUTPUT/audio/")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    add_quiet_option(p)
    p.set_defaults(func=run)
    return p


def _metric_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    if name == "dwer":
        return {"model": args.asr_model, "device": "cuda" if str(args.device).startswith("cuda") else "cpu"}
    if name == "sim":
        return {"backend": args.speaker_backend, "device": args.device}
    if name in ("utmos", "distillmos"):
        return {"device": args.device}
    return {}


def build_metrics(
    spec: str, task: str, args: argparse.Namespace, skipped: dict[str, str] | None = None
) -> dict[str, Any]:
    """The metrics of ``spec``; with ``auto``, the unavailable defaults are left out and their
    reasons recorded in ``skipped``."""
    from ..eval.harness import DEFAULT_METRICS
    from ..eval.metrics import build_metric, metric_unavailable_reason

    if spec == "auto":
        names = []
        for n in DEFAULT_METRICS[task]:
            reason = metric_unavailable_reason(n)
            if reason is None:
                names.append(n)
            else:
                if skipped is not None:
                    skipped[n] = reason
                warnings.warn(f"metric {n} skipped: {reason}", stacklevel=2)
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise InputError("no metric to compute (install the eval extras: pip install 'focalcodec[eval]')")
    return {n: build_metric(n, **_metric_options(n, args)) for n in names}


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..eval.baselines import build_codec
    from ..eval.data import filter_utterances, load_utterances, make_vc_pairs, read_vc_pairs
    from ..eval.harness import evaluate_resynthesis, evaluate_vc
    from ..eval.plots import PLOT_FILES
    from ..eval.report import write_report
    from ..outputs import check_targets

    out = Path(args.output)
    if args.bootstrap < 0 or args.max_delay_ms < 0:
        raise InputError("--bootstrap and --max-delay-ms must not be negative")
    targets = [out / n for n in REPORT_FILES + (() if args.no_plots else PLOT_FILES)]
    targets += [out / "audio"] if args.save_audio else []
    check_targets(targets, [args.data] + ([args.vc_pairs] if args.vc_pairs else []), args.force)
    if not args.no_plots:
        require("matplotlib", "eval", "the plots (or pass --no-plots)")
    check_device(args.device)
    if args.task == "vc" and args.vc_pairs:
        items: list[Any] = read_vc_pairs(args.vc_pairs)[: args.limit]
        n_items = len(items)
    else:
        utts = filter_utterances(
            load_utterances(args.data), args.where, args.max_duration, None if args.task == "vc" else args.limit
        )
        items = make_vc_pairs(utts, args.vc_references)[: args.limit] if args.task == "vc" else utts
        n_items = len(items)
    skipped: dict[str, str] = {}
    metrics = build_metrics(args.metrics, args.task, args, skipped)
    codecs = [build_codec(name, model=args.model, device=args.device) for name in args.codec]
    audio_dir = out / "audio" if args.save_audio else None
    if args.task == "vc":
        result = evaluate_vc(
            codecs, items, metrics, audio_dir, args.device, progress=not args.quiet, n_boot=args.bootstrap
        )
    else:
        result = evaluate_resynthesis(
            codecs,
            items,
            metrics,
            audio_dir,
            args.device,
            progress=not args.quiet,
            align=not args.no_align,
            max_delay_s=args.max_delay_ms / 1000.0,
            n_boot=args.bootstrap,
        )
    result.skipped = skipped
    first = next(iter(result.codecs.values()), None)
    result.data = {
        "source": str(args.data),
        "utterances": n_items,
        "filters": args.where,
        "max_duration": args.max_duration,
        "audio_seconds": first["summary"].get("audio_seconds") if first else None,
    }
    result.environment = {
        "focalcodec": __version__,
        "python": platform.python_version(),
        "device": args.device,
    }
    paths = write_report(result, out, force=args.force)
    if not args.no_plots:
        from ..eval.plots import write_plots

        write_plots(result, out, force=args.force)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print(f"report written to {out}")
    return 0
