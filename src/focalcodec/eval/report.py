"""Run reports: ``report.json`` (everything, per utterance included) and ``report.md`` (one
Markdown table, one row per codec plus the original audio's no-reference scores)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..outputs import write_text
from .harness import EvalResult

__all__ = ["COLUMN_TITLES", "markdown_table", "write_report"]

# value key -> (column title, decimals)
COLUMN_TITLES: dict[str, tuple[str, int]] = {
    "utmos": ("UTMOS", 2),
    "dnsmos_ovrl": ("DNSMOS OVRL", 2),
    "dnsmos_sig": ("DNSMOS SIG", 2),
    "dnsmos_bak": ("DNSMOS BAK", 2),
    "dnsmos_p808": ("DNSMOS P.808", 2),
    "distillmos": ("Distill-MOS", 2),
    "dwer": ("dWER %", 2),
    "dcer": ("dCER %", 2),
    "sim": ("Sim", 1),
    "pesq_wb": ("PESQ-WB", 2),
    "pesq_nb": ("PESQ-NB", 2),
    "stoi": ("STOI", 3),
    "estoi": ("ESTOI", 3),
    "mel_distance": ("log-mel dist", 3),
    "code_usage": ("code usage %", 1),
    "norm_entropy": ("norm. entropy %", 1),
    "rtf": ("RTF", 3),
    "peak_memory_mb": ("peak MB", 0),
}


def _fmt(value: Any, decimals: int) -> str:
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "-"
    return f"{v:.{decimals}f}"


def _columns(result: EvalResult) -> list[tuple[str, str, int]]:
    """(key, header, decimals) for every value present, with an arrow for its direction."""
    direction: dict[str, bool] = {k: hb for keys in result.metrics.values() for k, hb in keys.items()}
    direction.update({"code_usage": True, "norm_entropy": True, "rtf": False, "peak_memory_mb": False})
    present = set()
    for entry in result.codecs.values():
        present.update(entry["summary"])
    present.update(result.reference)
    cols = []
    for key, (title, dec) in COLUMN_TITLES.items():
        if key in present:
            arrow = " ↑" if direction.get(key, True) else " ↓"
            cols.append((key, title + arrow, dec))
    for key, hb in direction.items():  # metrics added by users
        if key in present and key not in COLUMN_TITLES:
            cols.append((key, key + (" ↑" if hb else " ↓"), 3))
    return cols


def markdown_table(result: EvalResult) -> str:
    """One row per codec (sorted by measured bitrate) plus the original audio's row."""
    cols = _columns(result)
    header = ["codec", "kbps nominal", "kbps payload", "kbps file"] + [c[1] for c in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows: list[Mapping[str, Any]] = []
    if result.reference:
        rows.append(result.reference)
    rows += sorted(
        (e["summary"] for e in result.codecs.values()),
        key=lambda s: (
            s.get("measured_bitrate")
            if math.isfinite(s.get("measured_bitrate", float("nan")))
            else s.get("nominal_bitrate", 0)
        ),
    )
    for s in rows:
        cells = [str(s.get("codec", "?"))]
        cells += [
            _fmt(s[k] / 1000, 2) if isinstance(s.get(k), (int, float)) else "-"
            for k in ("nominal_bitrate", "measured_bitrate", "file_bitrate")
        ]
        cells += [_fmt(s.get(k), d) for k, _, d in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_report(result: EvalResult, out_dir: str | Path, title: str = "FocalCodec evaluation") -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (created); returns their paths.
    Non-finite numbers become ``null`` in JSON and ``-`` in Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js = out / "report.json"
    write_text(js, json.dumps(_jsonable(result.to_dict()), indent=2, ensure_ascii=False) + "\n", force=True)
    data = result.data
    md_lines = [
        f"# {title}",
        "",
        f"Task: **{result.task}**; data: `{data.get('source', '?')}` ({data.get('utterances', '?')} items, "
        f"{_fmt(data.get('audio_seconds'), 1)} s).",
        "",
        markdown_table(result),
        "",
        "Bitrates in kbit/s; payload = coded bits actually produced / audio duration; file = the size of the file the "
        "codec writes (headers, container) / duration. RTF = processing time / audio time "
        "(lower is faster; below 1 is faster than real time). dWER/dCER pooled over utterances; other "
        "metrics are means. `-` = not available.",
    ]
    backends = result.environment.get("backends")
    if backends:
        md_lines += ["", "Metric backends: " + ", ".join(f"{k}: {v}" for k, v in backends.items()) + "."]
    failed = {n: e["summary"].get("failed", 0) for n, e in result.codecs.items() if e["summary"].get("failed")}
    if failed:
        md_lines += [
            "",
            "Failed utterances: " + ", ".join(f"{n}: {c}" for n, c in failed.items()) + " (see report.json).",
        ]
    md = out / "report.md"
    write_text(md, "\n".join(md_lines) + "\n", force=True)
    return {"json": js, "markdown": md}
