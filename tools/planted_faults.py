"""Planted faults: show that the training tests fail when training is broken.

Each fault below is a small edit of the package that leaves the code running but trains the
wrong thing (the kind of bug that keeps every loss curve going down). For each one, the
script copies ``src/focalcodec`` to a scratch folder, applies the edit there (the working
tree is never touched), runs the training tests (``tests/test_train*.py``, slow ones
included) against the scratch copy, and records which tests failed. A fault is *caught*
when at least one test fails. The first row runs the unmodified copy: it must pass, so that
every failure below is the fault's doing.

    python tools/planted_faults.py                       # every fault (about 1-2 min each)
    python tools/planted_faults.py --only zeroed-discriminator-loss misaligned-crops
    python tools/planted_faults.py --first-failure       # stop each run at its first failure

Prints a Markdown table (recorded in docs/training.md) and writes JSON
(tools/results/planted_faults.json, rewritten after every fault). The edits are exact text
replacements; tests/test_train_faults.py checks that each one still applies to the current
source, so this list cannot silently rot.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tools" / "results" / "planted_faults.json"


@dataclass(frozen=True)
class Fault:
    name: str
    file: str  # relative to src/focalcodec
    old: str
    new: str
    breaks: str  # what the fault does to training
    count: int = 1  # occurrences of ``old`` replaced (all of them)


FAULTS: tuple[Fault, ...] = (
    Fault(
        "unquantised-latents",
        "train/stages.py",
        "qfeats = self.decompressor(q.codes, lengths=tok_lengths)",
        "qfeats = self.decompressor(lats, lengths=tok_lengths)",
        "the decompressor is trained on the continuous latents instead of the binary codes",
    ),
    Fault(
        "straight-through-cut",
        "nn/bsq.py",
        "codes = lats + (hard - lats).detach()",
        "codes = hard",
        "no reconstruction gradient reaches the compressor (no straight-through estimator)",
    ),
    Fault(
        "cut-adversarial-gradient",
        "train/stages.py",
        "adv = generator_hinge_loss(fake_scores)",
        "adv = generator_hinge_loss([s.detach() for s in fake_scores])",
        "the adversarial loss no longer trains the vocoder",
    ),
    Fault(
        "zeroed-discriminator-loss",
        "train/stages.py",
        "loss = discriminator_hinge_loss(real_scores, fake_scores)",
        "loss = 0.0 * discriminator_hinge_loss(real_scores, fake_scores)",
        "the discriminator never learns",
    ),
    Fault(
        "dropped-entropy-loss",
        "train/stages.py",
        "loss = mse + self.entropy_weight * q.entropy_loss",
        "loss = mse",
        "stage Q and the joint step train without the BSQ entropy term",
        count=2,
    ),
    Fault(
        "entropy-sign-flipped",
        "nn/bsq.py",
        "loss = per_sample - diversity_gamma * codebook_entropy",
        "loss = -(per_sample - diversity_gamma * codebook_entropy)",
        "the entropy term pushes towards few, unconfident codes",
    ),
    Fault(
        "misaligned-crops",
        "train/stages.py",
        "t = target[b, start * hop : (start + Fr) * hop]",
        "t = target[b, (start + 1) * hop : (start + 1 + Fr) * hop]",
        "the vocoder learns audio one frame away from its features",
    ),
    Fault(
        "wrong-mel-scale",
        "audio.py",
        "    return torch.where(f >= 1000.0, log, lin)\n",
        "    return 2595.0 * torch.log10(1.0 + f / 700.0)  # HTK\n",
        "the mel loss uses a filter bank that is not the recipe's Slaney one",
    ),
    Fault(
        "swapped-loss-weights",
        "train/config.py",
        '"fm_weight": 54.0,\n            "mel_weight": 45.0,',
        '"fm_weight": 45.0,\n            "mel_weight": 54.0,',
        "feature matching and mel weights swapped (45 / 54 instead of 54 / 45)",
    ),
    Fault(
        "unfrozen-positional-conv",
        "train/stages.py",
        "        module.requires_grad_(False)\n",
        "        module.requires_grad_(True)\n",
        "encoder distillation and the joint step train the parts the recipe freezes",
    ),
    Fault(
        "padding-in-the-loss",
        "train/losses.py",
        "    if lengths is None:\n        return err.mean()\n",
        "    if True:\n        return err.mean()\n",
        "padded frames count in the feature losses (results depend on batch composition)",
    ),
    Fault(
        "plateau-rule-inverted",
        "train/trainer.py",
        "if improvement < self.threshold:",
        "if improvement > self.threshold:",
        "the LR decays when validation improves instead of when it stalls",
    ),
    Fault(
        "accumulation-not-averaged",
        "train/trainer.py",
        'scaler.scale(losses["loss"] / len(micro)).backward()',
        'scaler.scale(losses["loss"]).backward()',
        "gradient accumulation sums the micro-batch gradients instead of averaging them (N × the gradient of N GPUs)",
    ),
    Fault(
        "resume-without-optimizer-state",
        "train/trainer.py",
        'o.load_state_dict(state["optimizers"][p])',
        "pass",
        "a resumed run restarts AdamW's moments",
    ),
    Fault(
        "optimizer-never-steps",
        "train/trainer.py",
        "                scaler.step(opt)\n",
        "                pass\n",
        "gradients are computed but no weight is ever updated",
    ),
    Fault(
        "unusable-entry-stops-training",
        "train/data.py",
        "except (InputError, OSError) as exc:",
        "except OSError as exc:",
        "one NaN or missing file in the manifest kills the run",
    ),
    Fault(
        "export-ignores-encoder-probe",
        "train/export.py",
        "    check_probes(codec.encoder, resolved, runs)\n",
        "",
        "--export combines stages trained on another encoder (random, or another WavLM) without a word",
    ),
    Fault(
        "decoder-probe-never-compared",
        "train/probe.py",
        'if probe.get("stage") == "decoder" and causal and not probe.get("causal"):',
        'if probe.get("stage") == "decoder":',
        "a Vocos decoder trained on another encoder exports into a non-causal codec",
    ),
    Fault(
        "buckets-not-whole-batches",
        "train/data.py",
        "            size = math.ceil(size / self.batch_size) * self.batch_size\n",
        "            pass\n",
        "length buckets are not whole batches: batches mix utterances of two buckets",
    ),
    Fault(
        "feature-cache-own-digest",
        "train/data.py",
        "state_dict_sha256(encoder.state_dict())",
        "hashlib.sha1(str(sorted(encoder.state_dict())).encode()).hexdigest()",
        "the feature cache keys encoders by a digest of its own, not the package's weights identity",
    ),
    Fault(
        "zero-steps-accepted",
        "train/config.py",
        "lambda v: _is_int(v) and v >= 1,\n    ),",
        "lambda v: _is_int(v) and v >= 0,\n    ),",
        "train.max_steps=0 / max_epochs=0 pass validation and save a checkpoint of untrained weights",
        count=2,
    ),
)


def apply(fault: Fault, src: Path) -> None:
    """Apply ``fault`` to the package copy at ``src`` (``.../focalcodec``)."""
    path = src / fault.file
    text = path.read_text(encoding="utf-8")
    found = text.count(fault.old)
    if found != fault.count:
        raise SystemExit(
            f"{fault.name}: expected {fault.count} occurrence(s) of the edit in {fault.file}, found {found}"
        )
    path.write_text(text.replace(fault.old, fault.new), encoding="utf-8")


def run_tests(src_root: Path, junit: Path, first_failure: bool) -> tuple[int, list[str], float]:
    """Run the training tests against the package under ``src_root``; (exit code, failed
    test ids, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(src_root), "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    check = subprocess.run(
        [sys.executable, "-c", "import focalcodec; print(focalcodec.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if not check.stdout.strip().startswith(str(src_root)):
        raise SystemExit(f"the tests would not import the scratch copy: {check.stdout or check.stderr}")
    tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_train*.py"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *tests]
    if first_failure:
        cmd.insert(4, "-x")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    failed = []
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}")
    elif proc.returncode:
        failed.append(f"pytest exit {proc.returncode}: {proc.stdout[-300:]}")
    return proc.returncode, failed, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these faults only")
    parser.add_argument("--first-failure", action="store_true", help="stop each test run at its first failure")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the unmodified copy first")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    args = parser.parse_args()
    names = {f.name for f in FAULTS}
    unknown = set(args.only or ()) - names
    if unknown:
        raise SystemExit(f"unknown fault(s) {', '.join(sorted(unknown))}; faults: {', '.join(sorted(names))}")
    todo = [None] if not args.skip_baseline else []
    todo += [f for f in FAULTS if not args.only or f.name in args.only]
    rows = []
    load = os.getloadavg()[0]
    print(f"load average {load:.2f}; {len(todo)} runs of tests/test_train*.py", flush=True)
    print("| fault | what it breaks | caught | failing tests | seconds |")
    print("|---|---|---|---|---|")
    for fault in todo:
        with tempfile.TemporaryDirectory(prefix="planted_fault_") as tmp:
            src_root = Path(tmp) / "src"
            shutil.copytree(
                ROOT / "src" / "focalcodec", src_root / "focalcodec", ignore=shutil.ignore_patterns("__pycache__")
            )
            if fault is not None:
                apply(fault, src_root / "focalcodec")
            code, failed, seconds = run_tests(src_root, Path(tmp) / "junit.xml", args.first_failure)
        name = fault.name if fault else "none (unmodified copy)"
        caught = bool(failed) if fault else not failed
        row = {
            "fault": name,
            "file": fault.file if fault else None,
            "breaks": fault.breaks if fault else "nothing: the tests must pass",
            "caught": caught if fault else None,
            "passed": code == 0,
            "failed_tests": failed,
            "seconds": round(seconds, 1),
        }
        rows.append(row)
        verdict = ("yes" if caught else "**NO**") if fault else ("passes" if code == 0 else "**FAILS**")
        shown = ", ".join(f"`{t}`" for t in failed[:6]) + (f" (+{len(failed) - 6})" if len(failed) > 6 else "")
        print(f"| `{name}` | {row['breaks']} | {verdict} | {shown or '-'} | {seconds:.0f} |", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "load_average_at_start": load,
            "cpu_count": os.cpu_count(),
            "first_failure_only": args.first_failure,
            "rows": rows,
        }
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    missed = [r["fault"] for r in rows if r["caught"] is False]
    baseline_bad = [r for r in rows if r["caught"] is None and not r["passed"]]
    if missed or baseline_bad:
        raise SystemExit(f"not caught: {', '.join(missed)}" if missed else "the unmodified copy fails its tests")


if __name__ == "__main__":
    main()
