"""Training data: manifests, datasets with on-the-fly resampling, length-bucketed batches
and an optional cache of encoder features.

Manifest (JSON lines, one utterance per line)::

    {"path": "/data/LibriTTS/train-clean-100/19/198/19_198_000000_000000.wav",
     "duration": 3.12, "sample_rate": 24000, "speaker": "19", "text": "..."}

``path`` may be relative to the manifest's folder. :func:`build_manifest` reads the
LibriTTS layout (``SPEAKER/CHAPTER/SPEAKER_CHAPTER_*.wav`` with ``.normalized.txt``
transcripts) and any folder of audio files (speaker = the parent folder, text = a sibling
``.txt``/``.lab`` file, or a ``manifest.tsv`` with ``path``/``speaker``/``text`` columns).

Randomness that shapes a batch (bucket shuffling, crop positions) is a pure function of
``(seed, epoch, index)``, so a run resumed from a checkpoint sees exactly the same data as
an uninterrupted one, whatever the number of loader workers.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from ..audio import AUDIO_EXTENSIONS, load_audio, read_audio
from ..errors import CheckpointError, InputError
from ..inputs import audio_files, manifest_base, read_rows
from ..outputs import output_path, write_text

__all__ = [
    "AudioDataset",
    "BucketBatchSampler",
    "FeatureCache",
    "build_manifest",
    "collate",
    "read_manifest",
    "write_manifest",
]

Entry = dict[str, Any]
MAX_SUBSTITUTES = 16  # unusable entries in a row an item may skip before the run stops
_LIBRITTS = re.compile(r"^(\d+)_(\d+)_")
_TEXT_SUFFIXES = (".normalized.txt", ".txt", ".lab", ".original.txt")


def _read_text(audio: Path) -> str | None:
    base = audio.with_suffix("")
    for suffix in _TEXT_SUFFIXES:
        candidate = base.parent / (base.name + suffix)
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8", errors="replace").strip()
    return None


def _tsv_metadata(root: Path) -> dict[str, dict[str, str]]:
    """``manifest.tsv`` files under ``root`` (columns ``path``, optional ``speaker``, ``text``),
    keyed by resolved audio path."""
    out: dict[str, dict[str, str]] = {}
    for tsv in sorted(root.rglob("manifest.tsv")):
        rows = read_rows(tsv)
        base = manifest_base(tsv, [row.get("path", "") for row in rows])
        for row in rows:
            if row.get("path"):
                out[str((base / row["path"]).resolve())] = row
    return out


def _probe(path: Path, verify: bool = True) -> Entry | str:
    """Duration and rate of an audio file, or the reason it cannot be used. With ``verify``
    the file is decoded by the package's reader (:func:`focalcodec.audio.read_audio`, what
    training uses): files it refuses and files with NaN/inf samples are rejected."""
    import numpy as np
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - libsndfile reports all failures alike
        return "not readable as audio"
    if info.samplerate <= 0 or info.frames <= 0:
        return "no samples"
    if verify:
        try:
            data, _ = read_audio(path)
        except InputError as exc:
            return str(exc).replace(str(path), "the file")
        if not np.isfinite(data).all():
            return "contains NaN or infinite samples"
    return {"duration": round(info.frames / info.samplerate, 4), "sample_rate": int(info.samplerate)}


def build_manifest(
    roots: str | Path | Sequence[str | Path],
    min_duration: float = 0.0,
    max_duration: float = float("inf"),
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    num_workers: int = 8,
    verify: bool = True,
    rejected: list[tuple[str, str]] | None = None,
) -> list[Entry]:
    """Scan folders for audio and describe each file (absolute paths, sorted).

    Utterances outside ``[min_duration, max_duration]`` seconds are dropped, and so are files
    that cannot be used for training (unreadable; with ``verify``, also NaN/inf samples or
    fewer samples than the header says): each of those is appended to ``rejected`` as
    ``(path, reason)``. Raises :class:`InputError` when nothing usable is found.
    """
    if isinstance(roots, (str, Path)):
        roots = [roots]
    entries: list[Entry] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise InputError(f"data folder not found: {root}")
        files = audio_files(root, extensions)
        meta = _tsv_metadata(root)
        with ThreadPoolExecutor(max(1, num_workers)) as pool:
            probes = list(pool.map(lambda f: _probe(f, verify), files))
        for path, probe in zip(files, probes, strict=True):
            if isinstance(probe, str):
                if rejected is not None:
                    rejected.append((str(path), probe))
                continue
            if not (min_duration <= probe["duration"] <= max_duration):
                continue
            resolved = path.resolve()
            entry: Entry = {"path": str(resolved), **probe}
            row = meta.get(str(resolved), {})
            m = _LIBRITTS.match(path.name)
            speaker = row.get("speaker") or (m.group(1) if m else None)
            if speaker is None and path.parent != root:
                speaker = path.parent.name
            if speaker:
                entry["speaker"] = speaker
            text = row.get("text") or _read_text(path)
            if text:
                entry["text"] = text
            entries.append(entry)
    if not entries:
        raise InputError(f"no usable audio files found in {', '.join(map(str, roots))}")
    return entries


def write_manifest(entries: Sequence[Entry], path: str | Path, force: bool = False) -> Path:
    """Write JSON lines atomically (an existing file is replaced only with ``force``)."""
    return write_text(path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), force=force)


def read_manifest(
    path: str | Path, min_duration: float = 0.0, max_duration: float = float("inf"), limit: int | None = None
) -> list[Entry]:
    """Read a manifest (JSON lines, or any :func:`focalcodec.inputs.read_rows` format with
    ``path`` and ``duration``; relative paths as :func:`~focalcodec.inputs.manifest_base` says), keeping
    utterances within ``[min_duration, max_duration]`` seconds (and the first ``limit``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path} (build one with `focalcodec prepare DATA_DIR -o {path}`)")
    out: list[Entry] = []
    rows = read_rows(path, other="jsonl", strings=False)
    base = manifest_base(path, [str(e.get("path", "")) for e in rows])
    for n, e in enumerate(rows, 1):
        try:
            dur = float(e["duration"])
            audio = Path(e["path"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}, entry {n}: not a manifest entry (needs 'path' and 'duration')") from None
        if not math.isfinite(dur) or dur <= 0:
            warnings.warn(
                f"{path}, entry {n}: duration {e['duration']!r} is not a positive number: skipped", stacklevel=2
            )
            continue
        if not audio.is_absolute():
            e["path"] = str((base / audio).resolve())
        if min_duration <= dur <= max_duration:
            out.append(e)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise InputError(f"{path}: no utterance between {min_duration} and {max_duration} s")
    return out


def _seeded(*parts: int) -> random.Random:
    """A private RNG that depends only on ``parts``."""
    digest = hashlib.sha256(",".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


class FeatureCache:
    """Encoder features on disk, one ``.pt`` file per utterance: ``(T, C)`` tensors under
    ``DIRECTORY/ENCODER_ID/``, keyed by the audio path.

    ``encoder_id`` (see :meth:`encoder_id`) is the encoder's identity: the package's weights
    digest (:func:`focalcodec.hub.state_dict_sha256`, the one ``.fc`` files use), whether it is
    causal and the input rate, since the same weights give other features causal. Features of
    another encoder are never read: they live in another folder, and each file names the
    encoder that made it (a file that names another one is an error, not data). Caches of
    other layouts (before this identity) are left alone and rebuilt beside them.
    """

    def __init__(self, directory: str | Path, encoder_id: str) -> None:
        self.directory = Path(directory)
        self.encoder_id = encoder_id
        self.root = self.directory / encoder_id

    @staticmethod
    def encoder_id(encoder: torch.nn.Module, sample_rate: int) -> str:
        """``WEIGHTS_SHA256-causal|noncausal-RATE`` for an encoder fed audio at ``sample_rate``."""
        from ..hub import state_dict_sha256

        kind = "causal" if getattr(encoder, "causal", False) else "noncausal"
        return f"{state_dict_sha256(encoder.state_dict())}-{kind}-{int(sample_rate)}"

    def stale_layouts(self) -> list[Path]:
        """Cached features in ``directory`` that this cache does not use: files of the layout
        before encoder folders (``DIRECTORY/xx/*.pt``)."""
        if not self.directory.is_dir():
            return []
        return [p for p in sorted(self.directory.iterdir()) if p.is_dir() and len(p.name) == 2 and any(p.glob("*.pt"))]

    def path(self, audio_path: str) -> Path:
        key = hashlib.sha1(audio_path.encode()).hexdigest()
        return self.root / key[:2] / f"{key}.pt"

    def get(self, audio_path: str) -> Tensor | None:
        p = self.path(audio_path)
        if not p.is_file():
            return None
        data = torch.load(p, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("encoder") != self.encoder_id:
            made_by = data.get("encoder") if isinstance(data, dict) else "an unknown encoder"
            raise CheckpointError(
                f"{p} holds features of another encoder ({made_by}) than {self.encoder_id}: delete {self.root} "
                "and train again (the cache is rebuilt)"
            )
        return data["feats"]

    def put(self, audio_path: str, feats: Tensor) -> None:
        p = self.path(audio_path)
        with output_path(p, force=True) as tmp:
            torch.save({"encoder": self.encoder_id, "feats": feats.detach().cpu().contiguous()}, tmp)

    @torch.inference_mode()
    def fill(
        self,
        encoder: torch.nn.Module,
        entries: Sequence[Entry],
        sample_rate: int = 16000,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> int:
        """Compute and store missing features (one utterance at a time: exact, no padding);
        returns how many were computed."""
        done = 0
        for e in entries:
            if self.path(e["path"]).is_file():
                continue
            try:
                sig = load_audio(e["path"], sample_rate, warn=False)[None].to(device)
            except InputError:  # skipped here; the dataset skips (and reports) it too
                continue
            feats = encoder(sig)
            self.put(e["path"], feats[0].to(dtype))
            done += 1
        return done


class AudioDataset(Dataset):
    """Utterances of a manifest, read and resampled on the fly.

    Item ``i`` is a dict with ``sig`` ((N,) float32 at ``sample_rate``), ``target`` ((M,) at
    ``target_sample_rate``, only when it differs from ``sample_rate``), ``feats`` ((T, C),
    only with a feature cache), ``crop`` (a uniform number in [0, 1) that the stage turns into
    a crop position, a function of ``(seed, epoch, i)``) and ``index``. With ``segment_seconds``, longer
    utterances are cut to a random segment of that length (start on a 320-sample hop, the
    target cut at the same time span), e.g. to bound memory; the recipes use full utterances.

    An entry that cannot be used (missing, unreadable, NaN/inf samples) does not stop
    training: item ``i`` is then the next usable entry, and ``skipped`` lists why each
    unusable one was passed over (the trainer reports them). The choice depends only on the
    manifest, so a resumed run sees the same data. :data:`MAX_SUBSTITUTES` unusable
    entries in a row raise :class:`InputError`.
    """

    def __init__(
        self,
        entries: Sequence[Entry],
        sample_rate: int = 16000,
        target_sample_rate: int | None = None,
        feature_cache: FeatureCache | None = None,
        seed: int = 0,
        segment_seconds: float | None = None,
    ) -> None:
        if segment_seconds is not None and feature_cache is not None:
            raise InputError("segment_seconds cannot be combined with cached features (they cover whole utterances)")
        self.entries = list(entries)
        self.segment_seconds = segment_seconds
        self.sample_rate = sample_rate
        self.target_sample_rate = target_sample_rate if target_sample_rate != sample_rate else None
        self.feature_cache = feature_cache
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = _seeded(self.seed, self.epoch, i)
        skipped: list[str] = []
        for attempt in range(min(MAX_SUBSTITUTES, len(self.entries))):
            j = (i + attempt) % len(self.entries)
            try:
                item = self._load(self.entries[j], rng)
            except (InputError, OSError) as exc:
                skipped.append(str(exc))
                continue
            item["index"] = i
            item["crop"] = rng.random()
            item["skipped"] = skipped
            return item
        raise InputError(
            f"{len(skipped)} manifest entries in a row, from entry {i + 1}, cannot be used (e.g. {skipped[0]}): "
            "rebuild the manifest with `focalcodec prepare`, which leaves unusable files out"
        )

    def _load(self, e: Entry, rng: random.Random) -> dict[str, Any]:
        sig = load_audio(e["path"], self.sample_rate, warn=False)
        target = (
            load_audio(e["path"], self.target_sample_rate, warn=False) if self.target_sample_rate is not None else None
        )
        if self.segment_seconds is not None:
            seg = int(round(self.segment_seconds * self.sample_rate))
            hop = 320
            if sig.shape[0] > seg:
                start = int(rng.random() * ((sig.shape[0] - seg) // hop + 1)) * hop
                sig = sig[start : start + seg]
                if target is not None:
                    ratio = self.target_sample_rate / self.sample_rate
                    t0, t_len = int(round(start * ratio)), int(round(seg * ratio))
                    target = target[t0 : t0 + t_len]
        item: dict[str, Any] = {"sig": sig}
        if target is not None:
            item["target"] = target
        if self.feature_cache is not None:
            feats = self.feature_cache.get(e["path"])
            if feats is None:
                raise InputError(f"no cached features for {e['path']}: fill the cache first (data.feature_cache)")
            item["feats"] = feats.float()
        return item


def _pad_stack(items: list[Tensor]) -> Tensor:
    size = max(int(x.shape[0]) for x in items)
    out = items[0].new_zeros((len(items), size) + tuple(items[0].shape[1:]))
    for b, x in enumerate(items):
        out[b, : x.shape[0]] = x
    return out


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Zero-pad to the longest item: ``sig (B, N)``, ``sig_lengths (B,)``, and likewise
    ``target``/``target_lengths`` and ``feats (B, T, C)``/``feat_lengths``; ``crop (B,)``,
    ``index (B,)``; ``skipped``: the messages of unusable manifest entries replaced in this
    batch (see :class:`AudioDataset`)."""
    batch: dict[str, Any] = {
        "index": torch.tensor([it["index"] for it in items]),
        "crop": torch.tensor([it["crop"] for it in items], dtype=torch.float64),
        "skipped": [m for it in items for m in it.get("skipped", ())],
    }
    for key, len_key in (("sig", "sig_lengths"), ("target", "target_lengths"), ("feats", "feat_lengths")):
        if key in items[0]:
            batch[key] = _pad_stack([it[key] for it in items])
            batch[len_key] = torch.tensor([int(it[key].shape[0]) for it in items])
    return batch


class BucketBatchSampler(Sampler[list[int]]):
    """Length-bucketed batches, sharded over ranks, resumable mid-epoch.

    Utterances are sorted by duration and split into ``num_buckets`` groups of similar
    length, each a whole number of batches (fewer buckets when there are fewer batches than
    buckets); each epoch, every bucket is shuffled, the buckets are read one after the other
    (shortest first) and cut into batches of ``batch_size`` items (or, with
    ``max_batch_seconds``, as many as keep ``items * longest <= max``; the rest of a bucket is
    then completed with items of the next one), and the batches are shuffled. Only the last
    batch of an epoch can be smaller than asked (dropped with ``drop_last``), however small
    the dataset. Rank ``r`` of ``num_replicas`` takes batches ``r, r + R, ...``
    (the list is cut to a multiple of ``R`` so every rank does the same number of steps).
    ``set_epoch(epoch, start)`` skips the first ``start`` batches of this rank (resume).
    """

    def __init__(
        self,
        durations: Sequence[float],
        batch_size: int = 16,
        max_batch_seconds: float | None = None,
        num_buckets: int = 10,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.durations = [float(d) for d in durations]
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.num_buckets = max(1, num_buckets)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def _batches(self) -> list[list[int]]:
        order = sorted(range(len(self.durations)), key=lambda i: (self.durations[i], i))
        size = math.ceil(len(order) / self.num_buckets)
        if self.max_batch_seconds is None:  # whole batches per bucket: small buckets merge
            size = math.ceil(size / self.batch_size) * self.batch_size
        rng = _seeded(self.seed, self.epoch, -1)
        # Buckets shuffled inside, in length order, read as one sequence and cut into batches
        # only when full: with fixed-size batches every bucket but the last holds whole
        # batches; with max_batch_seconds what remains of a bucket is completed by the next
        # (longer) one. Only the last batch of the epoch can be smaller than asked.
        sequence: list[int] = []
        for start in range(0, len(order), size):
            bucket = order[start : start + size]
            if self.shuffle:
                rng.shuffle(bucket)
            sequence.extend(bucket)
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for i in sequence:
            longest_if = max(longest, self.durations[i])
            full = len(current) >= self.batch_size
            if self.max_batch_seconds is not None and current:
                full = full or (len(current) + 1) * longest_if > self.max_batch_seconds
            if full:
                batches.append(current)
                current, longest_if = [], self.durations[i]
            current.append(i)
            longest = longest_if
        if current and not (self.drop_last and len(current) < self.batch_size and self.max_batch_seconds is None):
            batches.append(current)
        if self.shuffle:
            rng.shuffle(batches)
        usable = len(batches) - len(batches) % self.num_replicas
        if usable == 0 and batches:  # fewer batches than ranks: repeat so every rank gets one
            batches = (batches * self.num_replicas)[: self.num_replicas]
            usable = self.num_replicas
        return batches[:usable][self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self._batches()) - self.start)
