"""The evaluation loop: every codec on every utterance, every metric on every output.

``evaluate_resynthesis(codecs, utterances, metrics)`` and ``evaluate_vc(codecs, pairs,
metrics)`` return an :class:`EvalResult`: per codec, the per-utterance rows and the corpus
summary (metric aggregates with item counts and bootstrap 95 % intervals, nominal and measured
bitrate, the output's delay, code usage and normalised entropy with their token count for
token codecs, RTF, peak memory), per-language and per-subset summaries, plus what the
original audio scores (the ``reference`` row: the paper's RefUTMOS, the ASR's own WER against
the ground-truth text, speaker similarity between different speakers).

Resynthesis outputs are aligned before scoring: each output's delay is estimated
(:func:`focalcodec.eval.align.estimate_delay`) and every time-aligned metric (``align = True``:
PESQ, STOI, SI-SDR, mel and WORLD distances) gets the delay-compensated overlap of input and
output. Other metrics get the whole input and the output at the input's length.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import fit_length, load_audio, resample, save_audio
from ..errors import FocalCodecError, InputError
from .align import align_pair, estimate_delay
from .baselines import Codec, Reconstruction
from .data import Utterance, VCPair
from .metrics import Metric, ResourceMeter, TokenStatistics, measured_bitrate, real_time_factor
from .stats import finite

__all__ = ["DEFAULT_METRICS", "EvalResult", "evaluate_resynthesis", "evaluate_vc"]

SAMPLE_RATE = 16000
DEFAULT_METRICS = {
    "resynth": (
        "pesq_wb",
        "pesq_nb",
        "stoi",
        "estoi",
        "si_sdr",
        "mel_distance",
        "mcd_f0",
        "dwer",
        "sim",
        "utmos",
        "dnsmos",
        "distillmos",
    ),
    "vc": ("dwer", "sim", "utmos", "dnsmos", "distillmos"),
}
INTRUSIVE_FOR_VC = ("pesq_wb", "pesq_nb", "stoi", "estoi", "si_sdr", "mel_distance", "mcd_f0")
GROUP_FIELDS = ("lang", "subset")  # per-group summaries when a field takes several values
ROW_FIELDS = ("lang", "subset", "speaker")  # manifest fields copied into every row
MAX_DELAY_S = 0.5


@dataclass
class EvalResult:
    """Everything a report needs. ``codecs[name]`` = {"summary": {...}, "utterances": [...]};
    ``reference`` = summary of no-reference metrics on the original audio; ``examples``
    holds one utterance's audio per codec (16 kHz) for the spectrogram plot."""

    task: str
    metrics: dict[str, dict[str, bool]]
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, np.ndarray] = field(default_factory=dict)
    example_id: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metrics": self.metrics,
            "models": self.models,
            "skipped_metrics": self.skipped,
            "data": self.data,
            "environment": self.environment,
            "reference": self.reference,
            "codecs": self.codecs,
        }


def _audio_path(root: Path, codec: Codec, name: str) -> Path:
    folder = Path(root) / "".join(c if c.isalnum() or c in "-_." else "_" for c in codec.name)
    return folder / name.replace("/", "_")


