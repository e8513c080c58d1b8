"""The utterances of a corpus in a fixed order: a folder of audio files or a manifest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError
from ..inputs import audio_files, manifest_base, read_rows

__all__ = ["CorpusItem", "list_corpus"]

PathLike = str | Path
_PATH_COLUMNS = ("path", "audio", "audio_path", "file", "filename", "wav")
_ID_COLUMNS = ("id", "utt_id", "utterance_id", "key")
_DURATION_COLUMNS = ("duration", "duration_s", "dur_s", "dur", "seconds")
_PROBE = 16  # listed files looked at to tell a wrong base folder from a few missing files


@dataclass(frozen=True)
class CorpusItem:
    """One utterance to tokenize: ``id`` (unique), ``path`` (as stored in the shards: relative
    to the data folder, or as written in the manifest), ``file`` (where it is read from) and
    ``duration`` (seconds, from the manifest when it has them; used for progress only)."""

    id: str
    path: str
    file: str
    duration: float | None = None


def _pick(row: Mapping[str, str], names: Sequence[str]) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    return ""


def list_corpus(data: PathLike, root: PathLike | None = None) -> list[CorpusItem]:
    """The utterances of ``data`` in a fixed order.

    ``data`` is a folder (every audio file below it, sorted by relative path; id = relative path
    without its suffix) or a manifest: ``.tsv``/``.csv`` with a header naming a path column
    (``path``, ``audio``, ``file``, ...) and optionally ``id`` and ``duration``/``dur_s``;
    ``.jsonl`` with the same keys; or any other text file with one path a line. Manifest order is
    kept. Relative manifest paths are read from ``root`` when given, else from the manifest's
    folder or the nearest folder above it where the first path exists.
    Raises :class:`InputError` for a missing ``data``, no files, duplicate ids, a manifest
    none of whose first files exists (a wrong ``root``), or a ``root`` given with a folder.
    """
    data = Path(data)
    items: list[CorpusItem] = []
    if data.is_dir():
        if root is not None:
            raise InputError(f"{data} is a folder: --root only applies to a manifest's relative paths; drop --root")
        for p in audio_files(data):
            rel = p.relative_to(data).as_posix()
            items.append(CorpusItem(id=rel.rsplit(".", 1)[0], path=rel, file=str(p)))
        if not items:
            raise InputError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below {data}")
    elif data.is_file():
        if data.suffix.lower() in AUDIO_EXTENSIONS:
            raise InputError(f"{data} is an audio file; pass a folder of audio files or a manifest listing them")
        rows = read_rows(data)
        if not rows:
            raise InputError(f"manifest {data} lists no files")
        if not any(c in rows[0] for c in _PATH_COLUMNS):
            raise InputError(
                f"manifest {data} has no path column (one of {', '.join(_PATH_COLUMNS)}); "
                f"its header is: {', '.join(rows[0]) or '(empty)'}"
            )
        paths = [_pick(r, _PATH_COLUMNS) for r in rows]
        base = Path(root) if root is not None else manifest_base(data, paths)
        probe = [p for p in paths if p][:_PROBE]
        if probe and not any((base / p).exists() for p in probe):
            # A wrong base folder would send every file to the errors list, after hours of work.
            raise InputError(
                f"none of the first {len(probe)} files listed in {data} exists (e.g. {base / probe[0]}); "
                f"relative paths are read from {base}: pass --root with the folder they start from"
            )
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
