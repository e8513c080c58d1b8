"""One command that checks and measures everything on a GPU (issue 18), in at most 8 minutes.

    python benchmarks/gpu_suite.py                      # on a GPU machine (--device cuda)
    python benchmarks/gpu_suite.py --device cpu --quick # the rehearsal: tiny models, ~1 minute (CI runs it)
    python benchmarks/gpu_suite.py --plan               # print what would run, run nothing
    python benchmarks/gpu_suite.py --pack .gpu          # here: the folder to carry to a machine without network

Steps, each in its own process with its own time budget (``--budget`` in all, 470 s by
default, so a 10-minute command limit is never reached; a step that overruns is stopped and
the next one starts):

1. ``env``: card, driver, torch, CUDA and cuDNN versions, TF32 switches, CPU, packages, commit.
2. ``install``: checks that every package the code needs imports; installs the missing ones
   from the packed wheels (``--pack``) when present, else ``pip install -e ".[test,corpus,train]"``.
   The installed torch is never replaced (its CUDA build is what is being measured). The code
   runs from this checkout's ``src/`` (``PYTHONPATH``), nothing is built.
3. ``tests``: ``pytest tests/test_device.py --device DEVICE`` (fixture equivalence, batch
   invariance, streams, exports, autocast, tokenization, a training step of every stage).
4. ``speed``: benchmarks/speed.py, 10 s inputs at batch 1, 32 and 128 in float32 and under
   autocast bfloat16 / float16, peak memory (per row: the GPU's peak statistics are reset) and
   memory growth over batches; all rows in one process (``--in-process``: no start per row).
5. ``precision``: benchmarks/precision.py, token agreement with float32 on all of
   ../shared/speech/eval, and float32 on the device against float32 on the CPU.
6. ``streaming``: benchmarks/streaming.py on the 4k causal model: 1 to 1024 streams through
   one :class:`focalcodec.streaming.StreamEngine`, one 80 ms chunk each per step, eagerly and
   replayed as CUDA graphs (``graph="cuda"``; CUDA only), step p50/p99 and whether the
   streams are kept in real time.
7. ``tokenize``: benchmarks/tokenization.py, one hour of real speech, hours of audio per hour,
   length-bucketed batches against one file at a time, float32 and autocast bfloat16.
8. ``train``: benchmarks/training.py, 50 steps of stage Q and stage D, throughput and memory.

Every model has random weights (``FocalCodec.from_config("focalcodec_50hz")`` and the other
presets): the official weights are not available offline; speed does not depend on them, and
token agreement measured with random weights is a pessimistic estimate. ``--quick`` uses the
tiny fixture models with tiny sizes: it proves the suite runs, its figures mean nothing.

Output, in ``--out`` (default ``$OUT`` when set, else benchmarks/results/gpu/<UTC time>-<device>),
four files, rewritten after every step so that a run cut short keeps what it finished:
``gpu_suite.json`` (everything), ``gpu_suite.md`` (every table and the targets of issue 18),
``gpu_suite.log`` (each step's full output) and ``pytest.xml``.

Streaming goes through :func:`streaming_plan` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
WEIGHTS_NOTE = (
    "Random weights: full-size architectures built with `FocalCodec.from_config(...)` (the official weights "
    "are not available offline; speed does not depend on them, token agreement with random weights is a "
    "pessimistic estimate)."
)
QUICK_NOTE = "Rehearsal (`--quick`): tiny fixture models and tiny sizes; these figures mean nothing."
# Modules the code and the tests import (module name -> pip name).
NEEDED = {
    "torch": "torch",
    "numpy": "numpy",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub",
    "soundfile": "soundfile",
    "soxr": "soxr",
    "tqdm": "tqdm",
    "pytest": "pytest",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "pyarrow": "pyarrow",
    "yaml": "PyYAML",
    "tensorboard": "tensorboard",
}
# Wheels --pack fetches for a machine without network (the packages its image lacks).
WHEELS = ("soundfile", "cffi", "pycparser", "soxr")
PACK_MARKER = ".gpu_suite_pack"
SMI_FIELDS = "name,driver_version,memory.total,clocks.max.sm,power.limit"


def find_shared() -> Path:
    """``$FOCALCODEC_SHARED``, else ``../shared`` beside this checkout (where --pack puts it
    beside ``repo/``), else a packed ``.gpu/shared`` inside it."""
    if "FOCALCODEC_SHARED" in os.environ:
        return Path(os.environ["FOCALCODEC_SHARED"])
    for folder in (ROOT.parent / "shared", ROOT / ".gpu" / "shared"):
        if folder.is_dir():
            return folder
    return ROOT.parent / "shared"


def find_wheels() -> Path | None:
    for folder in (ROOT.parent / "wheels", ROOT / ".gpu" / "wheels"):
        if folder.is_dir() and any(folder.glob("*.whl")):
            return folder
    return None


# ---------------------------------------------------------------------------------------------
# The plan: one Step per part, its command and its tables
# ---------------------------------------------------------------------------------------------
@dataclass
class Context:
    device: str
    quick: bool
    work: Path  # step outputs before they are bundled
    out: Path
    shared: Path
    python: str = sys.executable

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def fixtures(self) -> Path:
        return self.shared / "fixtures"

    def json(self, name: str) -> Path:
        return self.work / f"{name}.json"

    def threads(self) -> list[str]:
        return ["--threads", "1"] if not self.cuda else []


@dataclass
class Step:
    name: str
    budget: float  # seconds at most (full run)
    quick_budget: float
    command: Callable[[Context], list[str]]
    tables: Callable[[Any, Context], list[tuple[str, list[str], list[list[Any]]]]] = field(default=lambda data, ctx: [])


def _script(ctx: Context, name: str, *args: str) -> list[str]:
    return [ctx.python, str(BENCH / name), *args]


def tests_command(ctx: Context) -> list[str]:
    cmd = [ctx.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_family=xunit1"]
    cmd += ["tests/test_device.py", "--device", ctx.device, f"--junitxml={ctx.out / 'pytest.xml'}", "-rfEs"]
    if ctx.quick:
        cmd += ["-k", "test_fixture_outputs and tiny_causal_4k"]
    return cmd


def speed_command(ctx: Context) -> list[str]:
    if ctx.quick:
        sizes = ["--configs", str(ctx.fixtures / "tiny_50hz"), "--batch-sizes", "2", "--seconds", "1", "--repeats", "2"]
        dtypes = ["float32", "bfloat16"]
    else:
        sizes = ["--configs", "focalcodec_50hz", "--batch-sizes", "32", "128", "1", "--seconds", "10", "--repeats", "4"]
        dtypes = ["float32", "bfloat16", "float16"]
    flags = ["--devices", ctx.device, "--dtypes", *dtypes, "--autocast", "--in-process", *ctx.threads()]
    return _script(ctx, "speed.py", *sizes, *flags, "--json", str(ctx.json("speed")))


def precision_command(ctx: Context) -> list[str]:
    if ctx.quick:
        sizes = ["--model", str(ctx.fixtures / "tiny_50hz"), "--files", "2", "--seconds", "1", "--reference-files", "1"]
    else:
        sizes = ["--model", "focalcodec_50hz", "--files", "0", "--seconds", "10", "--reference-files", "4"]
    return _script(
        ctx,
        "precision.py",
        *sizes,
        "--speech",
        str(ctx.shared / "speech" / "eval"),
        "--devices",
        ctx.device,
        "--reference-device",
        "cpu",
        *ctx.threads(),
        "--out",
        str(ctx.json("precision")),
    )


def streaming_plan(ctx: Context) -> list[str]:
    """The streaming measurement: benchmarks/streaming.py's engine table (streams in real time
    through one :class:`focalcodec.streaming.StreamEngine`; on CUDA eagerly and as CUDA graphs).
    The CPU's per-chunk latency table (against the authors' loop) is measured on its own
    machine, not here."""
    if ctx.quick:
        model = str(ctx.fixtures / "tiny_causal_4k")
        sizes = ["--engine-chunks", "3", "--warmup", "1", "--engine-precisions", "float32"]
        streams = ["--streams", "1", "2"] if not ctx.cuda else ["--streams", "--gpu-streams", "1", "2"]
    else:
        model = "focalcodec_50hz_4k_causal"
        sizes = ["--engine-chunks", "50", "--warmup", "5"]
        streams = (
            ["--streams", "1", "4", "16"] if not ctx.cuda else ["--streams", "--gpu-streams", "1", "64", "256", "1024"]
        )
    threads = ["--threads", "1"] if not ctx.cuda else []
    return _script(ctx, "streaming.py", "--model", model, "--skip-latency", *streams, *sizes, *threads) + [
        "--out",
        str(ctx.json("streaming")),
    ]


def tokenize_command(ctx: Context) -> list[str]:
    if ctx.quick:
        sizes = ["--config", str(ctx.fixtures / "tiny_50hz"), "--seconds", "20"]
        sizes += ["--settings", "buckets of 60 s, 1 worker", "--autocast", "none"]
    else:
        sizes = ["--config", "focalcodec_50hz", "--seconds", "3600"]
        sizes += ["--settings", "buckets of 600 s, 8 workers", "one file at a time", "--autocast", "none", "bfloat16"]
    return _script(
        ctx,
        "tokenization.py",
        *sizes,
        "--data",
        str(ctx.shared / "speech" / "eval" / "manifest.tsv"),
        "--device",
        ctx.device,
        *ctx.threads(),
        "--json",
        str(ctx.json("tokenize")),
    )


def train_command(ctx: Context) -> list[str]:
    if ctx.quick:
        sizes = ["--model", str(ctx.fixtures / "tiny_50hz"), "--steps", "2", "--batch-size", "2", "--workers", "0"]
        sizes += ["--segment-seconds", "1", "--precisions", "fp32", "--set", "discriminator.width=0.05"]
    else:
        sizes = ["--model", "focalcodec_50hz", "--steps", "50", "--batch-size", "16", "--workers", "6"]
        sizes += ["--precisions", "fp32", "bf16"]
    return _script(
        ctx,
        "training.py",
        *sizes,
        "--data",
        str(ctx.shared / "speech" / "eval"),
        "--device",
        ctx.device,
        *ctx.threads(),
        "--json",
        str(ctx.json("train")),
    )


def env_command(ctx: Context) -> list[str]:
    return [ctx.python, str(Path(__file__).resolve()), "--run-part", "env", "--device", ctx.device] + [
        "--json",
        str(ctx.json("env")),
    ]


# -- tables -----------------------------------------------------------------------------------
def _f(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def env_tables(data: Any, ctx: Context):
    if not isinstance(data, dict):
        return []
    rows = [[k, _f(v)] for k, v in data.items() if not isinstance(v, dict)]
    rows += [[k, ", ".join(f"{n} {v}" for n, v in v.items())] for k, v in data.items() if isinstance(v, dict)]
    return [("Machine", ["what", "value"], rows)]


def tests_tables(data: Any, ctx: Context):
    if not isinstance(data, dict):
        return []
    s = data["summary"]
    head = f"{s['passed']} passed, {s['failed']} failed, {s['errors']} errors, {s['skipped']} skipped"
    rows = [[t["name"], t["outcome"], _f(t["seconds"], 2), t["message"] or ""] for t in data["tests"]]
    return [(f"tests/test_device.py --device {ctx.device}: {head}", ["test", "outcome", "s", "message"], rows)]


def speed_tables(data: Any, ctx: Context):
    rows = []
    for r in data or []:
        dtype = r["dtype"] + (" (autocast)" if r.get("autocast") else "")
        if "error" in r:
            rows.append([r["config"], dtype, r["batch"], "failed: " + r["error"], "", "", "", "", ""])
            continue
        rows.append(
            [
                r["model"],
                dtype,
                r["batch"],
                _f(r["encode_s"], 4),
                _f(r["decode_s"], 4),
                _f(r["rtf_x"], 0),
                _f(r["peak_mb"], 0),
                _f(r["growth_mb"], 2),
                len(r["held_mb_per_batch"]),
            ]
        )
    cols = ["model", "dtype", "batch", "encode s", "decode s", "x real time", "peak MB", "growth MB", "batches"]
    secs = (data or [{}])[0].get("seconds_audio", 10)
    return [(f"Offline encode + decode of {_f(secs, 0)} s inputs (speed.py)", cols, rows)]


def precision_tables(data: Any, ctx: Context):
    if not isinstance(data, dict):
        return []
    meta = data["meta"]
    rows = [
        [
            r["device"],
            r["dtype"],
            r["compared_with"],
            r.get("files", len(meta["files"])),
            f"{100 * r['token_agreement']:.2f} %",
            _f(r["waveform_snr_db"]),
        ]
        for r in data["rows"]
    ]
    title = (
        f"Token agreement ({meta['model']}, {len(meta['files'])} files of <= {_f(meta['seconds'], 0)} s of "
        f"shared/speech/eval; precision.py)"
    )
    return [(title, ["device", "dtype", "compared with", "files", "tokens identical", "SNR dB"], rows)]


def streaming_tables(data: Any, ctx: Context):
    if not isinstance(data, dict):
        return []
    rows = [
        [
            r["device"],
            r["variant"],
            r["graph"] or "eager",
            r["streams"],
            _f(r["p50_ms"], 2),
            _f(r["p99_ms"], 2),
            "yes" if r["realtime"] else "no",
        ]
        for r in data.get("engine", [])
    ]
    title = f"Streaming {data['meta']['model']}: streams through one StreamEngine, one 80 ms chunk each per step"
    cols = ["device", "variant", "graph", "streams", "step p50 ms", "step p99 ms", "real time"]
    return [(title, cols, rows)]


def tokenize_tables(data: Any, ctx: Context):
    rows = [
        [
            r["setting"],
            r.get("autocast") or "float32",
            r["files"],
            _f(r["audio_s"] / 3600, 2),
            _f(r["wall_s"], 1),
            _f(r["hours_per_hour"], 0),
            _f(r.get("peak_gpu_mb"), 0),
        ]
        for r in data or []
    ]
    cols = ["setting", "precision", "files", "audio h", "wall s", "audio h per h", "peak GPU MB"]
    return [("Corpus tokenization (tokenization.py, real speech repeated)", cols, rows)]


def train_tables(data: Any, ctx: Context):
    rows = []
    for r in data or []:
        if "error" in r:
            rows.append([r["stage"], r["precision"], "failed: " + r["error"], "", "", "", "", "", ""])
            continue
        rows.append(
            [
                r["stage"],
                r["precision"],
                r["steps"],
                r["batch_size"],
                _f(r["sec_per_step"], 3),
                _f(r["audio_s_per_s"], 0),
                _f(r["peak_mb"], 0),
                f"{_f(r['first_loss'], 4)} -> {_f(r['last_loss'], 4)}",
                r["finite"],
            ]
        )
    cols = ["stage", "precision", "steps", "batch", "s / step", "audio s / s", "peak MB", "loss", "finite"]
    return [("Training smoke (training.py, shipped recipes, random init)", cols, rows)]


def plan(ctx: Context) -> list[Step]:
    return [
        Step("env", 20, 20, env_command, env_tables),
        Step("install", 40, 20, lambda c: [], lambda d, c: []),
        Step("tests", 85, 40, tests_command, tests_tables),
        Step("speed", 95, 40, speed_command, speed_tables),
        Step("precision", 45, 30, precision_command, precision_tables),
        Step("streaming", 85, 40, streaming_plan, streaming_tables),
        Step("tokenize", 45, 30, tokenize_command, tokenize_tables),
        Step("train", 55, 40, train_command, train_tables),
    ]


# ---------------------------------------------------------------------------------------------
# Running a step
# ---------------------------------------------------------------------------------------------
def run_command(cmd: list[str], timeout: float, log: Path, env: dict[str, str], cwd: Path = ROOT) -> dict:
    """Run ``cmd`` with its output appended to ``log``; stop its whole process group after
    ``timeout`` seconds. Returns status (ok / failed / timeout), return code, seconds, output tail."""
    t0 = time.monotonic()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {shlex.join(cmd)}\n")
        f.flush()
        start = f.tell()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(timeout, 1.0))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            status, rc = "timeout", None
            # the step's own process group (start_new_session): SIGTERM lets Python print its
            # traceback; SIGKILL then takes what is left (DataLoader workers, stuck children)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=5.0)
                except subprocess.TimeoutExpired:
                    pass
            f.write(f"\n[gpu_suite] stopped after {timeout:.0f} s (the step's time budget)\n")
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        tail = f.read().splitlines()[-15:]
    return {
        "status": status,
        "returncode": rc,
        "seconds": round(time.monotonic() - t0, 1),
        "budget_s": round(timeout, 1),
        "command": shlex.join(cmd),
        "output_tail": tail if status != "ok" else [],
    }


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def junit_results(path: Path) -> dict | None:
    """Per-test outcome, seconds and message from pytest's JUnit XML."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    tests = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").splitlines()[0][:300] if node.get("message") else ""
                break
        tests.append(
            {"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
        )
    count = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    summary = {
        "passed": count["passed"],
        "failed": count["failed"],
        "errors": count["error"],
        "skipped": count["skipped"],
    }
    return {"summary": summary, "tests": tests}


def child_env(shared: Path, site: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(ROOT / "src")] + ([str(site)] if site else []) + [p for p in [env.get("PYTHONPATH")] if p]
    env.update(
        PYTHONPATH=os.pathsep.join(paths),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        FOCALCODEC_SHARED=str(shared),
    )
    return env


def missing_modules(python: str, env: dict[str, str]) -> list[str]:
    code = (
        "import importlib.util, json, sys; "
        f"print(json.dumps([m for m in {sorted(NEEDED) + ['focalcodec']!r} if importlib.util.find_spec(m) is None]))"
    )
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    try:
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return ["(could not check: " + (run.stderr.strip().splitlines() or ["?"])[-1] + ")"]


def install(ctx: Context, log: Path, timeout: float, site: Path) -> tuple[dict, dict[str, str]]:
    """Make every needed module importable; returns the step's record and the child environment."""
    t0 = time.monotonic()
    env = child_env(ctx.shared, None)
    before = missing_modules(ctx.python, env)
    record: dict[str, Any] = {"missing_before": before}
    if before:
        wheels = find_wheels()
        if wheels is not None:
            cmd = [ctx.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
            cmd += ["--target", str(site), *map(str, sorted(wheels.glob("*.whl")))]
            record["how"] = f"wheels from {wheels}"
        else:
            cmd = [ctx.python, "-m", "pip", "install", "-q", "-e", ".[test,corpus,train]"]
            record["how"] = "pip install -e .[test,corpus,train] (the installed torch is kept)"
        record.update(run_command(cmd, timeout, log, env))
        env = child_env(ctx.shared, site if wheels is not None else None)
    after = missing_modules(ctx.python, env)
    record["missing_after"] = after
    record["status"] = "ok" if not after else "failed"
    record["seconds"] = round(time.monotonic() - t0, 1)
    return record, env


# ---------------------------------------------------------------------------------------------
# The bundle: JSON + Markdown + targets
# ---------------------------------------------------------------------------------------------
def _rows(results: dict, name: str) -> Any:
    return (results["steps"].get(name) or {}).get("data")


def targets(results: dict) -> list[dict]:
    """The targets of issue 18 against what this run measured."""
    speed = [r for r in _rows(results, "speed") or [] if "error" not in r]
    precision = (_rows(results, "precision") or {}).get("rows", [])
    streaming = (_rows(results, "streaming") or {}).get("engine", [])
    tests = _rows(results, "tests") or {"tests": []}
    out = []

    def add(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    agreement = {r["dtype"]: r["token_agreement"] for r in precision if r["dtype"] != "float32"}
    for dtype in ("bfloat16", "float16"):
        rows = [r for r in speed if r["dtype"] == dtype]
        best = max(rows, key=lambda r: r["rtf_x"], default=None)
        agree = agreement.get(dtype)
        goal = f"{dtype}: >= 15,000x real time (50 Hz, 10 s batches) with >= 99 % tokens = float32"
        if best is None:
            add(goal, "not measured", None)
            continue
        text = f"{best['rtf_x']:,.0f}x at batch {best['batch']}; tokens = float32: " + (
            f"{100 * agree:.2f} %" if agree is not None else "not measured"
        )
        met = best["rtf_x"] >= 15000 and agree is not None and agree >= 0.99
        add(goal, text, met)
    fp32 = next((r for r in speed if r["dtype"] == "float32" and r["batch"] == 32), None)
    cross = next((r for r in precision if r["dtype"] == "float32"), None)
    inv = [t for t in tests["tests"] if t["name"].startswith("test_batches_equal_solo_items")]
    inv_ok = bool(inv) and all(t["outcome"] == "passed" for t in inv)
    if fp32 is None:
        add("float32: >= 2,500x real time at batch 32 with identical tokens", "not measured", None)
    else:
        text = f"{fp32['rtf_x']:,.0f}x; tokens = CPU float32: " + (
            f"{100 * cross['token_agreement']:.2f} %" if cross else "not measured"
        )
        text += f"; batch invariance tests: {'passed' if inv_ok else 'not passed'}"
        met = fp32["rtf_x"] >= 2500 and cross is not None and cross["token_agreement"] == 1.0 and inv_ok
        add("float32: >= 2,500x real time at batch 32 with identical tokens", text, met)
    solo = [r for r in streaming if r["streams"] == 1]
    goal = "streaming 4k causal: p99 <= 5 ms per 80 ms chunk at batch 1"
    if solo:
        best = min(solo, key=lambda r: r["p99_ms"])
        add(goal, f"{best['p99_ms']:.2f} ms ({best['variant']}, {best['graph'] or 'eager'})", best["p99_ms"] <= 5)
    else:
        add(goal, "not measured", None)
    goal = ">= 1,000 concurrent streams kept in real time"
    if streaming:
        kept = [(r["streams"], r["variant"], r["graph"] or "eager") for r in streaming if r["realtime"]]
        n, variant, graph = max(kept, default=(0, "", ""))
        add(goal, f"{n} ({variant}, {graph}; step p99 <= 80 ms)" if n else "0 (no row kept in real time)", n >= 1000)
    else:
        add(goal, "not measured", None)
    if speed:
        worst = max(speed, key=lambda r: abs(r["growth_mb"]))
        add(
            "no memory growth over batches (held memory after each batch)",
            f"largest growth {worst['growth_mb']:.2f} MB ({worst['dtype']}, batch {worst['batch']})",
            abs(worst["growth_mb"]) <= 1.0,
        )
    else:
        add("no memory growth over batches (held memory after each batch)", "not measured", None)
    bf16_tests = [t for t in tests["tests"] if "bfloat16" in t["name"] or "bf16" in t["name"]]
    bf16_speed = [r for r in speed if r["dtype"] == "bfloat16"]
    passed = sum(t["outcome"] == "passed" for t in bf16_tests)
    add(
        "bfloat16 end to end (tests: autocast, a bf16 model, bf16 training steps; speed rows)",
        f"{passed}/{len(bf16_tests)} bf16 tests passed; {len(bf16_speed)} bf16 speed rows",
        (passed == len(bf16_tests) and bool(bf16_speed)) if bf16_tests else None,
    )
    return out


def markdown(results: dict, ctx: Context, steps: list[Step]) -> str:
    env = _rows(results, "env") or {}
    lines = [
        f"# GPU suite: {env.get('card') or ctx.device}",
        "",
        f"{results['started_utc']} UTC, `{results['command']}`, commit {env.get('commit', '?')}.",
        "",
        QUICK_NOTE if ctx.quick else WEIGHTS_NOTE,
        "",
        "## Steps",
        "",
        "| step | status | seconds | budget s |",
        "|---|---|---|---|",
    ]
    for step in steps:
        rec = results["steps"].get(step.name)
        if rec is not None:
            lines.append(f"| {step.name} | {rec['status']} | {rec.get('seconds', '-')} | {rec.get('budget_s', '-')} |")
    lines += ["", "## Targets (issue 18)", ""]
    lines += [QUICK_NOTE, ""] if ctx.quick else []
    lines += ["| target | measured | met |", "|---|---|---|"]
    for t in results.get("targets", []):
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {met} |")
    for step in steps:
        rec = results["steps"].get(step.name)
        if rec is None:
            continue
        tables = step.tables(rec.get("data"), ctx)
        for title, cols, rows in tables:
            lines += ["", f"## {title}", ""]
            if step.name not in ("env", "tests"):
                lines += [QUICK_NOTE if ctx.quick else WEIGHTS_NOTE, ""]
            lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
        if rec.get("status") not in ("ok", None) and rec.get("output_tail"):
            lines += ["", f"`{step.name}` ended {rec['status']}; last lines of its output:", "", "```"]
            lines += rec["output_tail"] + ["```"]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def bundle(results: dict, ctx: Context, steps: list[Step]) -> None:
    results["targets"] = targets(results)
    write_atomic(ctx.out / "gpu_suite.json", json.dumps(results, indent=2, default=str) + "\n")
    write_atomic(ctx.out / "gpu_suite.md", markdown(results, ctx, steps))


# ---------------------------------------------------------------------------------------------
# Parts run in their own process (--run-part)
# ---------------------------------------------------------------------------------------------
def env_part(device: str) -> dict:
    import importlib.metadata

    import torch

    info: dict[str, Any] = {
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": device,
        "card": None,
        "driver": None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "commit": commit(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        dev = torch.device(device)
        props = torch.cuda.get_device_properties(dev)
        info.update(
            card=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            multiprocessors=props.multi_processor_count,
        )
    try:
        smi = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if smi.returncode == 0 and smi.stdout.strip():
            info["nvidia_smi"] = smi.stdout.strip()
            info["driver"] = smi.stdout.strip().splitlines()[0].split(",")[1].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    packages = {}
    for name in ["numpy", "onnxruntime", "pyarrow", "soundfile", "soxr", "triton"]:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    info["packages"] = packages
    try:
        import onnxruntime

        info["onnxruntime_providers"] = ", ".join(onnxruntime.get_available_providers())
    except ImportError:
        pass
    return info


def commit() -> str:
    marker = ROOT / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT)
        if head.returncode == 0:
            return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return "unknown"


def pack(dest: Path, wheels: bool) -> None:
    shared = find_shared()
    if dest.exists() and any(dest.iterdir()) and not (dest / PACK_MARKER).exists():
        raise SystemExit(f"error: {dest} exists and was not made by --pack; give an empty or new folder")
    if (dest / PACK_MARKER).exists():
        for sub in ("repo", "shared", "wheels"):
            shutil.rmtree(dest / sub, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / PACK_MARKER).write_text("made by benchmarks/gpu_suite.py --pack\n")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout.split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dest / "repo" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / "repo" / rel)
    (dest / "repo" / "COMMIT").write_text(commit() + "\n")
    for part in ("fixtures", "speech/eval", "speech/README.md"):
        src = shared / part
        if src.is_dir():
            shutil.copytree(src, dest / "shared" / part)
        elif src.is_file():
            (dest / "shared" / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / "shared" / part)
        else:
            raise SystemExit(f"error: {src} not found (set FOCALCODEC_SHARED to the shared folder)")
    if wheels:
        import importlib.metadata

        pins = [f"{n}=={importlib.metadata.version(n)}" for n in WHEELS]
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest / "wheels")]
        for tag in ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
            cmd += ["--platform", tag]
        subprocess.run(cmd + pins, check=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"packed {dest}: {size / 2**20:.1f} MiB (repo, shared/fixtures, shared/speech/eval, wheels)")
    print(f"run there: python3 {dest.name}/repo/benchmarks/gpu_suite.py --device cuda   (carry: {dest.name})")


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    ap.add_argument("--quick", action="store_true", help="tiny models and sizes: the CPU rehearsal")
    ap.add_argument("--out", default=None, help="output folder (default: $OUT, else benchmarks/results/gpu/...)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for everything (default: 470)")
    ap.add_argument("--steps", nargs="+", default=None, help="run only these steps (env and install always run)")
    ap.add_argument("--plan", action="store_true", help="print the commands and budgets, run nothing")
    ap.add_argument("--pack", metavar="DIR", default=None, help="write the folder to carry (repo, shared, wheels)")
    ap.add_argument("--no-wheels", action="store_true", help="--pack without downloading wheels")
    ap.add_argument("--run-part", choices=["env"], help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.pack:
        pack(Path(args.pack), wheels=not args.no_wheels)
        return
    if args.run_part:
        data = env_part(args.device)
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
        print(json.dumps(data, indent=2))
        return

    t_start = time.monotonic()
    deadline = t_start + args.budget
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu" / default_name(args))
    shared = find_shared()
    with tempfile.TemporaryDirectory(prefix="gpu_suite_") as tmp:
        ctx = Context(args.device, args.quick, Path(tmp), out, shared)
        steps = plan(ctx)
        if args.steps:
            unknown = set(args.steps) - {s.name for s in steps}
            if unknown:
                raise SystemExit(f"error: unknown steps {sorted(unknown)}; steps: {[s.name for s in steps]}")
            steps = [s for s in steps if s.name in ("env", "install") or s.name in args.steps]
        if args.plan:
            for step in steps:
                budget = step.quick_budget if args.quick else step.budget
                print(f"[{step.name}] {budget:.0f} s: {shlex.join(step.command(ctx)) or '(in process)'}")
            return
        out.mkdir(parents=True, exist_ok=True)
        log = out / "gpu_suite.log"
        log.write_text(f"gpu_suite {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC\n")
        results: dict[str, Any] = {
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "command": shlex.join([Path(sys.argv[0]).name] + sys.argv[1:]),
            "device": args.device,
            "quick": args.quick,
            "weights": "random (FocalCodec.from_config); official weights are not available offline",
            "shared": str(shared),
            "steps": {},
        }
        env = child_env(shared, None)
        print(f"gpu_suite: device {args.device}, budget {args.budget:.0f} s, output {out}", flush=True)
        for step in steps:
            budget = min(step.quick_budget if args.quick else step.budget, deadline - time.monotonic() - 5)
            if budget < 5:
                results["steps"][step.name] = {"status": "skipped", "reason": "out of time (the suite's --budget)"}
                print(f"[{step.name}] skipped: out of time", flush=True)
                bundle(results, ctx, steps)
                continue
            if step.name == "install":
                record, env = install(ctx, log, budget, Path(tmp) / "site")
                record["budget_s"] = round(budget, 1)
            else:
                record = run_command(step.command(ctx), budget, log, env)
                record["data"] = (
                    junit_results(out / "pytest.xml") if step.name == "tests" else read_json(ctx.json(step.name))
                )
            results["steps"][step.name] = record
            bundle(results, ctx, steps)
            print(f"[{step.name}] {record['status']} in {record['seconds']} s", flush=True)
            if step.name == "env" and isinstance(record.get("data"), dict):
                d = record["data"]
                print(
                    f"  card {d.get('card')}, driver {d.get('driver')}, torch {d.get('torch')}, CUDA {d.get('cuda')}, "
                    f"cuDNN {d.get('cudnn')}, TF32 matmul/cudnn {d.get('tf32_matmul')}/{d.get('tf32_cudnn')}",
                    flush=True,
                )
            if step.name == "install" and record["missing_after"]:
                print(f"  still missing: {record['missing_after']}", flush=True)
        results["seconds"] = round(time.monotonic() - t_start, 1)
        bundle(results, ctx, steps)
    print("\n" + (out / "gpu_suite.md").read_text(), flush=True)
    print(f"written {out}/gpu_suite.json, gpu_suite.md, gpu_suite.log, pytest.xml in {results['seconds']} s")
    failed = [n for n, r in results["steps"].items() if r["status"] != "ok"]
    if failed:
        print(f"steps not ok: {', '.join(failed)}")
        sys.exit(1)


def default_name(args: argparse.Namespace) -> str:
    return (
        time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        + "-"
        + args.device.replace(":", "")
        + ("-quick" if args.quick else "")
    )


if __name__ == "__main__":
    main()
