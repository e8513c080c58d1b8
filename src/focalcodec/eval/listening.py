"""MUSHRA listening tests (ITU-R BS.1534-3) built from an evaluation run.

- :func:`build_test`: from a ``focalcodec evaluate --save-audio`` run, a test folder holding
  ``test.json`` and loudness-matched 16-bit WAV stimuli: per item the reference, the hidden
  reference, the 3.5 kHz low-pass anchor (and optionally the 7 kHz one) and every codec's
  output, delay-compensated with the delay the evaluation measured. File names are opaque
  tokens, so a rater cannot tell the systems apart from the page or the network.
- :func:`rater_plan`: the trials in the rater's own random order, stimuli shuffled within each
  trial; derived from the rater's name, so a rater who closes the page resumes the same plan.
- :class:`RatingStore`: SQLite; every rating is stored as it is given (one row per slider
  release), trials are marked complete when the rater moves on.
- :func:`analyze`: the last rating of each stimulus in each completed trial; post-screening
  (BS.1534-3 §4.1.2: raters who score the hidden reference below 90 in more than 15 % of their
  trials are excluded); mean and 95 % t interval per system; the paper's Fig. 2 plots (score
  against bitrate, score distributions).

The web server lives in :mod:`focalcodec.eval.listen_server`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_audio, save_audio
from ..errors import InputError
from ..outputs import check_targets, open_output, output_path, write_json, write_text
from .align import compensate

__all__ = [
    "ANCHORS",
    "REFERENCE",
    "RatingStore",
    "analyze",
    "build_test",
    "export_csv",
    "load_test",
    "low_pass",
    "open_store",
    "rater_plan",
    "write_analysis",
]

SAMPLE_RATE = 16000
REFERENCE = "reference"  # the hidden reference's system name
ANCHORS = {"anchor_3.5k": 3500.0, "anchor_7k": 7000.0}
LOUDNESS_LUFS = -26.0
PEAK_LIMIT = 0.98
SCREEN_SCORE, SCREEN_FRACTION = 90, 0.15
RATER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
TEST_FILE = "test.json"
DB_FILE = "ratings.sqlite"


# -- building -------------------------------------------------------------------------------------------
def low_pass(x: np.ndarray, cutoff: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Zero-phase low-pass (Butterworth order 10, applied forward and backward) at ``cutoff``
    Hz: BS.1534-3's anchors. Returns ``x`` unchanged when ``cutoff`` is at or above Nyquist."""
    from scipy.signal import butter, sosfiltfilt

    if cutoff >= sample_rate / 2:
        return np.asarray(x, dtype=np.float32).copy()
    sos = butter(10, cutoff, btype="low", fs=sample_rate, output="sos")
    return sosfiltfilt(sos, np.asarray(x, dtype=np.float64)).astype(np.float32)


def _loudness(x: np.ndarray) -> float:
    import pyloudnorm

    return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(np.asarray(x, dtype=np.float64)))


def _token(secret: str, *parts: str) -> str:
    return hashlib.sha256("\x00".join((secret, *parts)).encode()).hexdigest()[:16]


@dataclass
class _Item:
    id: str
    path: Path
    duration: float
    rows: dict[str, Mapping[str, Any]]


def _items(report: Mapping[str, Any], run: Path, systems: Sequence[str]) -> list[_Item]:
    by_id: dict[str, dict[str, Mapping[str, Any]]] = {}
    for name in systems:
        for row in report["codecs"][name]["utterances"]:
            if "error" not in row and row.get("audio") and row.get("path"):
                by_id.setdefault(row["id"], {})[name] = row
    out = []
    for uid, rows in by_id.items():
        if len(rows) == len(systems):
            first = next(iter(rows.values()))
            out.append(_Item(uid, Path(first["path"]), float(first.get("duration_s", 0.0)), rows))
    return out


