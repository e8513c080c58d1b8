"""Run reports: ``report.json`` (everything, per utterance included) and ``report.md``.

The Markdown report says what each figure is: one row per value and one column per codec
(original audio first, codecs by bitrate), each cell the corpus value with its bootstrap 95 %
interval; the number of items behind each value; the model that computed it and whether that
is the paper's model; each output's delay; metrics and items that were skipped and why;
Whisper repetition loops; token statistics with their token count; speaker similarity between
different speakers of the original audio; and the same table per language and per subset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..outputs import write_json, write_text
from .harness import EvalResult

__all__ = ["COLUMN_TITLES", "markdown_report", "markdown_table", "ordered_codecs", "write_report"]

# value key -> (title, decimals)
COLUMN_TITLES: dict[str, tuple[str, int]] = {
    "utmos": ("UTMOS", 2),
    "dnsmos_ovrl": ("DNSMOS OVRL", 2),
    "dnsmos_sig": ("DNSMOS SIG", 2),
    "dnsmos_bak": ("DNSMOS BAK", 2),
    "dnsmos_p808": ("DNSMOS P.808", 2),
    "distillmos": ("Distill-MOS", 2),
    "dwer": ("dWER %", 2),
    "dwer_median": ("dWER median %", 2),
    "dwer_capped": ("dWER capped %", 2),
    "dcer": ("dCER %", 2),
    "wer": ("WER vs text %", 2),
    "sim": ("Sim", 1),
    "pesq_wb": ("PESQ-WB", 2),
    "pesq_nb": ("PESQ-NB", 2),
    "stoi": ("STOI", 3),
    "estoi": ("ESTOI", 3),
    "si_sdr": ("SI-SDR dB", 1),
    "mel_distance": ("log-mel dist", 3),
    "mcd": ("MCD dB", 2),
    "f0_rmse": ("F0 RMSE cents", 0),
    "f0_corr": ("F0 corr", 3),
    "vde": ("voicing err %", 1),
    "code_usage": ("code usage %", 1),
    "norm_entropy": ("norm. entropy %", 1),
    "rtf": ("RTF", 3),
    "peak_memory_mb": ("peak MB", 0),
}


def _fmt(value: Any, decimals: int) -> str:
    if value is None or isinstance(value, bool):
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "-"
    return f"{v:.{decimals}f}"


def _cell(s: Mapping[str, Any], key: str, decimals: int, show_n: bool) -> str:
    text = _fmt(s.get(key), decimals)
    if text == "-":
        return text
    ci = s.get(f"{key}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_fmt(c, decimals) != "-" for c in ci):
        text += f" [{_fmt(ci[0], decimals)}, {_fmt(ci[1], decimals)}]"
    if show_n and f"{key}_n" in s:
        text += f" (n={s[f'{key}_n']})"
    return text


def _bitrate(s: Mapping[str, Any]) -> float:
    b = s.get("measured_bitrate")
    if not isinstance(b, (int, float)) or not math.isfinite(b):
        b = s.get("nominal_bitrate")
    return float(b) if isinstance(b, (int, float)) and math.isfinite(b) else float("inf")


def ordered_codecs(result: EvalResult) -> list[str]:
    """Codec names by bitrate (measured, else nominal)."""
    return sorted(result.codecs, key=lambda n: _bitrate(result.codecs[n]["summary"]))


def _metric_of(result: EvalResult) -> dict[str, str]:
    return {k: name for name, keys in result.metrics.items() for k in keys}


def _direction(result: EvalResult) -> dict[str, bool]:
    d = {k: hb for keys in result.metrics.values() for k, hb in keys.items()}
    d.update({"code_usage": True, "norm_entropy": True, "rtf": False, "peak_memory_mb": False})
    return d


def markdown_table(
    result: EvalResult,
    columns: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
    keys: Sequence[str] | None = None,
    bitrates: bool = True,
) -> str:
    """One row per value, one column per summary (default: the original audio, then each
    codec by bitrate). Cells: value [95 % interval]; the ``n`` column gives the items behind
    the value when all columns agree, else each cell carries its own ``(n=...)``."""
    if columns is None:
        columns = []
        if result.reference:
            columns.append(("original audio", result.reference))
        columns += [(n, result.codecs[n]["summary"]) for n in ordered_codecs(result)]
    direction, metric_of = _direction(result), _metric_of(result)
    present = {k for _, s in columns for k in s}
    if keys is None:
        keys = [k for k in COLUMN_TITLES if k in present]
        keys += [k for k in direction if k in present and k not in COLUMN_TITLES]
    header = ["value", "model"] + ["n"] + [name for name, _ in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    if bitrates:
        for key, title in (("nominal_bitrate", "kbps nominal"), ("measured_bitrate", "kbps payload")):
            lines.append(f"| {title} | | | " + " | ".join(_kbps(s.get(key)) for _, s in columns) + " |")
        lines.append("| kbps file | | | " + " | ".join(_kbps(s.get("file_bitrate")) for _, s in columns) + " |")
        if any("delay_ms" in s for _, s in columns):
            cells = [_delay(s) for _, s in columns]
            lines.append("| delay ms, median (range) | align | | " + " | ".join(cells) + " |")
    for key in keys:
        if not any(_fmt(s.get(key), 3) != "-" for _, s in columns):
            continue
        title, dec = COLUMN_TITLES.get(key, (key, 3))
        arrow = " ↑" if direction.get(key, True) else " ↓"
        counts = {s.get(f"{key}_n") for _, s in columns if _fmt(s.get(key), dec) != "-"}
        same = len(counts) == 1
        n = str(next(iter(counts))) if same and None not in counts else ""
        name = metric_of.get(key, "")
        model = result.models.get(name, {}).get("model", "") if name else ""
        cells = [_cell(s, key, dec, not same) for _, s in columns]
        lines.append(f"| {title}{arrow} | {model} | {n} | " + " | ".join(cells) + " |")
    if any("num_tokens" in s for _, s in columns):
        cells = [str(s["num_tokens"]) if "num_tokens" in s else "-" for _, s in columns]
        lines.append("| tokens behind code usage | | | " + " | ".join(cells) + " |")
        cells = [_fmt(s.get("code_usage_ceiling"), 1) for _, s in columns]
        lines.append("| code usage of a uniform code, same tokens % | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kbps(v: Any) -> str:
    return _fmt(float(v) / 1000, 2) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _delay(s: Mapping[str, Any]) -> str:
    if "delay_ms" not in s:
        return "-"
    return f"{s['delay_ms']:.1f} ({s['delay_ms_min']:.1f} to {s['delay_ms_max']:.1f})"


def _models_section(result: EvalResult) -> list[str]:
    if not result.models:
        return []
    lines = [
        "## What computed each figure",
        "",
        "| metric | model used | paper's model | comparable with the paper | time-aligned |",
        "|---|---|---|---|---|",
    ]
    for name, m in result.models.items():
        status = m.get("status", "")
        comparable = "yes" if status == "same as the paper" else ("NO" if m.get("paper") else "not in the paper")
        lines.append(
            f"| {name} | {m.get('model', '')} | {m.get('paper') or '-'} | {comparable} | "
            f"{'yes' if m.get('align') else 'no'} |"
        )
    if any(m.get("paper") and m.get("status") != "same as the paper" for m in result.models.values()):
        lines += [
            "",
            "Figures marked NO come from a substitute for the paper's model: do not set them beside the paper's "
            "numbers.",
        ]
    return lines + [""]


def _skipped_section(result: EvalResult) -> list[str]:
    lines: list[str] = []
    for name, reason in result.skipped.items():
        lines.append(f"- metric `{name}` not computed: {reason}")
    for label, s in [("original audio", result.reference)] + [
        (n, result.codecs[n]["summary"]) for n in ordered_codecs(result)
    ]:
        for key, value in s.items():
            if key.endswith("_skipped") and isinstance(value, Mapping):
                for reason, count in value.items():
                    lines.append(f"- {label}, `{key[: -len('_skipped')]}`: {count} item(s) left out: {reason}")
        if s.get("failed"):
            lines.append(f"- {label}: {s['failed']} item(s) failed in the codec (see report.json)")
    return (["## Skipped metrics and items", ""] + lines + [""]) if lines else []


def _loops_section(result: EvalResult) -> list[str]:
    lines = []
    for name in ordered_codecs(result):
        rows = result.codecs[name]["utterances"]
        loops = [r["id"] for r in rows if r.get("dwer.loop")]
        if loops:
            lines.append(f"- {name}: {len(loops)} of {len(rows)} transcripts flagged ({', '.join(loops[:8])})")
    if not lines:
        return []
    return [
        "## Whisper repetition loops",
        "",
        "A transcript that repeats a phrase 4+ times (more than the original's transcript does) or holds more than "
        "twice its words + 10 is flagged. `dWER capped` counts at most as many insertions per item as the "
        "original's transcript has words; `dWER median` is the median item.",
        "",
        *lines,
        "",
    ]


def _notes_section(result: EvalResult) -> list[str]:
    lines = []
    ref = result.reference
    for key, label in (
        ("sim_other_speaker", "different speakers"),
        ("sim_same_speaker", "the same speaker, different utterances"),
    ):
        if key in ref:
            ci = ref.get(f"{key}_ci") or [None, None]
            lines.append(
                f"- Speaker similarity of the original audio between {label}: {_fmt(ref[key], 1)} "
                f"[{_fmt(ci[0], 1)}, {_fmt(ci[1], 1)}] over {ref.get(f'{key}_n')} pairs "
                f"({result.models.get('sim', {}).get('model', '')})."
            )
    if "wer" in ref and _fmt(ref.get("wer"), 2) != "-":
        lines.append(
            f"- The ASR's own WER on the original audio against the ground-truth text: {_fmt(ref['wer'], 2)} % "
            f"over {ref.get('wer_n')} items ({result.models.get('dwer', {}).get('model', '')})."
        )
    for name in ordered_codecs(result):
        warning = result.codecs[name]["summary"].get("token_warning")
        if warning:
            lines.append(f"- {name}: {warning}.")
    return (["## Context", ""] + lines + [""]) if lines else []


def _groups_section(result: EvalResult) -> list[str]:
    fields: dict[str, set[str]] = {}
    for entry in list(result.codecs.values()) + [{"groups": result.reference.get("groups", {})}]:
        for fld, groups in entry.get("groups", {}).items():
            fields.setdefault(fld, set()).update(groups)
    lines: list[str] = []
    names = ordered_codecs(result)
    for fld, values in fields.items():
        lines += [f"## Per {fld}", ""]
        for v in sorted(values):
            columns: list[tuple[str, Mapping[str, Any]]] = []
            ref_group = result.reference.get("groups", {}).get(fld, {}).get(v)
            if ref_group:
                columns.append(("original audio", ref_group))
            columns += [(n, result.codecs[n].get("groups", {}).get(fld, {}).get(v, {})) for n in names]
            items = max((int(s.get("items", 0)) for _, s in columns), default=0)
            lines += [f"### {fld} = {v} ({items} items)", "", markdown_table(result, columns, bitrates=False), ""]
    return lines


def markdown_report(result: EvalResult, title: str = "FocalCodec evaluation") -> str:
    data = result.data
    lines = [
        f"# {title}",
        "",
        f"Task: **{result.task}**; data: `{data.get('source', '?')}` ({data.get('utterances', '?')} items, "
        f"{_fmt(data.get('audio_seconds'), 1)} s).",
        "",
        markdown_table(result),
        "",
        "Cells: corpus value [bootstrap 95 % interval over items]; `n` = items behind the value. Bitrates in "
        "kbit/s: payload = coded bits / duration, file = the file the codec writes (headers, container) / "
        "duration. Delay: how far each output lags its input, estimated per item and compensated before every "
        "time-aligned metric. dWER/dCER/WER are pooled over items (total edits / total words), other values are "
        "means. RTF = processing time / audio time (lower is faster). `-` = not available.",
        "",
    ]
    lines += _models_section(result)
    lines += _notes_section(result)
    lines += _loops_section(result)
    lines += _skipped_section(result)
    lines += _groups_section(result)
    return "\n".join(lines).rstrip() + "\n"


def write_report(
    result: EvalResult, out_dir: str | Path, title: str = "FocalCodec evaluation", force: bool = False
) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (through
    :mod:`focalcodec.outputs`: refused when they exist, unless ``force``); returns their paths.
    Non-finite numbers become ``null`` in JSON and ``-`` in Markdown."""
    out = Path(out_dir)
    js = write_json(out / "report.json", result.to_dict(), force)
    md = write_text(out / "report.md", markdown_report(result, title), force)
    return {"json": js, "markdown": md}
