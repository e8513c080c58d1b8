"""A tokenization run on disk: the plan, one Parquet shard and one marker per shard, the
index and the errors list; writing them atomically and checking what a restarted run finds."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import FocalCodecError, InputError
from ..outputs import output_path, write_json, write_text
from ..windowing import DEFAULT, Windowing
from .listing import CorpusItem

__all__ = ["FORMAT", "FORMAT_VERSION", "MARKER_DIR", "SHARD_DIR", "model_identity"]

FORMAT = "focalcodec-tokens"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
MARKER_DIR = "markers"
READING = 2


def pyarrow_module():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FocalCodecError(
            "corpus tokenization needs pyarrow: pip install 'focalcodec[corpus]' (or pip install pyarrow)"
        ) from None
    return pyarrow


def model_identity(model: Any, source: str | None = None) -> dict[str, Any]:
    """What identifies the tokens' model: name, source, config fingerprint, weights checksum, rates."""
    return {
        "model_id": model.model_id,
        "source": source if source is not None else model.model_id,
        "fingerprint": model.fingerprint,
        "weights_sha256": model.weights_sha256,
        "sample_rate_input": model.sample_rate_input,
        "sample_rate_output": model.sample_rate_output,
        "token_rate": model.token_rate,
        "codebook_size": model.codebook_size,
        "config": model.config.to_dict(),
    }


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_plan(
    items: Sequence[CorpusItem],
    shard_size: int,
    identity: Mapping[str, Any],
    windowing: Windowing = DEFAULT,
    max_duration: float | None = None,
) -> dict[str, Any]:
    files = digest([[it.id, it.path] for it in items])
    model = {k: identity[k] for k in ("model_id", "fingerprint", "weights_sha256", "autocast") if k in identity}
    plan = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "num_utterances": len(items),
        "shard_size": shard_size,
        "num_shards": math.ceil(len(items) / shard_size),
        "files_sha256": files,
        "model": model,
        # Long files are encoded in windows: their tokens depend on the geometry.
        "windowing": [windowing.window, windowing.context, windowing.lookahead],
        # How files become samples: 2 = as `focalcodec encode` reads them (compression.model_signal);
        # plans without it read some resampled files one sample longer, which changed their tokens.
        "reading": READING,
    }
    if max_duration is not None:  # which files are skipped: recorded only when set (older plans keep their digest)
        plan["max_duration"] = float(max_duration)
    plan["digest"] = digest(plan)
    return plan


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def schema():
    pa = pyarrow_module()
    return pa.schema(
        [
            ("id", pa.string()),
            ("path", pa.string()),
            ("duration", pa.float64()),
            ("num_samples", pa.int64()),
            ("num_tokens", pa.int64()),
            ("tokens", pa.list_(pa.int32())),
        ]
    )


def shard_name(k: int) -> str:
    return f"shard-{k:06d}"


def write_shard(
    out: Path,
    k: int,
    rows: list[tuple[CorpusItem, int, Tensor]],
    errors: list[dict[str, str]],
    plan: Mapping[str, Any],
    sample_rate: int,
    row_group_size: int,
) -> dict[str, Any]:
    """Write shard ``k`` (Parquet, then its marker, both atomically); return the marker."""
    pa = pyarrow_module()
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": [it.id for it, _, _ in rows],
            "path": [it.path for it, _, _ in rows],
            "duration": [n / sample_rate for _, n, _ in rows],
            "num_samples": [n for _, n, _ in rows],
            "num_tokens": [int(t.numel()) for _, _, t in rows],
            "tokens": [t.to(torch.int32).numpy() for _, _, t in rows],
        },
        schema=schema(),
    )
    table = table.replace_schema_metadata({"focalcodec": json.dumps({"plan": plan["digest"], "shard": k})})
    name = shard_name(k)
    final = out / SHARD_DIR / f"{name}.parquet"
    with output_path(final, force=True) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    marker = {
        "shard": k,
        "file": f"{SHARD_DIR}/{final.name}",
        "sha256": sha256_file(final),
        "bytes": final.stat().st_size,
        "num_rows": len(rows),
        "num_errors": len(errors),
        "duration_s": sum(n for _, n, _ in rows) / sample_rate,
        "num_tokens": sum(int(t.numel()) for _, _, t in rows),
        "plan": plan["digest"],
        "errors": errors,
    }
    write_json(out / MARKER_DIR / f"{name}.json", marker, force=True, sort_keys=True)
    return marker


def finished_marker(out: Path, k: int, plan: Mapping[str, Any]) -> dict[str, Any] | None:
    """The marker of shard ``k`` if it is done for this plan and its file is intact."""
    path = out / MARKER_DIR / f"{shard_name(k)}.json"
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("plan") != plan["digest"]:
        return None
    shard = out / marker.get("file", "")
    if not shard.is_file() or shard.stat().st_size != marker.get("bytes") or sha256_file(shard) != marker.get("sha256"):
        return None
    return marker


def clean_temporaries(out: Path, k: int) -> None:
    """Temporaries of shard ``k`` in the former naming (newer ones are swept by
    :func:`focalcodec.outputs.output_path`)."""
    for tmp in (out / SHARD_DIR).glob(f".{shard_name(k)}.*.tmp"):
        tmp.unlink(missing_ok=True)


