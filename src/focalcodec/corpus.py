"""Corpus tokenization: many audio files -> Parquet shards of FocalCodec tokens.

Resumable, deterministic and scaled out with PyTorch's own launcher (``torchrun``).

Output folder of :func:`tokenize_corpus` (``out/``)::

    plan.json                    what the run tokenizes: file list digest, shard size, model identity
    shards/shard-000000.parquet  one row per utterance: id, path, duration, num_samples, num_tokens, tokens
    markers/shard-000000.json    the shard's "done" marker: sha256 of the Parquet file, totals, its errors
    errors.tsv                   files that could not be tokenized: id, path, reason
    index.json                   every shard with its checksum, the totals and the model identity

How the work is laid out (so that the output never depends on how it was run):

- The file list is put in a fixed order (sorted relative paths of a folder, or the manifest's
  order) and cut into shards of ``shard_size`` consecutive utterances. Shard ``k`` is done by
  rank ``k % world_size``; each rank writes its own shards and rank 0 writes ``errors.tsv`` and
  ``index.json`` once every rank is done. One process or many, the files are byte-identical.
- Inside a shard, DataLoader workers read, mix down and resample the audio; the main process
  sorts a window of utterances by length and encodes them in padded batches with per-item
  lengths. :meth:`FocalCodec.encode` is batch-invariant, so each utterance gets exactly the
  tokens it gets alone. Utterances longer than one window (``windowing``: 64 s by default) are
  encoded alone, window by window (:func:`focalcodec.longform.encode_long`), so memory does not
  grow with the square of a file's duration; every utterance thus gets exactly the tokens
  ``focalcodec encode`` gives its file. Rows are written in the fixed order, not in batch order.
- A shard is finished once its marker exists and the Parquet file's sha256 matches it. A
  restarted run skips finished shards and redoes the rest, so a killed run restarted with the
  same command gives the same bytes as an uninterrupted one.

Reading back: :class:`TokenCorpus` (iterate, fetch by id), :class:`TokenDataset` (a PyTorch
``Dataset``) and :func:`collate_tokens` (padding for a ``DataLoader``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .audio import AUDIO_EXTENSIONS, load_audio
from .errors import FocalCodecError, InputError
from .limits import read_text_input
from .longform import encode_long
from .outputs import output_path, write_text
from .windowing import DEFAULT, Windowing

__all__ = [
    "CorpusItem",
    "TokenCorpus",
    "TokenDataset",
    "TokenizeSummary",
    "Utterance",
    "collate_tokens",
    "list_corpus",
    "model_identity",
    "tokenize_corpus",
]

FORMAT = "focalcodec-tokens"
FORMAT_VERSION = 1
SHARD_DIR = "shards"
MARKER_DIR = "markers"
PathLike = str | Path

_PATH_COLUMNS = ("path", "audio", "audio_path", "file", "filename", "wav")
_ID_COLUMNS = ("id", "utt_id", "utterance_id", "key")
_DURATION_COLUMNS = ("duration", "duration_s", "dur_s", "dur", "seconds")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FocalCodecError(
            "corpus tokenization needs pyarrow: pip install 'focalcodec[corpus]' (or pip install pyarrow)"
        ) from None
    return pyarrow


# ---------------------------------------------------------------------------------------------
# The file list
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusItem:
    """One utterance to tokenize: ``id`` (unique), ``path`` (as stored in the shards: relative
    to the data folder, or as written in the manifest), ``file`` (where it is read from) and
    ``duration`` (seconds, from the manifest when it has them; used for progress only)."""

    id: str
    path: str
    file: str
    duration: float | None = None


def _manifest_rows(manifest: Path) -> list[dict[str, str]]:
    """Rows of a ``.tsv``/``.csv`` (with a header), ``.jsonl`` or plain list (one path a line)."""
    suffix = manifest.suffix.lower()
    text = read_text_input(manifest, "manifest")
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        if not any(c in columns for c in _PATH_COLUMNS):
            raise InputError(
                f"manifest {manifest} has no path column (one of {', '.join(_PATH_COLUMNS)}); "
                f"its header is: {', '.join(columns) or '(empty)'}"
            )
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    if suffix in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"manifest {manifest}, line {n}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise InputError(f"manifest {manifest}, line {n}: expected a JSON object")
            rows.append({str(k).lower(): "" if v is None else str(v) for k, v in row.items()})
        return rows
    return [{"path": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _pick(row: Mapping[str, str], names: Sequence[str]) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    return ""


def _manifest_base(manifest: Path, first: str) -> Path:
    """The folder relative paths are read from: the manifest's folder, or the nearest folder
    above it in which the first relative path exists (manifests often sit in a sub-folder)."""
    start = manifest.resolve().parent
    for base in (start, *start.parents):
        if (base / first).exists():
            return base
    return start


def list_corpus(data: PathLike, root: PathLike | None = None) -> list[CorpusItem]:
    """The utterances of ``data`` in a fixed order.

    ``data`` is a folder (every audio file below it, sorted by relative path; id = relative path
    without its suffix) or a manifest: ``.tsv``/``.csv`` with a header naming a path column
    (``path``, ``audio``, ``file``, ...) and optionally ``id`` and ``duration``/``dur_s``;
    ``.jsonl`` with the same keys; or any other text file with one path a line. Manifest order is
    kept. Relative manifest paths are read from ``root`` when given, else from the manifest's
    folder or the nearest folder above it where the first path exists.
    Raises :class:`InputError` for a missing ``data``, no files, or duplicate ids.
    """
    data = Path(data)
    items: list[CorpusItem] = []
    if data.is_dir():
        exts = tuple(e.lower() for e in AUDIO_EXTENSIONS)
        found = sorted(
            (p.relative_to(data).as_posix(), p) for p in data.rglob("*") if p.suffix.lower() in exts and p.is_file()
        )
        for rel, p in found:
            items.append(CorpusItem(id=rel.rsplit(".", 1)[0], path=rel, file=str(p)))
        if not items:
            raise InputError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below {data}")
    elif data.is_file():
        if data.suffix.lower() in AUDIO_EXTENSIONS:
            raise InputError(f"{data} is an audio file; pass a folder of audio files or a manifest listing them")
        rows = _manifest_rows(data)
        if not rows:
            raise InputError(f"manifest {data} lists no files")
        paths = [_pick(r, _PATH_COLUMNS) for r in rows]
        first_rel = next((p for p in paths if p and not Path(p).is_absolute()), None)
        base = Path(root) if root is not None else (_manifest_base(data, first_rel) if first_rel else data.parent)
        for n, (row, path) in enumerate(zip(rows, paths, strict=False), 1):
            if not path:
                raise InputError(f"manifest {data}, row {n}: empty path")
            dur = _pick(row, _DURATION_COLUMNS)
            try:
                duration = float(dur) if dur else None
            except ValueError:
                duration = None
            uid = _pick(row, _ID_COLUMNS) or path.rsplit(".", 1)[0]
            items.append(CorpusItem(id=uid, path=path, file=str(base / path), duration=duration))
    else:
        raise InputError(f"--data {data} does not exist (give a folder of audio files or a manifest)")
    seen: dict[str, int] = {}
    dups = []
    for it in items:
        seen[it.id] = seen.get(it.id, 0) + 1
        if seen[it.id] == 2:
            dups.append(it.id)
    if dups:
        raise InputError(
            f"{len(dups)} utterance id(s) appear more than once in {data}, e.g. {dups[:3]}; "
            "ids must be unique (in a folder, a.wav and a.flac both give id 'a')"
        )
    return items


# ---------------------------------------------------------------------------------------------
# Model identity and the plan
# ---------------------------------------------------------------------------------------------
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


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _plan(
    items: Sequence[CorpusItem], shard_size: int, identity: Mapping[str, Any], windowing: Windowing = DEFAULT
) -> dict[str, Any]:
    files = _digest([[it.id, it.path] for it in items])
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
    }
    plan["digest"] = _digest(plan)
    return plan


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", force=True)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Distributed set-up (torchrun)
# ---------------------------------------------------------------------------------------------
class _Dist:
    """Rank and world size from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT). Starts the process group if needed (gloo on CPU, nccl on CUDA) and keeps a
    gloo group for gathering the shard markers, which are Python objects."""

    def __init__(self, device: str, timeout_hours: float) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif world > 1:
            backend = "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"
            dist.init_process_group(backend, timeout=timedelta(hours=timeout_hours))
            self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        self.group = None
        if self.world > 1:
            self.group = dist.new_group(backend="gloo", timeout=timedelta(hours=timeout_hours))

    def all_gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


def _rank_device(device: str) -> str:
    """``cuda`` under torchrun means this process's GPU, ``cuda:LOCAL_RANK`` (made current)."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    from .cli.common import check_device

    checked = check_device(device)
    if checked.type == "cuda":
        torch.cuda.set_device(checked)
    return device


