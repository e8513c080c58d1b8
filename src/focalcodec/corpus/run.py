"""The tokenization run: ranks agree on a plan and each does its shards (utterances read in
DataLoader workers, encoded in length-sorted padded batches in which each gets exactly the
tokens it gets alone, long ones window by window); rank 0 writes the index."""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..audio import AudioFileSamples, audio_info
from ..errors import FocalCodecError, InputError, OutputError
from ..longform import encode_long
from ..runtime import Distributed
from ..windowing import DEFAULT, Windowing
from .listing import CorpusItem, list_corpus
from .shards import (
    MARKER_DIR,
    SHARD_DIR,
    clean_temporaries,
    finished_marker,
    make_plan,
    model_identity,
    prepare_out,
    pyarrow_module,
    write_index,
    write_shard,
)

__all__ = ["TokenizeSummary", "length_batches", "tokenize_corpus"]

PathLike = str | Path


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
    retry_errors: bool = False,
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
    part of the run's identity, so a resumed run must use the same. ``retry_errors``: redo the
    finished shards that skipped files (once those files are restored: a network file system's
    hiccup, a copy still under way). Under ``torchrun`` (``WORLD_SIZE``
    > 1) each rank does shards ``k % world_size == rank`` and rank 0 writes the index.
    Returns a :class:`TokenizeSummary` (the same on every rank).
    """
    _check_options(shard_size, window, batch_seconds, max_batch_size, num_workers, autocast)
    pyarrow_module()
    started = time.perf_counter()
    items = list(data) if isinstance(data, (list, tuple)) else list_corpus(data, root)
    dist = Distributed(str(device), timeout_hours=dist_timeout_hours)
    try:
        model, model_source = _load_model(model, model_source, dist.device)
        identity = model_identity(model, model_source)
        if autocast is not None:
            identity["autocast"] = autocast
        plan = make_plan(items, int(shard_size), identity, windowing, max_duration)
        sample_rate = identity["sample_rate_input"]
        job = _Job(
            out=Path(out),
            plan=plan,
            sample_rate=sample_rate,
            shard_size=int(shard_size),
            window=int(window),
            max_batch_samples=int(batch_seconds * sample_rate),
            max_batch_size=int(max_batch_size),
            num_workers=int(num_workers),
            max_duration=max_duration,
            row_group_size=int(row_group_size),
            windowing=windowing,
            autocast=autocast,
        )
        _agree_on_plan(dist, job, overwrite)
        mine = [k for k in range(plan["num_shards"]) if k % dist.world == dist.rank]
        done = _finished_shards(job, mine, retry_errors)
        todo = [k for k in mine if k not in done]
        note = f" (rank 0 of {dist.world})" if dist.world > 1 else ""
        markers, encoded_s = _run_shards(model, items, todo, job, progress and dist.rank == 0, note)
        done.update(markers)
        return _finish(dist, job, identity, done, len(mine) - len(todo), encoded_s, started)
    finally:
        dist.close()


@dataclass(frozen=True)
class _Job:
    """What every shard of a run is made with (see :func:`tokenize_corpus`)."""

    out: Path
    plan: Mapping[str, Any]
    sample_rate: int
    shard_size: int
    window: int  # utterances sorted by length together
    max_batch_samples: int
    max_batch_size: int
    num_workers: int
    max_duration: float | None
    row_group_size: int
    windowing: Windowing
    autocast: str | None


def _check_options(
    shard_size: int, window: int, batch_seconds: float, max_batch_size: int, num_workers: int, autocast: str | None
) -> None:
    for name, value in (("shard_size", shard_size), ("window", window), ("max_batch_size", max_batch_size)):
        if int(value) < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if batch_seconds <= 0:
        raise InputError(f"batch_seconds must be positive, got {batch_seconds}")
    if num_workers < 0:
        raise InputError(f"num_workers must be 0 or more, got {num_workers}")
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise InputError(f"autocast must be one of {AUTOCAST_DTYPES} or None, got {autocast!r}")


def _load_model(model: Any, source: str | None, device: Any) -> tuple[Any, str | None]:
    """The codec on this rank's device, in eval mode, and the name the index gives it."""
    if isinstance(model, (str, Path)):
        from ..codec import FocalCodec

        source = str(model) if source is None else source
        model = FocalCodec.from_pretrained(str(model), map_location=device)
    return model.to(device).eval(), source