def plan_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What makes the run recorded in ``old`` (a ``plan.json``) another than ``new``, in words."""
    if old.get("format") != FORMAT or old.get("version") != FORMAT_VERSION:
        return [f"its plan.json is not a {FORMAT} plan of version {FORMAT_VERSION}"]
    out = []
    if old.get("reading") != new.get("reading"):
        out.append(
            "it was started by an older focalcodec, which read some resampled files one sample longer than "
            "`focalcodec encode` does (other tokens): finish it with that version, or start again"
        )
    if old.get("files_sha256") != new["files_sha256"]:
        out.append(f"other files: {old.get('num_utterances')} utterances then, {new['num_utterances']} now")
    if old.get("shard_size") != new["shard_size"]:
        out.append(f"shard size {old.get('shard_size')} then, {new['shard_size']} now")
    was, now = old.get("model") or {}, new["model"]
    if (was.get("model_id"), was.get("fingerprint")) != (now.get("model_id"), now.get("fingerprint")):
        out.append(
            f"another model: {was.get('model_id')} (config {str(was.get('fingerprint'))[:12]}) then, "
            f"{now.get('model_id')} (config {str(now.get('fingerprint'))[:12]}) now"
        )
    elif was.get("weights_sha256") != now.get("weights_sha256"):
        out.append(
            f"other weights of {now.get('model_id')}: sha256 {str(was.get('weights_sha256'))[:16]} then, "
            f"{str(now.get('weights_sha256'))[:16]} now"
        )
    if was.get("autocast") != now.get("autocast"):
        out.append(f"--autocast {was.get('autocast') or 'off'} then, {now.get('autocast') or 'off'} now")
    if old.get("max_duration") != new.get("max_duration"):
        was_max, now_max = (
            f"{d:g} s" if d is not None else "none" for d in (old.get("max_duration"), new.get("max_duration"))
        )
        out.append(f"--max-duration {was_max} then, {now_max} now")
    if old.get("windowing") and old["windowing"] != new["windowing"]:
        window, context, lookahead = old["windowing"]
        out.append(
            f"its window was {window:g} s + {context:g} s + {lookahead:g} s, this one's {new['windowing'][0]:g} s "
            f"(the default was 12 s before 60 s): pass --window {window:g} to resume it"
        )
    return out or ["its plan differs from this one's"]


def prepare_out(out: Path, plan: Mapping[str, Any], overwrite: bool) -> None:
    """Rank 0: check that ``out`` is empty or holds this very plan; write ``plan.json``."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        try:
            old = json.loads(plan_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if not isinstance(old, dict):
            old = {}
        if old.get("digest") != plan["digest"]:
            if not overwrite:
                raise InputError(
                    f"{out} holds another tokenization run ({'; '.join(plan_differences(old, plan))}); "
                    "choose a new -o/--output folder or pass -f/--force (Python: overwrite=True) to replace it"
                )
            for folder in (SHARD_DIR, MARKER_DIR):
                for p in (out / folder).glob("*"):
                    if p.name.startswith((".shard-", "shard-")):
                        p.unlink()
            for name in ("index.json", "errors.tsv"):
                (out / name).unlink(missing_ok=True)
    elif (out / "index.json").exists() or any((out / SHARD_DIR).glob("shard-*")):
        raise InputError(f"{out} holds shards without a plan.json; choose a new -o/--output folder")
    else:
        # Not a run of ours: write into it only when empty (-o given the corpus folder, or a home
        # folder by mistake, would get shards/, markers/ and a replaced errors.tsv or index.json).
        # Empty shards/ and markers/ are what a run killed at once leaves; hidden files (plan.json's
        # temporary, .DS_Store, .nfs...) are not in the way.
        others = sorted(
            p.name
            for p in out.iterdir()
            if not (p.name in (SHARD_DIR, MARKER_DIR) and p.is_dir() and not any(p.iterdir()))
            and not p.name.startswith(".")
        )
        if others:
            raise InputError(
                f"{out} is not empty ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}) and holds no "
                "tokenization run; choose a new or empty -o/--output folder"
            )
    for folder in (SHARD_DIR, MARKER_DIR):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_json(plan_path, plan, force=True, sort_keys=True)


def _write_errors(path: Path, markers: Sequence[Mapping[str, Any]]) -> int:
    lines = ["id\tpath\treason"]
    for m in markers:
        for e in m["errors"]:
            clean = [str(e[c]).replace("\t", " ").replace("\n", " ") for c in ("id", "path", "reason")]
            lines.append("\t".join(clean))
    write_text(path, "\n".join(lines) + "\n", force=True)
    return len(lines) - 1


def write_index(
    out: Path, plan: Mapping[str, Any], identity: Mapping[str, Any], markers: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    num_errors = _write_errors(out / "errors.tsv", markers)
    index = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "plan": plan["digest"],
        "model": dict(identity),
        "columns": {
            "id": "string, unique utterance id",
            "path": "string, source file (relative to the data folder, or as in the manifest)",
            "duration": "float64, seconds of audio",
            "num_samples": f"int64, samples at {identity['sample_rate_input']} Hz",
            "num_tokens": "int64, length of tokens",
            "tokens": f"list<int32>, token ids in [0, {identity['codebook_size']})",
        },
        "num_utterances": sum(m["num_rows"] for m in markers),
        "num_errors": num_errors,
        "duration_s": sum(m["duration_s"] for m in markers),
        "num_tokens": sum(m["num_tokens"] for m in markers),
        "errors_file": "errors.tsv",
        "shards": [
            {k: m[k] for k in ("file", "sha256", "bytes", "num_rows", "num_errors", "duration_s", "num_tokens")}
            for m in markers
        ],
    }
    write_json(out / "index.json", index, force=True, sort_keys=True)
    return index