# ---------------------------------------------------------------------------------------------
# Reading audio in DataLoader workers
# ---------------------------------------------------------------------------------------------
class _AudioFiles(torch.utils.data.Dataset):
    """``dataset[i] -> (i, (N,) float32 at 16 kHz or None, reason or None)``; never raises
    for a bad file, so that one file cannot stop the run."""

    def __init__(self, items: Sequence[CorpusItem], sample_rate: int, max_duration: float | None) -> None:
        self.items = list(items)
        self.sample_rate = sample_rate
        self.max_duration = max_duration

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, Tensor | None, str | None]:
        item = self.items[i]
        try:
            sig = load_audio(item.file, self.sample_rate, warn=False)
        except FocalCodecError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, not fatal
            return i, None, f"{type(exc).__name__}: {exc}"
        if self.max_duration is not None and sig.numel() > self.max_duration * self.sample_rate:
            return i, None, f"longer than the limit of {self.max_duration:g} s ({sig.numel() / self.sample_rate:.1f} s)"
        return i, sig, None


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _first(batch: list[Any]) -> Any:
    return batch[0]


# ---------------------------------------------------------------------------------------------
# Batching and encoding
# ---------------------------------------------------------------------------------------------
def length_batches(lengths: Sequence[int], max_batch_samples: int, max_batch_size: int) -> list[list[int]]:
    """Group indices of ``lengths`` into batches of similar length (longest first) such that
    ``len(batch) * longest <= max_batch_samples`` and ``len(batch) <= max_batch_size``; an item
    longer than the budget forms a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > max_batch_samples or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


AUTOCAST_DTYPES = ("float16", "bfloat16")


class _AutocastEncoder:
    """``model.encode`` run inside ``torch.autocast(dtype)`` on the model's device (the codec
    keeps its sign decisions in float32)."""

    def __init__(self, model: Any, dtype: str) -> None:
        self.model, self.dtype = model, getattr(torch, dtype)

    def encode(self, batch: Tensor, lens: Tensor) -> Any:
        device = next(self.model.parameters()).device.type
        with torch.autocast(device, dtype=self.dtype):
            return self.model.encode(batch, lens)

    def encode_long(self, sig: Tensor, windowing: Windowing) -> Tensor:
        device = next(self.model.parameters()).device.type
        with torch.autocast(device, dtype=self.dtype):
            return encode_long(self.model, sig, windowing)


def _windowed(model: Any, windowing: Windowing) -> int:
    """Samples above which an utterance is encoded alone, window by window: one window with
    its context (64 s by default). Shorter ones are batched; :func:`encode_long` would encode
    them in one pass too, and causal models give one-pass tokens in any case."""
    codec = model.model if isinstance(model, _AutocastEncoder) else model
    core, left, right = windowing.token_geometry(codec.token_rate)
    return int(round((core + left + right) * codec.sample_rate_input / codec.token_rate))


def _encode_long(model: Any, sig: Tensor, windowing: Windowing) -> Tensor:
    if isinstance(model, _AutocastEncoder):
        return model.encode_long(sig, windowing)
    return encode_long(model, sig, windowing)


def _encode_batch(model: Any, sigs: Sequence[Tensor]) -> list[Tensor]:
    """Padded batch with per-item lengths -> each item's tokens ``(T_i,)`` int64 on CPU."""
    lens = torch.tensor([s.numel() for s in sigs])
    batch = torch.zeros(len(sigs), int(lens.max()))
    for row, s in enumerate(sigs):
        batch[row, : s.numel()] = s
    toks, tok_lens = model.encode(batch, lens)
    toks = toks.cpu()
    return [toks[row, : int(tok_lens[row])].clone() for row in range(len(sigs))]