def _agree_on_plan(dist: Distributed, job: _Job, overwrite: bool) -> None:
    """Every rank has the same plan, and rank 0 has checked the output folder and written the
    plan there; otherwise every rank stops with the same reason (instead of waiting)."""
    if len(set(dist.all_gather(job.plan["digest"]))) > 1:
        raise InputError(
            "the ranks see different file lists or models (plan digests differ); on several nodes "
            "give every node the same --data, --model and shared storage for -o/--output"
        )
    problem = None
    if dist.rank == 0:
        try:
            job.out.mkdir(parents=True, exist_ok=True)
            prepare_out(job.out, job.plan, overwrite)
        except FocalCodecError as exc:
            problem = str(exc)
        except OSError as exc:
            problem = f"cannot write the output folder {job.out}: {exc.strerror or exc}"
    problems = [p for p in dist.all_gather(problem) if p]
    if problems:
        raise InputError(problems[0])
    for folder in (SHARD_DIR, MARKER_DIR):
        (job.out / folder).mkdir(parents=True, exist_ok=True)


def _finished_shards(job: _Job, shards: Sequence[int], retry_errors: bool = False) -> dict[int, dict[str, Any]]:
    """The markers of ``shards`` a previous run of this plan finished (file intact); with
    ``retry_errors``, not those that skipped files (they are redone)."""
    done = {}
    for k in shards:
        clean_temporaries(job.out, k)
        marker = finished_marker(job.out, k, job.plan)
        if marker is not None and not (retry_errors and marker["num_errors"]):
            done[k] = marker
    return done


def _finish(
    dist: Distributed,
    job: _Job,
    identity: Mapping[str, Any],
    done: Mapping[int, dict[str, Any]],
    skipped: int,
    encoded_s: float,
    started: float,
) -> TokenizeSummary:
    """Every rank's markers gathered; rank 0 writes the index; the same summary on every rank."""
    gathered = dist.all_gather((sorted(done.items()), skipped, encoded_s))
    markers = sorted((m for part in gathered for _, m in part[0]), key=lambda m: m["shard"])
    if [m["shard"] for m in markers] != list(range(job.plan["num_shards"])):
        raise FocalCodecError("internal error: the ranks did not cover every shard exactly once")
    if dist.rank == 0:
        write_index(job.out, job.plan, identity, markers)
    dist.barrier()
    return TokenizeSummary(
        out=job.out,
        num_utterances=sum(m["num_rows"] for m in markers),
        num_errors=sum(m["num_errors"] for m in markers),
        num_shards=job.plan["num_shards"],
        skipped_shards=sum(part[1] for part in gathered),
        duration_s=sum(m["duration_s"] for m in markers),
        num_tokens=sum(m["num_tokens"] for m in markers),
        encoded_duration_s=sum(part[2] for part in gathered),
        wall_s=time.perf_counter() - started,
        world_size=dist.world,
    )


def _run_shards(
    model: Any, items: Sequence[CorpusItem], todo: Sequence[int], job: _Job, show: bool, note: str
) -> tuple[dict[int, dict[str, Any]], float]:
    """Encode the shards ``todo`` of this rank; return their markers and the seconds encoded."""
    # Flat list of this rank's pending utterances, shard after shard.
    flat: list[int] = []
    bounds: list[tuple[int, int, int]] = []  # (shard, first flat position, end)
    for k in todo:
        lo, hi = k * job.shard_size, min((k + 1) * job.shard_size, len(items))
        bounds.append((k, len(flat), len(flat) + hi - lo))
        flat.extend(range(lo, hi))
    markers: dict[int, dict[str, Any]] = {}
    if not flat:
        return markers, 0.0
    durations = [items[i].duration for i in flat]
    total_h = sum(durations) / 3600 if all(d is not None for d in durations) else None  # type: ignore[arg-type]
    bar = _Progress(show, total_h, len(flat), note)
    loader = torch.utils.data.DataLoader(
        _AudioFiles([items[i] for i in flat], job.sample_rate, job.max_duration, _one_pass_limit(model, job.windowing)),
        batch_size=1,
        shuffle=False,
        num_workers=job.num_workers,
        collate_fn=_first,
        worker_init_fn=_worker_init if job.num_workers else None,
        prefetch_factor=4 if job.num_workers else None,
        persistent_workers=False,
    )
    stream = iter(loader)
    encoded = 0.0
    try:
        for k, lo, hi in bounds:
            rows, errors, seconds = _encode_shard(model, stream, [items[i] for i in flat[lo:hi]], job, bar)
            try:
                markers[k] = write_shard(job.out, k, rows, errors, job.plan, job.sample_rate, job.row_group_size)
            except OutputError as exc:
                raise OutputError(
                    f"{exc} (the shards finished so far are kept: rerun the same command to resume)"
                ) from None
            encoded += seconds
    finally:
        bar.close()
        del stream
    return markers, encoded