def build_test(
    run_dir: str | Path,
    out_dir: str | Path,
    systems: Sequence[str] | None = None,
    items: Sequence[str] | None = None,
    num_items: int = 10,
    max_duration: float = 12.0,
    anchor_7k: bool = False,
    loudness: float = LOUDNESS_LUFS,
    seed: int = 0,
    title: str = "Speech codec listening test (MUSHRA)",
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Build a MUSHRA test folder ``out_dir`` from the evaluation run in ``run_dir`` (which
    needs ``report.json`` and the ``audio/`` written by ``--save-audio``). ``systems``: codec
    names of the run (default: all); ``items``: utterance ids (default: ``num_items`` drawn
    with ``seed`` among those at most ``max_duration`` s long). Every stimulus is resampled to
    16 kHz, delay-compensated, cut to the reference's length and set to ``loudness`` LUFS
    (ITU-R BS.1770); a trial whose loudest stimulus would clip is turned down as a whole."""

    run = Path(run_dir)
    report_path = run / "report.json"
    if not report_path.is_file():
        raise InputError(f"{report_path} not found: give the output folder of a focalcodec evaluate run")
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{report_path} is not valid JSON ({exc.msg})") from None
    if report.get("task") != "resynth":
        raise InputError("a listening test needs a resynthesis run (focalcodec evaluate --task resynth)")
    codecs = report.get("codecs", {})
    systems = list(systems or codecs)
    unknown = [s for s in systems if s not in codecs]
    if unknown:
        raise InputError(f"system(s) {', '.join(unknown)} not in {report_path}; the run has: {', '.join(codecs)}")
    if REFERENCE in systems or any(s in ANCHORS for s in systems):
        raise InputError(f"codec names {REFERENCE!r} and {', '.join(ANCHORS)} are reserved for the test's own stimuli")
    out = Path(out_dir)
    check_targets([out], [run], force)
    if (out / DB_FILE).exists():
        raise InputError(f"{out} holds ratings ({DB_FILE}); move them away before rebuilding, --force or not")
    pool = _items(report, run, systems)
    if not pool:
        raise InputError(
            f"no utterance of {run} has saved audio for every system; run focalcodec evaluate with --save-audio"
        )
    if items:
        chosen = [i for i in pool if i.id in set(items)]
        missing = sorted(set(items) - {i.id for i in chosen})
        if missing:
            raise InputError(f"item(s) {', '.join(missing)} have no saved audio for every system in {run}")
    else:
        short = [i for i in pool if i.duration <= max_duration]
        if not short:
            raise InputError(f"no item is at most {max_duration} s long (use --max-duration)")
        chosen = random.Random(seed).sample(short, min(num_items, len(short)))
    secret = hashlib.sha256(f"{report_path.resolve()}:{time.time_ns()}:{seed}".encode()).hexdigest()
    anchors = {k: v for k, v in ANCHORS.items() if anchor_7k or k == "anchor_3.5k"}
    meta: dict[str, Any] = {
        "version": 1,
        "id": secret[:16],
        "title": title,
        "source": str(run.resolve()),
        "sample_rate": SAMPLE_RATE,
        "loudness_lufs": loudness,
        "systems": {REFERENCE: {"kind": "hidden reference"}},
        "trials": [],
    }
    for k, cutoff in anchors.items():
        meta["systems"][k] = {"kind": "anchor", "cutoff_hz": cutoff}
    for s in systems:
        summary = codecs[s].get("summary", {})
        rate = summary.get("measured_bitrate") or summary.get("nominal_bitrate")
        meta["systems"][s] = {"kind": "codec", "bitrate": rate, "nominal_bitrate": summary.get("nominal_bitrate")}
    with output_path(out, force=force, inputs=[run], folder=True) as tmp:
        (tmp / "audio").mkdir()
        for n, item in enumerate(sorted(chosen, key=lambda i: i.id), 1):
            if progress:
                print(f"[listen] item {n}/{len(chosen)}: {item.id}", flush=True)
            ref = load_audio(item.path, SAMPLE_RATE).numpy()
            signals = {REFERENCE: ref}
            signals.update({k: low_pass(ref, c) for k, c in anchors.items()})
            for s in systems:
                row = item.rows[s]
                y = load_audio(run / "audio" / row["audio"], SAMPLE_RATE).numpy()
                signals[s] = compensate(y, int(row.get("delay_samples", 0)), ref.shape[0])
            gains = {}
            for name, x in signals.items():
                level = _loudness(x)
                if not math.isfinite(level):
                    raise InputError(f"item {item.id}: {name} is silent or shorter than 0.4 s; choose other items")
                gains[name] = 10 ** ((loudness - level) / 20)
            peak = max(float(np.abs(x).max()) * gains[name] for name, x in signals.items())
            trim = min(1.0, PEAK_LIMIT / peak) if peak > 0 else 1.0
            trial = {"id": f"t{n:02d}", "item": item.id, "duration_s": ref.shape[0] / SAMPLE_RATE}
            trial["trim_db"] = 20 * math.log10(trim)
            trial["reference"] = _token(secret, item.id, "labelled reference")
            trial["stimuli"] = {name: _token(secret, item.id, name) for name in signals}
            names = {trial["reference"]: REFERENCE} | {token: name for name, token in trial["stimuli"].items()}
            for token, name in names.items():
                save_audio(tmp / "audio" / f"{token}.wav", signals[name] * gains[name] * trim, SAMPLE_RATE)
            meta["trials"].append(trial)
        write_json(tmp / TEST_FILE, meta)
    return out


def load_test(test_dir: str | Path) -> dict[str, Any]:
    """The ``test.json`` of a test folder made by :func:`build_test`."""
    path = Path(test_dir) / TEST_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: give a folder made by focalcodec listen build")
    try:
        test = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg})") from None
    if test.get("version") != 1 or not test.get("trials"):
        raise InputError(f"{path} is not a listening test of this version (rebuild it with focalcodec listen build)")
    return test


def check_rater(rater: str) -> str:
    rater = str(rater).strip()
    if not RATER_RE.match(rater):
        raise InputError("a rater name is 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit")
    return rater


def rater_plan(test: Mapping[str, Any], rater: str) -> list[dict[str, Any]]:
    """The rater's trials in their own random order, each with its stimuli shuffled: a list of
    ``{"id", "reference": token, "stimuli": [token, ...]}``. Depends only on the test and the
    rater's name (so the same plan comes back on resume); no system names."""
    rng = random.Random(hashlib.sha256(f"{test['id']}\x00{check_rater(rater)}".encode()).digest())
    trials = list(test["trials"])
    rng.shuffle(trials)
    plan = []
    for t in trials:
        tokens = list(t["stimuli"].values())
        rng.shuffle(tokens)
        plan.append({"id": t["id"], "reference": t["reference"], "stimuli": tokens})
    return plan


# -- ratings --------------------------------------------------------------------------------------------
_SCHEMA = """
CREATE TABLE test (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE raters (rater TEXT PRIMARY KEY, started REAL NOT NULL, user_agent TEXT);
CREATE TABLE ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT, rater TEXT NOT NULL, trial TEXT NOT NULL, stimulus TEXT NOT NULL,
    system TEXT NOT NULL, score INTEGER NOT NULL CHECK (score BETWEEN 0 AND 100), created REAL NOT NULL
);
CREATE TABLE completed (rater TEXT NOT NULL, trial TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (rater, trial));
"""


class RatingStore:
    """The ratings of one test in SQLite (``ratings.sqlite`` in the test folder by default).

    Created (atomically) on first use, refused when it belongs to another test. ``rate``
    appends one row per rating as given; ``complete`` marks a trial done once every stimulus
    has a rating; ``state`` gives a rater's ratings so far (to resume)."""

    def __init__(self, test: Mapping[str, Any], path: str | Path) -> None:
        self.test = test
        self.path = Path(path)
        self._systems = {t["id"]: {tok: name for name, tok in t["stimuli"].items()} for t in test["trials"]}
        self._item = {t["id"]: t["item"] for t in test["trials"]}
        if not self.path.exists():
            with output_path(self.path) as tmp, closing(sqlite3.connect(tmp)) as db:
                db.executescript(_SCHEMA)
                db.execute("INSERT INTO test VALUES ('id', ?)", (test["id"],))
                db.commit()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            found = self.db.execute("SELECT value FROM test WHERE key = 'id'").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise InputError(f"{self.path} is not a ratings database ({exc})") from None
        if not found or found[0] != test["id"]:
            self.db.close()
            raise InputError(f"{self.path} holds the ratings of another test; give another --db")
        self.db.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        self.db.close()

    def _system(self, trial: str, stimulus: str) -> str:
        if trial not in self._systems:
            raise InputError(f"unknown trial {trial!r}")
        system = self._systems[trial].get(stimulus)
        if system is None:
            raise InputError(f"stimulus {stimulus!r} is not part of trial {trial!r}")
        return system

    def start(self, rater: str, user_agent: str = "") -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO raters VALUES (?, ?, ?)", (check_rater(rater), time.time(), user_agent[:300])
        )

    def rate(self, rater: str, trial: str, stimulus: str, score: Any) -> None:
        rater = check_rater(rater)
        system = self._system(trial, stimulus)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 <= score <= 100:
            raise InputError(f"a score is a number from 0 to 100, got {score!r}")
        if score != int(score):
            raise InputError(f"a score is a whole number, got {score!r}")
        self.start(rater)
        self.db.execute(
            "INSERT INTO ratings (rater, trial, stimulus, system, score, created) VALUES (?, ?, ?, ?, ?, ?)",
            (rater, trial, stimulus, system, int(score), time.time()),
        )

    def latest(self, rater: str | None = None) -> dict[tuple[str, str, str], int]:
        """``{(rater, trial, system): last score}``."""
        sql = "SELECT rater, trial, system, score FROM ratings WHERE id IN (SELECT MAX(id) FROM ratings"
        sql += " WHERE rater = ? GROUP BY rater, trial, system)" if rater else " GROUP BY rater, trial, system)"
        rows = self.db.execute(sql, (rater,) if rater else ()).fetchall()
        return {(r, t, s): int(v) for r, t, s, v in rows}

    def complete(self, rater: str, trial: str) -> None:
        rater = check_rater(rater)
        if trial not in self._systems:
            raise InputError(f"unknown trial {trial!r}")
        rated = {s for (_, t, s) in self.latest(rater) if t == trial}
        missing = set(self._systems[trial].values()) - rated
        if missing:
            raise InputError(f"trial {trial}: {len(missing)} stimulus/stimuli not rated yet")
        self.db.execute("INSERT OR IGNORE INTO completed VALUES (?, ?, ?)", (rater, trial, time.time()))

    def completed(self, rater: str | None = None) -> set[tuple[str, str]]:
        sql = "SELECT rater, trial FROM completed" + (" WHERE rater = ?" if rater else "")
        return {(r, t) for r, t in self.db.execute(sql, (rater,) if rater else ()).fetchall()}

    def state(self, rater: str) -> dict[str, Any]:
        """``{"done": [trial ids], "ratings": {trial: {stimulus token: score}}}``."""
        rater = check_rater(rater)
        tokens = {t["id"]: t["stimuli"] for t in self.test["trials"]}
        ratings: dict[str, dict[str, int]] = {}
        for (_, trial, system), score in self.latest(rater).items():
            ratings.setdefault(trial, {})[tokens[trial][system]] = score
        return {"done": sorted(t for _, t in self.completed(rater)), "ratings": ratings}

    def events(self) -> Iterator[tuple[Any, ...]]:
        """Every rating as given: ``(id, time, rater, trial, item, system, stimulus, score, trial completed)``."""
        done = self.completed()
        for rid, created, rater, trial, system, stimulus, score in self.db.execute(
            "SELECT id, created, rater, trial, system, stimulus, score FROM ratings ORDER BY id"
        ):
            yield rid, created, rater, trial, self._item[trial], system, stimulus, score, (rater, trial) in done