def _encode_window(
    model: Any,
    sigs: dict[int, Tensor],
    max_batch_samples: int,
    max_batch_size: int,
    windowing: Windowing = DEFAULT,
) -> tuple[dict[int, Tensor], dict[int, str]]:
    """Encode ``{index: (N,) signal}`` in length-sorted batches; utterances longer than one
    window alone, window by window. A batch that fails is retried item by item, so only the
    items that fail alone are reported (as ``{index: reason}``)."""
    tokens: dict[int, Tensor] = {}
    errors: dict[int, str] = {}
    limit = _windowed(model, windowing)
    for k in [k for k in sigs if sigs[k].numel() > limit]:
        try:
            tokens[k] = _encode_long(model, sigs[k], windowing).cpu()
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            errors[k] = "out of memory while encoding (window by window); use a smaller --window"
        except Exception as exc:  # noqa: BLE001
            errors[k] = f"encoding failed: {type(exc).__name__}: {exc}"
    keys = [k for k in sigs if sigs[k].numel() <= limit]
    for batch in length_batches([sigs[k].numel() for k in keys], max_batch_samples, max_batch_size):
        ids = [keys[b] for b in batch]
        try:
            tokens.update(zip(ids, _encode_batch(model, [sigs[k] for k in ids]), strict=False))
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - retried one item at a time below
            if len(ids) == 1:
                errors[ids[0]] = f"encoding failed: {type(exc).__name__}: {exc}"
                continue
        for k in ids:
            try:
                tokens[k] = _encode_batch(model, [sigs[k]])[0]
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001
                errors[k] = f"encoding failed: {type(exc).__name__}: {exc}"
    return tokens, errors


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------
def _schema():
    pa = _pyarrow()
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