def _encode_shard(
    model: Any, stream: Iterator, items: Sequence[CorpusItem], job: _Job, bar: _Progress
) -> tuple[list[tuple[CorpusItem, int, Tensor]], list[dict[str, str]], float]:
    """The next ``len(items)`` utterances of ``stream`` (``(position, signal or None, reason)``),
    ``job.window`` at a time: ``(rows (item, samples, tokens), errors, seconds encoded)``."""
    tokens: dict[int, Tensor] = {}
    lengths: dict[int, int] = {}
    errors: dict[int, str] = {}
    seconds = 0.0
    limit = _one_pass_limit(model, job.windowing)
    for lo in range(0, len(items), job.window):
        hi = min(lo + job.window, len(items))
        sigs: dict[int, Tensor] = {}
        for i in range(lo, hi):
            _, sig, reason = next(stream)
            if sig is None:
                errors[i] = reason or "unknown error"
                continue
            if isinstance(sig, np.ndarray):
                sig = torch.from_numpy(sig)
            lengths[i] = len(sig)
            if len(sig) > limit:
                # Encoded alone anyway: done now, so that a sort group never holds more than one
                # long file (256 one-hour files held together would need 60 GB).
                toks, errs = _encode_window(model, {i: sig}, 1, 1, job.windowing, job.autocast)
                tokens.update(toks)
                errors.update(errs)
                del sig
            else:
                sigs[i] = sig
        toks, errs = _encode_window(model, sigs, job.max_batch_samples, job.max_batch_size, job.windowing, job.autocast)
        del sigs
        tokens.update(toks)
        errors.update(errs)
        done = sum(lengths[i] for i in range(lo, hi) if i in tokens) / job.sample_rate
        seconds += done
        bar.update(done, hi - lo, sum(1 for i in range(lo, hi) if i in errors))
    rows = [(item, lengths[i], tokens[i]) for i, item in enumerate(items) if i in tokens]
    failed = [{"id": item.id, "path": item.path, "reason": errors[i]} for i, item in enumerate(items) if i in errors]
    return rows, failed, seconds


class _AudioFiles(torch.utils.data.Dataset):
    """``dataset[i] -> (i, signal or None, reason or None)``; never raises for a bad file, so
    that one file cannot stop the run.

    Each file is read as ``focalcodec encode`` reads it (:func:`focalcodec.compression.model_signal`),
    so every command gives a file the same tokens: ``floor(frames * 16000 / rate)`` samples at
    16 kHz; a 16 kHz file in a format read sample-exactly (WAV, FLAC, ...) longer than
    ``one_pass`` samples stays an :class:`~focalcodec.audio.AudioFileSamples`, read window by
    window while encoding (memory independent of its duration), shorter ones are ``(N,)``
    float32 arrays. ``max_duration`` is checked on the header first: such a file is never loaded."""

    def __init__(
        self, items: Sequence[CorpusItem], sample_rate: int, max_duration: float | None, one_pass: int
    ) -> None:
        self.items = list(items)
        self.sample_rate = sample_rate
        self.max_duration = max_duration
        self.one_pass = one_pass

    def __len__(self) -> int:
        return len(self.items)

    def _too_long(self, seconds: float) -> str | None:
        if self.max_duration is not None and seconds > self.max_duration:
            return f"longer than the limit of {self.max_duration:g} s ({seconds:.1f} s)"
        return None

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | AudioFileSamples | None, str | None]:
        from ..compression import model_signal

        item = self.items[i]
        try:
            info = audio_info(item.file)
            reason = self._too_long(info.frames / info.samplerate) if info.frames > 0 else None
            if reason:
                return i, None, reason
            with warnings.catch_warnings():  # channels mixed down: expected in a corpus, not news
                warnings.simplefilter("ignore", UserWarning)
                sig, _, _ = model_signal(item.file, _Rate(self.sample_rate))
            if isinstance(sig, AudioFileSamples) and len(sig) <= self.one_pass:
                sig = sig[0 : len(sig)]  # batched with the others
        except FocalCodecError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of one file is reported, not fatal
            return i, None, f"{type(exc).__name__}: {exc}"
        reason = self._too_long(len(sig) / self.sample_rate)
        if reason:
            return i, None, reason
        # A NumPy array, not a tensor: it crosses from a worker process in the pipe, whereas a
        # tensor would pass a file descriptor through a helper thread that prints a traceback
        # when Ctrl-C ends the run.
        return i, (sig.numpy() if isinstance(sig, Tensor) else sig), None


