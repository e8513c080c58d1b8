"""The evaluation loop: every codec on every utterance, every metric on every output.

``evaluate_resynthesis(codecs, utterances, metrics)`` and ``evaluate_vc(codecs, pairs,
metrics)`` return an :class:`EvalResult`: per codec, the per-utterance rows and the corpus
summary (metric aggregates, nominal and measured bitrate, code usage and normalised entropy
for token codecs, RTF, peak memory), plus the no-reference metrics of the original audio
(the ``reference`` row, e.g. the paper's RefUTMOS).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio, resample, save_audio
from ..errors import FocalCodecError, InputError
from .baselines import Codec, Reconstruction
from .data import Utterance, VCPair
from .metrics import Metric, ResourceMeter, TokenStatistics, measured_bitrate, real_time_factor

__all__ = ["DEFAULT_METRICS", "EvalResult", "evaluate_resynthesis", "evaluate_vc"]

SAMPLE_RATE = 16000
DEFAULT_METRICS = {
    "resynth": ("pesq_wb", "pesq_nb", "stoi", "estoi", "mel_distance", "dwer", "sim", "utmos", "dnsmos", "distillmos"),
    "vc": ("dwer", "sim", "utmos", "dnsmos", "distillmos"),
}
INTRUSIVE_FOR_VC = ("pesq_wb", "pesq_nb", "stoi", "estoi", "mel_distance")


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "metrics": self.metrics,
            "data": self.data,
            "environment": self.environment,
            "reference": self.reference,
            "codecs": self.codecs,
        }


def _audio_path(root: Path, codec: Codec, name: str) -> Path:
    folder = Path(root) / "".join(c if c.isalnum() or c in "-_." else "_" for c in codec.name)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name.replace("/", "_")


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Cut or zero-pad a reconstruction to the reference's ``n`` samples."""
    return y[:n] if y.shape[0] >= n else np.pad(y, (0, n - y.shape[0]))


def _to_16k(rec: Reconstruction) -> np.ndarray:
    y = np.ascontiguousarray(rec.audio, dtype=np.float32).reshape(-1)
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
) -> None:
    for name, metric in metrics.items():
        r = refs_for.get(name, ref) if refs_for else ref
        try:
            values = metric(r if metric.needs_reference else None, hyp, SAMPLE_RATE, meta)
        except FocalCodecError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad utterance must not end a long run
            warnings.warn(f"metric {name} failed on {row.get('id')}: {type(exc).__name__}: {exc}", stacklevel=2)
            values = {k: float("nan") for k in metric.keys}
        for k, v in values.items():
            row[k if k in metric.keys else f"{name}.{k}"] = v


def _summarize(
    codec: Codec,
    rows: list[dict[str, Any]],
    metrics: Mapping[str, Metric],
    tokens: TokenStatistics | None,
    seconds: float,
    audio_s: float,
    bits: float | None,
    peak: int,
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
    for name, metric in metrics.items():
        agg = metric.aggregate(
            [{k.split(".", 1)[-1] if k.startswith(name + ".") else k: v for k, v in r.items()} for r in ok]
        )
        for key, value in agg.items():
            summary[key] = value
            summary[f"{key}_n"] = sum(
                1 for r in ok if isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))
            )
    if tokens is not None and tokens.num_tokens:
        summary.update(tokens.summary())
    return summary


def _reference_row(
    utts: Sequence[Any], audio: Callable[[Any], np.ndarray], metrics: Mapping[str, Metric]
) -> dict[str, Any]:
    nr = {n: m for n, m in metrics.items() if not m.needs_reference}
    if not nr:
        return {}
    rows = []
    for u in utts:
        row: dict[str, Any] = {"id": u.id}
        _score(nr, None, audio(u), u.fields(), row)
        rows.append(row)
    out: dict[str, Any] = {"codec": "reference (original audio)"}
    for _name, m in nr.items():
        out.update(m.aggregate(rows))
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


def _evaluate_codec(
    codec: Codec,
    jobs: Sequence[_Job],
    metrics: Mapping[str, Metric],
    result: EvalResult,
    audio_dir: Path | None,
    device: str,
    progress: bool,
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
            with ResourceMeter(device) as meter:
                rec = job.run()
            y = _fit(_to_16k(rec), job.x.shape[0])
        except FocalCodecError as exc:
            row["error"] = str(exc)
            rows.append(row)
            _progress(progress, f"[{codec.name}] {i + 1}/{len(jobs)} {job.id}: error: {exc}")
            continue
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
        _score(metrics, job.x, y, job.meta, row, job.refs_for)
        rows.append(row)
        if i == 0:
            result.examples[codec.name] = y
        if audio_dir is not None:
            save_audio(_audio_path(audio_dir, codec, job.audio_name), rec.audio, rec.sample_rate)
        _progress(progress, f"[{codec.name}] {i + 1}/{len(jobs)} {job.id}")
    summary = _summarize(codec, rows, metrics, tokens, seconds, audio_s, bits["num_bits"], peak)
    summary["file_bitrate"] = (
        measured_bitrate(bits["file_bits"], audio_s) if bits["file_bits"] is not None and audio_s > 0 else float("nan")
    )
    result.codecs[codec.name] = {"codec": codec.describe(), "summary": summary, "utterances": rows}


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
    progress: bool,
) -> EvalResult:
    """An empty result with the original audio's no-reference scores and the first input kept for plots."""
    if any(not m.needs_reference for m in metrics.values()):
        _progress(progress, f"[reference] scoring the original audio of {len(sources)} utterances")
    result = EvalResult(task, {n: dict(m.keys) for n, m in metrics.items()})
    result.example_id = example_id
    result.examples["reference"] = audio(sources[0])
    result.reference = _reference_row(sources, audio, metrics)
    return result


def evaluate_resynthesis(
    codecs: Sequence[Codec],
    utterances: Sequence[Utterance],
    metrics: Mapping[str, Metric],
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Resynthesis: each codec encodes and decodes each utterance; every metric compares the
    output (resampled to 16 kHz and cut to the input's length) with the input."""
    if not codecs or not utterances:
        raise InputError("nothing to evaluate: give at least one codec and one utterance")
    audio = _AudioCache()
    result = _new_result("resynth", metrics, utterances[0].id, utterances, audio, progress)
    for codec in codecs:
        jobs = [
            _Job(u.id, audio(u), u.fields(), {}, partial(codec.roundtrip, audio(u)), f"{u.id}.wav") for u in utterances
        ]
        _evaluate_codec(codec, jobs, metrics, result, audio_dir, device, progress)
    return result


def evaluate_vc(
    codecs: Sequence[Codec],
    pairs: Sequence[VCPair],
    metrics: Mapping[str, Metric],
    audio_dir: Path | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> EvalResult:
    """Voice conversion: each codec converts each source to its target's voice. dWER is
    measured against the source, speaker similarity against the target's references
    (concatenated); intrusive signal metrics are not meaningful here and are skipped."""
    metrics = {n: m for n, m in metrics.items() if n not in INTRUSIVE_FOR_VC}
    if not codecs or not pairs:
        raise InputError("nothing to evaluate: give at least one codec and one voice-conversion pair")
    audio = _AudioCache()
    result = _new_result("vc", metrics, pairs[0].id, [p.source for p in pairs], audio, progress)
    for codec in codecs:
        if not codec.supports_vc:
            warnings.warn(f"codec {codec.name} does not support voice conversion; skipped", stacklevel=2)
            continue
        jobs = []
        for p in pairs:
            refs = [audio(r) for r in p.references]
            info = {
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
        _evaluate_codec(codec, jobs, metrics, result, audio_dir, device, progress)
    return result