def _to_16k(rec: Reconstruction) -> np.ndarray:
    y = np.ascontiguousarray(rec.audio, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise FocalCodecError("codec produced no samples")
    if not np.isfinite(y).all():
        raise FocalCodecError("codec produced NaN or infinite samples")
    return resample(y, rec.sample_rate, SAMPLE_RATE)


def _score(
    metrics: Mapping[str, Metric],
    ref: np.ndarray | None,
    hyp: np.ndarray,
    meta: Mapping[str, Any],
    row: dict[str, Any],
    refs_for: Mapping[str, np.ndarray] | None = None,
    aligned: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Every metric on one output; ``aligned`` = the delay-compensated (ref, hyp) overlap
    given to time-aligned metrics."""
    for name, metric in metrics.items():
        r, h = (refs_for.get(name, ref) if refs_for else ref), hyp
        if aligned is not None and metric.align and metric.needs_reference and name not in (refs_for or {}):
            r, h = aligned
        try:
            values = metric(r if metric.needs_reference else None, h, SAMPLE_RATE, meta)
        except FocalCodecError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad utterance must not end a long run
            warnings.warn(f"metric {name} failed on {row.get('id')}: {type(exc).__name__}: {exc}", stacklevel=2)
            values = {k: float("nan") for k in metric.keys} | {"skip": f"failed: {type(exc).__name__}: {exc}"}
        undefined = [k for k in metric.keys if k in values and not finite([values[k]]).size]
        if undefined and not values.get("skip"):  # never a NaN without a reason the report can list
            values["skip"] = f"{', '.join(undefined)} undefined (NaN)"
        for k, v in values.items():
            row[k if k in metric.keys else f"{name}.{k}"] = v


def _metric_rows(name: str, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the metric returned them (its extras without the ``name.`` prefix)."""
    p = name + "."
    return [{(k[len(p) :] if k.startswith(p) else k): v for k, v in r.items()} for r in rows]


def _metric_summary(metrics: Mapping[str, Metric], rows: Sequence[Mapping[str, Any]], n_boot: int) -> dict[str, Any]:
    """Aggregates with their item counts (``KEY_n``), bootstrap intervals (``KEY_ci``) and
    why items were left out (``NAME_skipped``: reason -> count)."""
    out: dict[str, Any] = {}
    for name, metric in metrics.items():
        mrows = _metric_rows(name, rows)
        out.update(metric.aggregate(mrows))
        cis = metric.intervals(mrows, n_boot=n_boot) if n_boot > 0 else {}
        for key in metric.keys:
            out[f"{key}_n"] = metric.count(mrows, key)
            if key in cis:
                out[f"{key}_ci"] = list(cis[key])
        reasons: dict[str, int] = {}
        for r in mrows:
            if r.get("skip"):
                reasons[str(r["skip"])] = reasons.get(str(r["skip"]), 0) + 1
        if reasons:
            out[f"{name}_skipped"] = reasons
    return out


def _groups(
    metrics: Mapping[str, Metric], rows: Sequence[Mapping[str, Any]], n_boot: int
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per-language and per-subset summaries (only for fields that take several values)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for fld in GROUP_FIELDS:
        values = sorted({str(r[fld]) for r in rows if r.get(fld)})
        if len(values) < 2:
            continue
        out[fld] = {}
        for v in values:
            sub = [r for r in rows if str(r.get(fld)) == v]
            out[fld][v] = {"items": len(sub), **_metric_summary(metrics, sub, n_boot)}
    return out


def _delay_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    d = finite([r.get("delay_ms") for r in rows])
    if not d.size:
        return {}
    methods: dict[str, int] = {}
    for r in rows:
        if "delay_method" in r:
            methods[str(r["delay_method"])] = methods.get(str(r["delay_method"]), 0) + 1
    return {
        "delay_ms": float(np.median(d)),
        "delay_ms_min": float(d.min()),
        "delay_ms_max": float(d.max()),
        "delay_ms_n": int(d.size),
        "delay_methods": methods,
    }


def _summarize(
    codec: Codec,
    rows: list[dict[str, Any]],
    metrics: Mapping[str, Metric],
    tokens: TokenStatistics | None,
    seconds: float,
    audio_s: float,
    bits: float | None,
    peak: int,
    n_boot: int,
) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    summary: dict[str, Any] = {
        "codec": codec.name,
        "nominal_bitrate": codec.nominal_bitrate,
        "measured_bitrate": measured_bitrate(bits, audio_s) if bits is not None and audio_s > 0 else float("nan"),
        "rtf": real_time_factor(processing_seconds=seconds, audio_seconds=audio_s),
        "peak_memory_mb": peak / 2**20,
        "utterances": len(ok),
        "failed": len(rows) - len(ok),
        "audio_seconds": audio_s,
    }
    summary.update(_delay_summary(ok))
    summary.update(_metric_summary(metrics, ok, n_boot))
    if tokens is not None and tokens.num_tokens:
        summary.update(tokens.summary())
    return summary


def _reference_row(
    utts: Sequence[Any], audio: Callable[[Any], np.ndarray], metrics: Mapping[str, Metric], n_boot: int
) -> dict[str, Any]:
    """What the original audio scores: no-reference metrics (RefUTMOS), per-utterance
    reference values (the ASR's WER against the ground-truth text) and corpus baselines
    (speaker similarity between different speakers)."""
    rows = []
    for u in utts:
        row: dict[str, Any] = {"id": u.id, **{k: v for k, v in u.fields().items() if k in ROW_FIELDS}}
        for name, metric in metrics.items():
            try:
                values = metric.reference_scores(audio(u), u.fields())
            except FocalCodecError:
                raise
            except Exception as exc:  # noqa: BLE001 - as in _score
                warnings.warn(f"metric {name} failed on the original {u.id}: {type(exc).__name__}: {exc}", stacklevel=2)
                values = {}
            for k, v in values.items():
                row[k if k in metric.keys else f"{name}.{k}"] = v
        rows.append(row)
    out: dict[str, Any] = {"codec": "reference (original audio)"}
    used = {n: m for n, m in metrics.items() if any(k in r for r in rows for k in m.keys)}
    summary = _metric_summary(used, rows, n_boot)
    out.update({k: v for k, v in summary.items() if not k.endswith("_n") or summary[k]})
    for name, metric in metrics.items():
        try:
            out.update(metric.reference_baseline([(u.id, audio(u), u.fields()) for u in utts]))
        except FocalCodecError:
            raise
        except Exception as exc:  # noqa: BLE001
            warnings.warn(f"metric {name}: reference baseline failed: {type(exc).__name__}: {exc}", stacklevel=2)
    groups = _groups(used, rows, n_boot)
    if groups:
        out["groups"] = groups
    return out


def _progress(enabled: bool, text: str) -> None:
    if enabled:
        print(text, flush=True)


@dataclass
class _Job:
    """One codec call: ``run()`` gives the output for input ``x`` (N,) at 16 kHz."""

    id: str
    x: np.ndarray
    meta: dict[str, Any]
    row: dict[str, Any]
    run: Callable[[], Reconstruction]
    audio_name: str
    refs_for: dict[str, np.ndarray] | None = None


@dataclass
class _Options:
    audio_dir: Path | None = None
    device: str = "cpu"
    progress: bool = False
    align: bool = True
    max_delay_s: float = MAX_DELAY_S
    n_boot: int = 1000


def _row_fields(u: Utterance) -> dict[str, Any]:
    fields = u.fields()
    return {"path": str(u.path), **{k: fields[k] for k in ROW_FIELDS if fields.get(k)}}


def _evaluate_codec(
    codec: Codec, jobs: Sequence[_Job], metrics: Mapping[str, Metric], result: EvalResult, opt: _Options
) -> None:
    rows: list[dict[str, Any]] = []
    tokens = TokenStatistics(codec.codebook_size) if codec.codebook_size else None
    seconds = audio_s = 0.0
    bits: dict[str, float | None] = {"num_bits": 0.0, "file_bits": 0.0}
    peak = 0
    for i, job in enumerate(jobs):
        dur = job.x.shape[0] / SAMPLE_RATE
        row: dict[str, Any] = {"id": job.id, "duration_s": dur, **job.row}
        try:
            with ResourceMeter(opt.device) as meter:
                rec = job.run()
            y_full = _to_16k(rec)
            y = fit_length(y_full, job.x.shape[0])
        except FocalCodecError as exc:
            row["error"] = str(exc)
            rows.append(row)
            _progress(opt.progress, f"[{codec.name}] {i + 1}/{len(jobs)} {job.id}: error: {exc}")
            continue
        aligned = None
        if opt.align and any(m.align and m.needs_reference for m in metrics.values()):
            delay = estimate_delay(job.x, y_full, SAMPLE_RATE, opt.max_delay_s)
            row.update(delay_ms=delay.ms, delay_samples=delay.samples, delay_method=delay.method)
            aligned = align_pair(job.x, y_full, delay.samples)
        seconds += meter.seconds
        audio_s += dur
        peak = max(peak, meter.peak_bytes)
        rtf = real_time_factor(processing_seconds=meter.seconds, audio_seconds=dur)
        row.update({"rtf": rtf, "peak_memory_mb": meter.peak_bytes / 2**20})
        for key in bits:
            value = getattr(rec, key)
            if value is None or bits[key] is None:
                bits[key] = None
                continue
            bits[key] += value  # type: ignore[operator]
            row[key] = int(value)
        if rec.num_bits is not None:
            row["bitrate"] = measured_bitrate(rec.num_bits, dur)
        if tokens is not None and rec.tokens is not None:
            tokens.update(rec.tokens)
        _score(metrics, job.x, y, job.meta, row, job.refs_for, aligned)
        rows.append(row)
        if i == 0:
            result.examples[codec.name] = y
        if opt.audio_dir is not None:
            # the command refused an existing report folder (or was given --force) before any work
            save_audio(_audio_path(opt.audio_dir, codec, job.audio_name), rec.audio, rec.sample_rate)
            row["audio"] = str(_audio_path(opt.audio_dir, codec, job.audio_name).relative_to(opt.audio_dir))
        _progress(opt.progress, f"[{codec.name}] {i + 1}/{len(jobs)} {job.id}")
    summary = _summarize(codec, rows, metrics, tokens, seconds, audio_s, bits["num_bits"], peak, opt.n_boot)
    summary["file_bitrate"] = (
        measured_bitrate(bits["file_bits"], audio_s) if bits["file_bits"] is not None and audio_s > 0 else float("nan")
    )
    entry: dict[str, Any] = {"codec": codec.describe(), "summary": summary, "utterances": rows}
    groups = _groups(metrics, [r for r in rows if "error" not in r], opt.n_boot)
    if groups:
        entry["groups"] = groups
    result.codecs[codec.name] = entry


class _AudioCache:
    def __init__(self) -> None:
        self._data: dict[Path, np.ndarray] = {}

    def __call__(self, u: Utterance) -> np.ndarray:
        if u.path not in self._data:
            self._data[u.path] = load_audio(u.path, SAMPLE_RATE).numpy()
        return self._data[u.path]


def _new_result(
    task: str,
    metrics: Mapping[str, Metric],
    example_id: str,
    sources: Sequence[Utterance],
    audio: _AudioCache,
    opt: _Options,
) -> EvalResult:
    """An empty result with what the original audio scores and the first input kept for plots."""
    _progress(opt.progress, f"[reference] scoring the original audio of {len(sources)} utterances")
    result = EvalResult(task, {n: dict(m.keys) for n, m in metrics.items()})
    result.models = {
        n: {
            "model": m.model or type(m).__name__,
            "paper": m.paper,
            "status": m.paper_status,
            "align": m.align and m.needs_reference,  # no-reference metrics see the whole output
        }
        for n, m in metrics.items()
    }
    result.example_id = example_id
    result.examples["reference"] = audio(sources[0])
    result.reference = _reference_row(sources, audio, metrics, opt.n_boot)
    return result


def evaluate_resynthesis(
    codecs: Sequence[Codec],
    utterances: Sequence[Utterance],
    metrics: Mapping[str, Metric],
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    align: bool = True,
    max_delay_s: float = MAX_DELAY_S,
    n_boot: int = 1000,
) -> EvalResult:
    """Resynthesis: each codec encodes and decodes each utterance; every metric compares the
    output (resampled to 16 kHz) with the input. With ``align`` (default) the output's delay
    is estimated within ``±max_delay_s`` and time-aligned metrics see the compensated overlap.
    ``n_boot`` bootstrap resamples give the 95 % intervals (0: none)."""
    if not codecs or not utterances:
        raise InputError("nothing to evaluate: give at least one codec and one utterance")
    opt = _Options(audio_dir, device, progress, align, max_delay_s, n_boot)
    audio = _AudioCache()
    result = _new_result("resynth", metrics, utterances[0].id, utterances, audio, opt)
    for codec in codecs:
        jobs = [
            _Job(u.id, audio(u), u.fields(), _row_fields(u), partial(codec.roundtrip, audio(u)), f"{u.id}.wav")
            for u in utterances
        ]
        _evaluate_codec(codec, jobs, metrics, result, opt)
    return result


def evaluate_vc(
    codecs: Sequence[Codec],
    pairs: Sequence[VCPair],
    metrics: Mapping[str, Metric],
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = False,
    n_boot: int = 1000,
) -> EvalResult:
    """Voice conversion: each codec converts each source to its target's voice. dWER is
    measured against the source, speaker similarity against the target's references
    (concatenated); intrusive signal metrics are not meaningful here and are skipped."""
    metrics = {n: m for n, m in metrics.items() if n not in INTRUSIVE_FOR_VC}
    if not codecs or not pairs:
        raise InputError("nothing to evaluate: give at least one codec and one voice-conversion pair")
    opt = _Options(audio_dir, device, progress, False, MAX_DELAY_S, n_boot)
    audio = _AudioCache()
    result = _new_result("vc", metrics, pairs[0].id, [p.source for p in pairs], audio, opt)
    for codec in codecs:
        if not codec.supports_vc:
            warnings.warn(f"codec {codec.name} does not support voice conversion; skipped", stacklevel=2)
            continue
        jobs = []
        for p in pairs:
            refs = [audio(r) for r in p.references]
            info = {
                **_row_fields(p.source),
                "source": p.source.id,
                "target_speaker": p.target_speaker,
                "references": [r.id for r in p.references],
            }
            jobs.append(
                _Job(
                    p.id,
                    audio(p.source),
                    p.source.fields(),
                    info,
                    partial(codec.convert, audio(p.source), refs),
                    f"{p.source.id}_to_{p.target_speaker}.wav",
                    {"sim": np.concatenate(refs)},
                )
            )
        _evaluate_codec(codec, jobs, metrics, result, opt)
    return result
