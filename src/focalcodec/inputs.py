"""What a run reads, listed one way everywhere (torch-free, so the CLI can use it while parsing):

- :func:`expand_inputs`: files as given plus, for folders, every matching file below them;
- :func:`audio_files`: the audio files below one folder, in a fixed order;
- :func:`read_rows`: the one manifest reader (``.tsv`` / ``.csv`` with a header, JSON lines,
  or one path a line) and :func:`manifest_base`, the folder its relative paths are read from.

Writing goes through :mod:`focalcodec.outputs`; samples in memory are checked by
:func:`focalcodec.audio.check_signal`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .limits import AUDIO_EXTENSIONS, read_text_input

__all__ = ["audio_files", "expand_inputs", "manifest_base", "read_rows"]


def audio_files(folder: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Every file below ``folder`` whose suffix is one of ``extensions`` (any case), sorted by
    the relative path (``a/b.wav`` as text), so the order is the same on every machine.

    Symbolic links to folders are followed (corpora are often assembled from links; a link
    back to a folder above it is not), and a link whose target is gone is listed too, so that
    reading it reports the file instead of losing it without a word."""
    folder = Path(folder)
    exts = tuple(e.lower() for e in extensions)
    found: list[Path] = []

    def walk(path: Path, above: frozenset[tuple[int, int]]) -> None:
        try:
            st = path.stat()
            entries = list(os.scandir(path))
        except OSError:
            return
        here = above | {(st.st_dev, st.st_ino)}
        for entry in entries:
            p = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                try:
                    st_sub = p.stat()
                except OSError:
                    continue
                if (st_sub.st_dev, st_sub.st_ino) not in here:
                    walk(p, here)
            elif p.suffix.lower() in exts and (entry.is_file() or entry.is_symlink()):
                found.append(p)

    walk(folder, frozenset())
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def expand_inputs(paths: Iterable[str | Path], extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Files as given plus, for folders, every file below them with a matching suffix
    (:func:`audio_files` order). :class:`InputError` for a missing path or no file at all."""
    extensions = tuple(extensions)
    out: list[Path] = []
    folders: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(audio_files(p, extensions))
            folders.append(str(p))
        elif p.exists():
            out.append(p)
        else:
            raise InputError(f"input not found: {p}")
    if not out:
        raise InputError(f"no {'/'.join(extensions)} file in {', '.join(folders)} (folders are searched recursively)")
    return out


def read_rows(
    path: str | Path, what: str = "manifest", other: str = "list", strings: bool = True
) -> list[dict[str, Any]]:
    """The rows of a manifest, as dicts keyed by lower-case column names.

    ``.tsv`` / ``.csv``: a header row, then one row a line (values stripped); ``.jsonl`` /
    ``.ndjson``: one JSON object a line (values as strings with ``strings``, else as JSON has
    them; ``null`` is ``""``). Any other suffix is read as ``other``: ``"list"`` (one path a
    line, ``#`` comments; rows ``{"path": ...}``) or ``"jsonl"``. Blank lines are skipped.
    :class:`InputError` for a missing or non-UTF-8 file or a line that is not a JSON object."""
    path = Path(path)
    text = read_text_input(path, what)
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    if suffix in (".jsonl", ".ndjson") or other == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{what} {path}, line {n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{what} {path}, line {n}: expected a JSON object")
            rows.append({str(k).lower(): "" if v is None else (str(v) if strings else v) for k, v in row.items()})
        return rows
    return [{"path": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]


def manifest_base(manifest: str | Path, paths: Sequence[str], probe: int = 16) -> Path:
    """The folder the relative ``paths`` of ``manifest`` are read from: its own folder, or the
    nearest folder above it in which one of the first ``probe`` relative paths exists
    (manifests often sit in a sub-folder of the data, e.g. ``data/lists/train.tsv`` naming
    ``audio/x.wav``; a listed file may be gone, so more than the first is tried)."""
    start = Path(manifest).resolve().parent
    relative = [p for p in paths if p and not Path(p).is_absolute()][:probe]
    for rel in relative:
        for base in (start, *start.parents):
            if (base / rel).exists():
                return base
    return start