class _Rate(NamedTuple):
    """What :func:`~focalcodec.compression.model_signal` needs of the codec (the model itself
    stays out of the DataLoader workers)."""

    sample_rate_input: int


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _first(batch: list[Any]) -> Any:
    return batch[0]


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


def _encode_batch(model: Any, sigs: Sequence[Tensor]) -> list[Tensor]:
    """Padded batch with per-item lengths -> each item's tokens ``(T_i,)`` int64 on CPU."""
    lens = torch.tensor([s.numel() for s in sigs])
    batch = torch.zeros(len(sigs), int(lens.max()))
    for row, s in enumerate(sigs):
        batch[row, : s.numel()] = s
    toks, tok_lens = model.encode(batch, lens)
    toks = toks.cpu()
    return [toks[row, : int(tok_lens[row])].clone() for row in range(len(sigs))]


def _one_pass_limit(model: Any, windowing: Windowing) -> int:
    """Samples up to which an utterance is encoded in one pass (one window with its context);
    longer ones are encoded alone, window by window."""
    return sum(windowing.token_geometry(model.token_rate)) * model.hop_length


def _failure(exc: BaseException) -> str:
    return f"encoding failed: {type(exc).__name__}: {exc}"


def _encode_window(
    model: Any,
    sigs: Mapping[int, Tensor | AudioFileSamples],
    max_batch_samples: int,
    max_batch_size: int,
    windowing: Windowing = DEFAULT,
    autocast: str | None = None,
) -> tuple[dict[int, Tensor], dict[int, str]]:
    """Encode ``{index: (N,) signal}`` in length-sorted batches. Utterances longer than one
    window with its context (64 s by default; tensors or files read on demand) are encoded
    alone, window by window (shorter
    ones would be one pass there too, and causal models give one-pass tokens in any case). A
    batch that fails is retried item by item, so only the items that fail alone are reported
    (as ``{index: reason}``). ``autocast``: a dtype of :data:`AUTOCAST_DTYPES` to run under
    ``torch.autocast`` (the codec keeps its sign decisions in float32)."""
    tokens: dict[int, Tensor] = {}
    errors: dict[int, str] = {}
    limit = _one_pass_limit(model, windowing)
    region = torch.autocast(model.device.type, dtype=getattr(torch, autocast)) if autocast else nullcontext()
    with region:
        for k in [k for k in sigs if len(sigs[k]) > limit]:
            try:
                tokens[k] = encode_long(model, sigs[k], windowing).cpu()
            except (KeyboardInterrupt, SystemExit):
                raise
            except MemoryError:
                errors[k] = "out of memory while encoding (window by window); use a smaller --window"
            except FocalCodecError as exc:  # a file read on demand: NaN or truncated further in
                errors[k] = str(exc)
            except Exception as exc:  # noqa: BLE001
                errors[k] = _failure(exc)
        keys = [k for k in sigs if len(sigs[k]) <= limit]
        for batch in length_batches([sigs[k].numel() for k in keys], max_batch_samples, max_batch_size):
            ids = [keys[b] for b in batch]
            try:
                tokens.update(zip(ids, _encode_batch(model, [sigs[k] for k in ids]), strict=True))
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # noqa: BLE001 - retried one item at a time below
                if len(ids) == 1:
                    errors[ids[0]] = _failure(exc)
                    continue
            for k in ids:
                try:
                    tokens[k] = _encode_batch(model, [sigs[k]])[0]
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as exc:  # noqa: BLE001
                    errors[k] = _failure(exc)
    return tokens, errors