@contextmanager
def open_store(test_dir: str | Path, db: str | Path | None = None) -> Iterator[RatingStore]:
    test = load_test(test_dir)
    store = RatingStore(test, db or Path(test_dir) / DB_FILE)
    try:
        yield store
    finally:
        store.close()


EXPORT_COLUMNS = ("rating_id", "time_unix", "rater", "trial", "item", "system", "stimulus", "score", "trial_completed")


def export_csv(test_dir: str | Path, out: str | Path, db: str | Path | None = None, force: bool = False) -> int:
    """Every rating as given, one CSV row each (``"-"`` = standard output); returns the count."""
    load_test(test_dir)
    db_path = Path(db) if db else Path(test_dir) / DB_FILE
    if not db_path.is_file():
        raise InputError(f"no ratings yet: {db_path} does not exist")
    check_targets([out], [db_path], force)
    with open_store(test_dir, db_path) as store:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        n = 0
        for event in store.events():
            writer.writerow(event)
            n += 1
    with open_output(out, "w", force=force, inputs=[db_path]) as f:
        f.write(buf.getvalue())
    return n


# -- analysis -------------------------------------------------------------------------------------------
def post_screen(
    scores: Mapping[tuple[str, str, str], int], score: int = SCREEN_SCORE, fraction: float = SCREEN_FRACTION
) -> dict[str, dict[str, Any]]:
    """BS.1534-3 post-screening from final scores ``{(rater, trial, system): score}``: a rater
    is excluded when the hidden reference scores below ``score`` in more than ``fraction`` of
    their trials. Returns ``{rater: {"trials", "reference_below", "fraction", "excluded"}}``."""
    out: dict[str, dict[str, Any]] = {}
    for (rater, _trial, system), value in scores.items():
        if system != REFERENCE:
            continue
        entry = out.setdefault(rater, {"trials": 0, "reference_below": 0})
        entry["trials"] += 1
        entry["reference_below"] += int(value < score)
    for entry in out.values():
        entry["fraction"] = entry["reference_below"] / entry["trials"]
        entry["excluded"] = entry["fraction"] > fraction
    return out


