"""PNG plots of a run (matplotlib, no display needed):

- ``metrics_vs_bitrate.png``: one panel per metric, every codec a point at its measured
  bitrate (log axis) with its bootstrap 95 % interval; each title names the model behind the
  metric and says when it is not the paper's;
- ``spectrograms.png``: log-mel spectrograms of one utterance, original and each codec's output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..outputs import output_path
from .harness import EvalResult
from .metrics import log_mel_spectrogram
from .report import COLUMN_TITLES

__all__ = ["PLOT_FILES", "plot_metrics_vs_bitrate", "plot_spectrograms", "write_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bitrate(summary: Mapping[str, float]) -> float:
    b = summary.get("measured_bitrate", float("nan"))
    if b is None or not math.isfinite(b):
        b = summary.get("nominal_bitrate", float("nan"))
    return float(b) if b is not None else float("nan")


def plot_metrics_vs_bitrate(result: EvalResult, path: str | Path, force: bool = False) -> Path | None:
    """Grid of metric-vs-bitrate panels; returns the path, or None when there is nothing to plot."""
    keys = [k for keys in result.metrics.values() for k in keys] + ["code_usage", "norm_entropy", "rtf"]
    summaries = {n: e["summary"] for n, e in result.codecs.items()}
    keys = [
        k for k in keys if any(isinstance(s.get(k), (int, float)) and math.isfinite(s[k]) for s in summaries.values())
    ]
    if not keys or not summaries:
        return None
    plt = _pyplot()
    import matplotlib.ticker

    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    markers = "osD^v<>pP*Xh"
    names = sorted(summaries, key=lambda n: _bitrate(summaries[n]))
    for ax, key in zip(axes.flat, keys, strict=False):
        for i, name in enumerate(names):
            s = summaries[name]
            x, y = _bitrate(s), s.get(key)
            if y is None or not math.isfinite(float(y)) or not math.isfinite(x) or x <= 0:
                continue
            ci = s.get(f"{key}_ci")
            yerr = None
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(c is not None and math.isfinite(c) for c in ci):
                yerr = [[max(0.0, float(y) - ci[0])], [max(0.0, ci[1] - float(y))]]
            ax.errorbar(
                [x / 1000], [y], yerr=yerr, fmt=markers[i % len(markers)], ms=6, capsize=3, label=name, linestyle=""
            )
        ref = result.reference.get(key)
        if ref is not None and isinstance(ref, (int, float)) and math.isfinite(ref):
            ax.axhline(ref, color="grey", linestyle="--", linewidth=1, label="original audio")
        ax.set_xscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=6)
        ax.set_xlabel("bitrate (kbit/s)")
        title = COLUMN_TITLES.get(key, (key, 2))[0]
        metric = next((n for n, keys in result.metrics.items() if key in keys), None)
        info = result.models.get(metric or "", {})
        if info.get("model"):
            title += f"\n{info['model']}"
            if info.get("paper") and info.get("status") != "same as the paper":
                title += " - not comparable with the paper"
        ax.set_title(title, fontsize=8)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=False):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.06 + 0.02 * (len(labels) // 4), 1, 1))
    _save(fig, path, 110, force)
    plt.close(fig)
    return Path(path)


def _save(fig, path: str | Path, dpi: int, force: bool) -> None:
    with output_path(path, force=force) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def plot_spectrograms(
    signals: Mapping[str, np.ndarray], path: str | Path, sample_rate: int = 16000, title: str = "", force: bool = False
) -> Path:
    """One log-mel panel per signal (``name -> (N,)`` at ``sample_rate``), stacked, same colour scale."""
    if not signals:
        raise ValueError("no signal to plot")
    plt = _pyplot()
    specs: dict[str, np.ndarray] = {n: log_mel_spectrogram(x, sample_rate).numpy() for n, x in signals.items()}
    vmax = max(float(s.max()) for s in specs.values())
    vmin = vmax - 12.0  # ~ 52 dB of range (natural log of power)
    fig, axes = plt.subplots(len(specs), 1, figsize=(9, 1.9 * len(specs)), squeeze=False, sharex=True)
    hop_s = 256 / sample_rate
    for ax, (name, spec) in zip(axes[:, 0], specs.items(), strict=False):
        ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=vmin,
            vmax=vmax,
            extent=(0, spec.shape[1] * hop_s, 0, spec.shape[0]),
        )
        ax.set_ylabel("mel bin")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path, 100, force)
    plt.close(fig)
    return Path(path)


PLOT_FILES = ("metrics_vs_bitrate.png", "spectrograms.png")


def write_plots(result: EvalResult, out_dir: str | Path, force: bool = False) -> list[Path]:
    """Both plots of a run into ``out_dir`` (refused when they exist, unless ``force``);
    returns the files written."""
    out = Path(out_dir)
    written: list[Path] = []
    p = plot_metrics_vs_bitrate(result, out / PLOT_FILES[0], force)
    if p is not None:
        written.append(p)
    if result.examples:
        sigs = {("original" if k == "reference" else k): v for k, v in result.examples.items()}
        written.append(
            plot_spectrograms(sigs, out / PLOT_FILES[1], title=f"utterance {result.example_id}", force=force)
        )
    return written