def _shard_name(k: int) -> str:
    return f"shard-{k:06d}"


def _write_shard(
    out: Path,
    k: int,
    rows: list[tuple[CorpusItem, int, Tensor]],
    errors: list[dict[str, str]],
    plan: Mapping[str, Any],
    sample_rate: int,
    row_group_size: int,
) -> dict[str, Any]:
    """Write shard ``k`` (Parquet, then its marker, both atomically); return the marker."""
    pa = _pyarrow()
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
        schema=_schema(),
    )
    table = table.replace_schema_metadata({"focalcodec": json.dumps({"plan": plan["digest"], "shard": k})})
    name = _shard_name(k)
    final = out / SHARD_DIR / f"{name}.parquet"
    with output_path(final, force=True) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_size)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    marker = {
        "shard": k,
        "file": f"{SHARD_DIR}/{final.name}",
        "sha256": _sha256_file(final),
        "bytes": final.stat().st_size,
        "num_rows": len(rows),
        "num_errors": len(errors),
        "duration_s": sum(n for _, n, _ in rows) / sample_rate,
        "num_tokens": sum(int(t.numel()) for _, _, t in rows),
        "plan": plan["digest"],
        "errors": errors,
    }
    _write_json(out / MARKER_DIR / f"{name}.json", marker)
    return marker


def _finished_marker(out: Path, k: int, plan: Mapping[str, Any]) -> dict[str, Any] | None:
    """The marker of shard ``k`` if it is done for this plan and its file is intact."""
    path = out / MARKER_DIR / f"{_shard_name(k)}.json"
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("plan") != plan["digest"]:
        return None
    shard = out / marker.get("file", "")
    if (
        not shard.is_file()
        or shard.stat().st_size != marker.get("bytes")
        or _sha256_file(shard) != marker.get("sha256")
    ):
        return None
    return marker