def analyze(test_dir: str | Path, db: str | Path | None = None) -> dict[str, Any]:
    """Post-screened MUSHRA results of a test: per system the mean score with its 95 % t
    interval, median, quartiles and rating count over the kept raters' completed trials."""
    from .stats import t_interval

    load_test(test_dir)
    db_path = Path(db) if db else Path(test_dir) / DB_FILE
    if not db_path.is_file():
        raise InputError(f"no ratings yet: {db_path} does not exist")
    with open_store(test_dir, db_path) as store:
        test = store.test
        done = store.completed()
        final = {k: v for k, v in store.latest().items() if (k[0], k[1]) in done}
    if not final:
        raise InputError(f"{db_path} holds no completed trial yet")
    screening = post_screen(final)
    kept = {r for r, e in screening.items() if not e["excluded"]}
    systems: dict[str, Any] = {}
    for name, info in test["systems"].items():
        values = [v for (r, _t, s), v in final.items() if s == name and r in kept]
        mean, half = t_interval(values)
        q = np.percentile(values, [25, 50, 75]).tolist() if values else [float("nan")] * 3
        systems[name] = {
            **info,
            "n": len(values),
            "mean": mean,
            "ci95": [mean - half, mean + half],
            "median": q[1],
            "quartiles": [q[0], q[2]],
            "scores": values,
        }
    return {
        "test": {k: test[k] for k in ("id", "title", "source", "loudness_lufs")},
        "trials": len(test["trials"]),
        "raters": len(screening),
        "kept_raters": sorted(kept),
        "excluded_raters": sorted(set(screening) - kept),
        "screening": screening,
        "rule": f"exclude raters scoring the hidden reference below {SCREEN_SCORE} in more than "
        f"{int(SCREEN_FRACTION * 100)} % of their trials (ITU-R BS.1534-3)",
        "systems": systems,
    }


def _order(result: Mapping[str, Any]) -> list[str]:
    s = result["systems"]
    return sorted(s, key=lambda n: (-(s[n]["mean"] if math.isfinite(s[n]["mean"]) else -1e9), n))


def markdown_results(result: Mapping[str, Any]) -> str:
    lines = [
        f"# {result['test']['title']}",
        "",
        f"{result['trials']} trials; {result['raters']} raters, {len(result['kept_raters'])} kept after "
        f"post-screening ({result['rule']}).",
        "",
        "| system | kind | kbps | ratings | mean | 95 % CI | median |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in _order(result):
        s = result["systems"][name]
        kbps = f"{s['bitrate'] / 1000:.2f}" if isinstance(s.get("bitrate"), (int, float)) else "-"
        ci = s["ci95"]
        ci_text = f"{ci[0]:.1f} to {ci[1]:.1f}" if all(math.isfinite(c) for c in ci) else "-"
        mean = f"{s['mean']:.1f}" if math.isfinite(s["mean"]) else "-"
        median = f"{s['median']:.0f}" if math.isfinite(s["median"]) else "-"
        lines.append(f"| {name} | {s['kind']} | {kbps} | {s['n']} | {mean} | {ci_text} | {median} |")
    if result["excluded_raters"]:
        lines += ["", "Excluded raters (hidden reference below 90 in their trials):"]
        for r in result["excluded_raters"]:
            e = result["screening"][r]
            lines.append(f"- {r}: {e['reference_below']} of {e['trials']} trials")
    return "\n".join(lines) + "\n"


def _plot(result: Mapping[str, Any], out: Path, force: bool) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    systems = result["systems"]
    written = []
    # Fig. 2 (left): score against bitrate, codecs as points with 95 % CIs, reference and anchors as lines
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    codecs = [n for n in systems if systems[n]["kind"] == "codec" and systems[n]["n"]]
    for i, name in enumerate(sorted(codecs, key=lambda n: systems[n].get("bitrate") or 0)):
        s = systems[name]
        if not isinstance(s.get("bitrate"), (int, float)) or s["bitrate"] <= 0:
            continue
        err = [[s["mean"] - s["ci95"][0]], [s["ci95"][1] - s["mean"]]] if math.isfinite(s["ci95"][0]) else None
        ax.errorbar([s["bitrate"] / 1000], [s["mean"]], yerr=err, fmt="osD^v<>pP*Xh"[i % 12], capsize=4, label=name)
    for name, style in ((REFERENCE, "-"), ("anchor_7k", "-."), ("anchor_3.5k", ":")):
        if name in systems and systems[name]["n"]:
            ax.axhline(systems[name]["mean"], color="grey", linestyle=style, linewidth=1, label=name)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("bitrate (kbit/s)")
    ax.set_ylabel("MUSHRA score")
    ax.set_ylim(0, 103)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"MUSHRA vs bitrate ({len(result['kept_raters'])} rater(s) kept, mean and 95 % CI)", fontsize=9)
    fig.tight_layout()
    with output_path(out / "mushra_vs_bitrate.png", force=force) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    written.append(out / "mushra_vs_bitrate.png")
    # Fig. 2 (right): score distributions per system
    names = [n for n in _order(result) if systems[n]["n"]]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(names) + 1.5), 4.2))
    ax.boxplot([systems[n]["scores"] for n in names], showmeans=True)
    rng = np.random.default_rng(0)
    for i, n in enumerate(names, 1):
        v = systems[n]["scores"]
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=8, alpha=0.5, color="tab:blue")
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("MUSHRA score")
    ax.set_ylim(-2, 102)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("Score distributions (box: quartiles, line: median, triangle: mean)", fontsize=9)
    fig.tight_layout()
    with output_path(out / "mushra_distributions.png", force=force) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    written.append(out / "mushra_distributions.png")
    return written


ANALYSIS_FILES = ("results.json", "results.md", "mushra_vs_bitrate.png", "mushra_distributions.png")


def write_analysis(
    test_dir: str | Path, out_dir: str | Path, db: str | Path | None = None, force: bool = False
) -> dict[str, Any]:
    """:func:`analyze` and write ``results.json``, ``results.md`` and the two plots into ``out_dir``."""
    out = Path(out_dir)
    check_targets([out / f for f in ANALYSIS_FILES], force=force)
    result = analyze(test_dir, db)
    write_json(out / ANALYSIS_FILES[0], result, force)
    write_text(out / ANALYSIS_FILES[1], markdown_results(result), force)
    _plot(result, out, force)
    return result