def _clean_temporaries(out: Path, k: int) -> None:
    """Temporaries of shard ``k`` in the former naming (newer ones are swept by
    :func:`focalcodec.outputs.output_path`)."""
    for tmp in (out / SHARD_DIR).glob(f".{_shard_name(k)}.*.tmp"):
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
class _Progress:
    """tqdm bar counting hours of audio, with the rate in hours of audio per second."""

    def __init__(self, enabled: bool, total_hours: float | None, files: int, rank_note: str) -> None:
        self.bar = None
        self.start = time.perf_counter()
        self.seconds = 0.0
        self.files = 0
        self.errors = 0
        self.total_files = files
        if enabled:
            from tqdm import tqdm

            fmt = "{desc}: {n:.3f}" + ("/{total:.3f}" if total_hours else "") + " h audio [{elapsed}{postfix}]"
            self.bar = tqdm(
                total=total_hours, desc=f"tokenize{rank_note}", bar_format=fmt, file=sys.stderr, dynamic_ncols=True
            )

    def update(self, seconds: float, files: int, errors: int) -> None:
        self.seconds += seconds
        self.files += files
        self.errors += errors
        if self.bar is not None:
            self.bar.update(seconds / 3600)
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            rate = self.seconds / 3600 / elapsed
            self.bar.set_postfix_str(
                f"{rate:.3g} h audio/s ({self.seconds / elapsed:.2f}x real time), "
                f"{self.files}/{self.total_files} files, {self.errors} errors"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
class TokenizeSummary(NamedTuple):
    """What a run did, over all ranks. ``encoded_*`` count this invocation's work only
    (finished shards that a resumed run skipped are not in them)."""

    out: Path
    num_utterances: int
    num_errors: int
    num_shards: int
    skipped_shards: int
    duration_s: float
    num_tokens: int
    encoded_duration_s: float
    wall_s: float
    world_size: int


def _prepare_out(out: Path, plan: Mapping[str, Any], overwrite: bool) -> None:
    """Rank 0: check that ``out`` is empty or holds this very plan; write ``plan.json``."""
    plan_path = out / "plan.json"
    if plan_path.exists():
        try:
            old = json.loads(plan_path.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        if old.get("digest") != plan["digest"]:
            if not overwrite:
                hint = ""
                if old.get("windowing") and old.get("windowing") != plan["windowing"]:
                    window, context, lookahead = old["windowing"]
                    hint = (
                        f" (its window was {window:g} s + {context:g} s + {lookahead:g} s, this one's "
                        f"{plan['windowing'][0]:g} s; the default was 12 s before 60 s: pass --window {window:g} "
                        "to resume it)"
                    )
                raise InputError(
                    f"{out} holds another tokenization run (different files, shard size, model or window){hint}; "
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
    for folder in (SHARD_DIR, MARKER_DIR):
        (out / folder).mkdir(parents=True, exist_ok=True)
    _write_json(plan_path, plan)


def _write_errors(path: Path, markers: Sequence[Mapping[str, Any]]) -> int:
    lines = ["id\tpath\treason"]
    for m in markers:
        for e in m["errors"]:
            clean = [str(e[c]).replace("\t", " ").replace("\n", " ") for c in ("id", "path", "reason")]
            lines.append("\t".join(clean))
    write_text(path, "\n".join(lines) + "\n", force=True)
    return len(lines) - 1


def _write_index(
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
    _write_json(out / "index.json", index)
    return index


def tokenize_corpus(
    data: PathLike | Sequence[CorpusItem],
    out: PathLike,
    model: Any,
    *,
    model_source: str | None = None,
    root: PathLike | None = None,
    device: str = "cpu",
    shard_size: int = 1000,
    window: int = 256,
    batch_seconds: float = 60.0,
    max_batch_size: int = 32,
    num_workers: int = 2,
    max_duration: float | None = None,
    row_group_size: int = 256,
    overwrite: bool = False,
    progress: bool = True,
    dist_timeout_hours: float = 72.0,
    autocast: str | None = None,
    windowing: Windowing = DEFAULT,
) -> TokenizeSummary:
    """Tokenize every utterance of ``data`` into Parquet shards under ``out``.

    ``data``: a folder, a manifest (see :func:`list_corpus`) or a list of :class:`CorpusItem`.
    ``model``: a :class:`~focalcodec.FocalCodec` or a name/path for ``from_pretrained``
    (``model_source`` names it in the index when a model object is given).
    ``shard_size``: utterances per shard (also the unit of resuming). ``window``: utterances
    sorted by length together (CLI ``--sort-group``); ``windowing``: window geometry for
    utterances longer than one window (CLI ``--window`` seconds), encoded as ``encode`` does;
    ``batch_seconds``: padded seconds of audio per batch;
    ``max_batch_size``: items per batch. ``num_workers``: DataLoader processes reading audio.
    ``max_duration``: longer files go to the errors list. ``autocast``: ``"float16"`` or
    ``"bfloat16"`` to encode under ``torch.autocast`` (faster on GPUs; tokens close to but not
    always equal to float32's: 99.6 % for float16 on real speech, docs/benchmarks.md); it is
    part of the run's identity, so a resumed run must use the same. Under ``torchrun`` (``WORLD_SIZE``
    > 1) each rank does shards ``k % world_size == rank`` and rank 0 writes the index.
    Returns a :class:`TokenizeSummary` (the same on every rank).
    """
    for name, value in (("shard_size", shard_size), ("window", window), ("max_batch_size", max_batch_size)):
        if int(value) < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if batch_seconds <= 0:
        raise InputError(f"batch_seconds must be positive, got {batch_seconds}")
    if num_workers < 0:
        raise InputError(f"num_workers must be 0 or more, got {num_workers}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise InputError(f"autocast must be one of {AUTOCAST_DTYPES} or None, got {autocast!r}")
    _pyarrow()
    started = time.perf_counter()
    out = Path(out)
    items = list(data) if isinstance(data, (list, tuple)) else list_corpus(data, root)
    device = _rank_device(str(device))
    dist = _Dist(device, dist_timeout_hours)
    try:
        if isinstance(model, (str, Path)):
            from .codec import FocalCodec

            model_source = str(model) if model_source is None else model_source
            model = FocalCodec.from_pretrained(str(model), map_location=device)
        else:
            model = model.to(device)
        model.eval()
        identity = model_identity(model, model_source)
        if autocast is not None:
            identity["autocast"] = autocast
        plan = _plan(items, int(shard_size), identity, windowing)
        digests = dist.all_gather(plan["digest"])
        if len(set(digests)) > 1:
            raise InputError(
                "the ranks see different file lists or models (plan digests differ); on several nodes "
                "give every node the same --data, --model and shared storage for -o/--output"
            )
        problem = None
        if dist.rank == 0:
            try:
                out.mkdir(parents=True, exist_ok=True)
                _prepare_out(out, plan, overwrite)
            except (FocalCodecError, OSError) as exc:
                problem = str(exc)
        problems = [p for p in dist.all_gather(problem) if p]
        if problems:  # every rank stops with rank 0's reason instead of waiting for it
            raise InputError(problems[0])
        for folder in (SHARD_DIR, MARKER_DIR):
            (out / folder).mkdir(parents=True, exist_ok=True)

        mine = [k for k in range(plan["num_shards"]) if k % dist.world == dist.rank]
        done: dict[int, dict[str, Any]] = {}
        for k in mine:
            _clean_temporaries(out, k)
            marker = _finished_marker(out, k, plan)
            if marker is not None:
                done[k] = marker
        todo = [k for k in mine if k not in done]
        markers, encoded_s = _run_shards(
            model if autocast is None else _AutocastEncoder(model, autocast),
            items,
            todo,
            plan,
            out,
            identity["sample_rate_input"],
            int(shard_size),
            int(window),
            batch_seconds,
            int(max_batch_size),
            int(num_workers),
            max_duration,
            int(row_group_size),
            progress and dist.rank == 0,
            f" (rank 0 of {dist.world})" if dist.world > 1 else "",
            windowing,
        )
        done.update(markers)

        gathered = dist.all_gather((sorted(done.items()), len(mine) - len(todo), encoded_s))
        all_markers = [m for part in gathered for _, m in part[0]]
        all_markers.sort(key=lambda m: m["shard"])
        if [m["shard"] for m in all_markers] != list(range(plan["num_shards"])):
            raise FocalCodecError("internal error: the ranks did not cover every shard exactly once")
        if dist.rank == 0:
            _write_index(out, plan, identity, all_markers)
        dist.barrier()
        return TokenizeSummary(
            out=out,
            num_utterances=sum(m["num_rows"] for m in all_markers),
            num_errors=sum(m["num_errors"] for m in all_markers),
            num_shards=plan["num_shards"],
            skipped_shards=sum(part[1] for part in gathered),
            duration_s=sum(m["duration_s"] for m in all_markers),
            num_tokens=sum(m["num_tokens"] for m in all_markers),
            encoded_duration_s=sum(part[2] for part in gathered),
            wall_s=time.perf_counter() - started,
            world_size=dist.world,
        )
    finally:
        dist.close()


def _run_shards(
    model: Any,
    items: Sequence[CorpusItem],
    todo: Sequence[int],
    plan: Mapping[str, Any],
    out: Path,
    sample_rate: int,
    shard_size: int,
    window: int,
    batch_seconds: float,
    max_batch_size: int,
    num_workers: int,
    max_duration: float | None,
    row_group_size: int,
    show: bool,
    note: str,
    windowing: Windowing = DEFAULT,
) -> tuple[dict[int, dict[str, Any]], float]:
    """Encode the shards ``todo`` of this rank; return their markers and the seconds encoded."""
    # Flat list of this rank's pending utterances, shard after shard.
    flat: list[int] = []
    bounds: list[tuple[int, int, int]] = []  # (shard, first flat position, end)
    for k in todo:
        lo, hi = k * shard_size, min((k + 1) * shard_size, len(items))
        bounds.append((k, len(flat), len(flat) + hi - lo))
        flat.extend(range(lo, hi))
    markers: dict[int, dict[str, Any]] = {}
    if not flat:
        return markers, 0.0
    durations = [items[i].duration for i in flat]
    total_h = sum(durations) / 3600 if all(d is not None for d in durations) else None  # type: ignore[arg-type]
    bar = _Progress(show, total_h, len(flat), note)
    loader = torch.utils.data.DataLoader(
        _AudioFiles([items[i] for i in flat], sample_rate, max_duration),
        batch_size=1,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_first,
        worker_init_fn=_worker_init if num_workers else None,
        prefetch_factor=4 if num_workers else None,
        persistent_workers=False,
    )
    max_samples = int(batch_seconds * sample_rate)
    stream = iter(loader)
    encoded = 0.0
    try:
        for k, lo, hi in bounds:
            tokens: dict[int, Tensor] = {}
            lengths: dict[int, int] = {}
            errors: dict[int, str] = {}
            for wlo in range(lo, hi, window):
                whi = min(wlo + window, hi)
                sigs: dict[int, Tensor] = {}
                for _ in range(wlo, whi):
                    pos, sig, reason = next(stream)
                    if sig is None:
                        errors[pos] = reason or "unknown error"
                    else:
                        sigs[pos] = sig
                        lengths[pos] = sig.numel()
                toks, errs = _encode_window(model, sigs, max_samples, max_batch_size, windowing)
                tokens.update(toks)
                errors.update(errs)
                secs = sum(lengths[p] for p in toks) / sample_rate
                encoded += secs
                bar.update(secs, whi - wlo, sum(1 for p in range(wlo, whi) if p in errors))
            rows = [(items[flat[p]], lengths[p], tokens[p]) for p in range(lo, hi) if p in tokens]
            errs_list = [
                {"id": items[flat[p]].id, "path": items[flat[p]].path, "reason": errors[p]}
                for p in range(lo, hi)
                if p in errors
            ]
            markers[k] = _write_shard(out, k, rows, errs_list, plan, sample_rate, row_group_size)
    finally:
        bar.close()
        del stream
    return markers, encoded


# ---------------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------------
class Utterance(NamedTuple):
    """One tokenized utterance: ``tokens`` is ``(T,)`` int64."""

    id: str
    path: str
    duration: float
    num_samples: int
    tokens: Tensor


class TokenCorpus:
    """The output of :func:`tokenize_corpus`, read back.

    >>> corpus = TokenCorpus("tokens/")                       # doctest: +SKIP
    >>> for utt in corpus: ...                                # Utterance(id, path, duration, num_samples, tokens)
    >>> corpus["speaker1/utt3"].tokens                        # (T,) int64, fetched by id
    >>> corpus.model["fingerprint"], corpus.errors()          # model identity, skipped files

    ``verify=True`` checks every shard's sha256 against the index. ``cache_shards`` shards are
    kept in memory for random access.
    """

    def __init__(self, directory: PathLike, verify: bool = False, cache_shards: int = 4) -> None:
        self.directory = Path(directory)
        path = self.directory / "index.json"
        if not path.is_file():
            raise InputError(
                f"{self.directory} has no index.json: not a finished tokenization (run or resume focalcodec tokenize)"
            )
        try:
            self.index = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{path} is not valid JSON: {exc}") from None
        if self.index.get("format") != FORMAT:
            raise InputError(f"{path} is not a focalcodec token index (format {self.index.get('format')!r})")
        self.shards: list[dict[str, Any]] = list(self.index["shards"])
        self._offsets = [0]
        for s in self.shards:
            self._offsets.append(self._offsets[-1] + int(s["num_rows"]))
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_size = max(1, cache_shards)
        self._ids: dict[str, int] | None = None
        if verify:
            self.verify()

    # -- facts -----------------------------------------------------------------------------------
    @property
    def model(self) -> dict[str, Any]:
        """Identity of the model that made the tokens (model_id, source, fingerprint, ...)."""
        return self.index["model"]

    @property
    def shard_files(self) -> list[Path]:
        """The Parquet files, in order (e.g. for ``datasets.load_dataset("parquet", data_files=...)``)."""
        return [self.directory / s["file"] for s in self.shards]

    def __len__(self) -> int:
        return self._offsets[-1]

    def verify(self) -> None:
        """Raise :class:`InputError` when a shard is missing or its sha256 differs from the index."""
        for s, f in zip(self.shards, self.shard_files, strict=False):
            if not f.is_file():
                raise InputError(f"shard {f} listed in the index is missing")
            if _sha256_file(f) != s["sha256"]:
                raise InputError(f"shard {f} does not match its checksum in the index (changed or damaged)")

    def errors(self) -> list[dict[str, str]]:
        """Files the run skipped: ``[{"id", "path", "reason"}, ...]``."""
        path = self.directory / self.index.get("errors_file", "errors.tsv")
        if not path.is_file():
            return []
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))

    # -- rows ------------------------------------------------------------------------------------
    def _read_shard(self, s: int, columns: list[str] | None = None, memory_map: bool = False) -> Any:
        """Shard ``s`` as a pyarrow table; a missing, damaged or foreign file is an
        :class:`InputError` saying to resume the run that made it."""
        _pyarrow()
        import pyarrow.parquet as pq

        path = self.shard_files[s]
        try:
            table = pq.read_table(path, columns=columns, memory_map=memory_map)
        except FileNotFoundError:
            raise InputError(f"shard {path} is missing; resume `focalcodec tokenize` to rebuild it") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for damaged files vary
            raise InputError(
                f"shard {path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "resume `focalcodec tokenize` on this folder to rebuild it"
            ) from None
        wanted = set(columns or _schema().names)
        if set(table.column_names) != wanted or table.num_rows != int(self.shards[s]["num_rows"]):
            raise InputError(
                f"shard {path} does not match index.json (columns {table.column_names}, {table.num_rows} rows); "
                "resume `focalcodec tokenize` on this folder to rebuild it"
            )
        return table

    def _table(self, s: int) -> Any:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        table = self._read_shard(s, memory_map=True)
        self._cache[s] = table
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return table

    @staticmethod
    def _row(table: Any, r: int) -> Utterance:
        row = {name: table.column(name)[r].as_py() for name in ("id", "path", "duration", "num_samples")}
        tokens = torch.from_numpy(table.column("tokens")[r].values.to_numpy(zero_copy_only=False).astype("int64"))
        return Utterance(row["id"], row["path"], float(row["duration"]), int(row["num_samples"]), tokens)

    def _locate(self, i: int) -> tuple[int, int]:
        import bisect

        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"utterance {i} out of range for a corpus of {len(self)}")
        s = bisect.bisect_right(self._offsets, i) - 1
        return s, i - self._offsets[s]

    def ids(self) -> list[str]:
        """Every utterance id, in corpus order."""
        return list(self._id_map())

    def _id_map(self) -> dict[str, int]:
        if self._ids is None:
            ids: dict[str, int] = {}
            for s in range(len(self.shards)):
                for uid in self._read_shard(s, columns=["id"]).column("id").to_pylist():
                    ids[uid] = len(ids)
            self._ids = ids
        return self._ids

    def __contains__(self, uid: object) -> bool:
        return uid in self._id_map()

    def __getitem__(self, key: int | str) -> Utterance:
        """Fetch by position (int) or by utterance id (str)."""
        if isinstance(key, str):
            pos = self._id_map().get(key)
            if pos is None:
                raise KeyError(f"no utterance with id {key!r} in {self.directory}")
            key = pos
        s, r = self._locate(int(key))
        return self._row(self._table(s), r)

    def __iter__(self) -> Iterator[Utterance]:
        """Every utterance in corpus order, one shard in memory at a time."""
        for s in range(len(self.shards)):
            table = self._read_shard(s)
            for r in range(table.num_rows):
                yield self._row(table, r)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers: no pyarrow tables in pickles
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()
        return state


class TokenDataset(torch.utils.data.Dataset):
    """A map-style PyTorch ``Dataset`` over a tokenized corpus.

    ``dataset[i] -> {"id": str, "tokens": (T,) int64}`` (``max_tokens`` crops to the first
    ``max_tokens``). Use :func:`collate_tokens` as the DataLoader's ``collate_fn``.
    """

    def __init__(self, corpus: TokenCorpus | PathLike, max_tokens: int | None = None) -> None:
        self.corpus = corpus if isinstance(corpus, TokenCorpus) else TokenCorpus(corpus)
        self.max_tokens = max_tokens

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.corpus[int(i)]
        tokens = utt.tokens if self.max_tokens is None else utt.tokens[: self.max_tokens]
        return {"id": utt.id, "tokens": tokens}


def collate_tokens(batch: Sequence[Mapping[str, Any]], pad_id: int = 0) -> dict[str, Any]:
    """``[{"id", "tokens" (T_i,)}] -> {"ids": [...], "tokens": (B, T) int64 padded with pad_id,
    "lengths": (B,) int64}``."""
    lengths = torch.tensor([int(b["tokens"].numel()) for b in batch], dtype=torch.long)
    tokens = torch.full((len(batch), int(lengths.max()) if len(batch) else 0), pad_id, dtype=torch.long)
    for row, b in enumerate(batch):
        tokens[row, : lengths[row]] = b["tokens"]
    return {"ids": [b["id"] for b in batch], "tokens": tokens, "lengths": lengths}
