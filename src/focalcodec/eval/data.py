"""Evaluation data: a folder of audio files or a manifest, and voice-conversion pairs.

``load_utterances(source)`` accepts

- a manifest file: ``.tsv`` / ``.csv`` with a header row, or ``.jsonl``
  (:func:`focalcodec.inputs.read_rows`); a ``path`` column (relative to the manifest's folder
  or the nearest folder above it holding the first path) and optional ``id``, ``text``,
  ``lang``, ``speaker`` columns (any other column is kept in ``meta``);
- a folder holding ``manifest.tsv`` (used as above);
- any other folder: every audio file below it. Transcripts are read from LibriSpeech
  ``*.trans.txt`` files and Multilingual LibriSpeech ``transcripts.txt``; the speaker is the
  first sub-folder (LibriSpeech/MLS layout) or the file-name prefix before ``_`` (VoiceBank
  ``p232_001.wav``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..audio import AUDIO_EXTENSIONS
from ..errors import InputError
from ..inputs import audio_files, manifest_base, read_rows

__all__ = ["Utterance", "VCPair", "filter_utterances", "load_utterances", "make_vc_pairs", "read_vc_pairs"]


@dataclass
class Utterance:
    """One evaluation item: ``path`` to its audio plus what the manifest says about it."""

    id: str
    path: Path
    text: str | None = None
    lang: str | None = None
    speaker: str | None = None
    meta: dict[str, str] = field(default_factory=dict)

    def fields(self) -> dict[str, str]:
        """Every manifest field (``lang``, ``speaker``, ``text`` and the rest)."""
        out = dict(self.meta)
        for key in ("text", "lang", "speaker"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass
class VCPair:
    """A voice-conversion trial: ``source`` spoken with the voice of ``references`` (the target)."""

    id: str
    source: Utterance
    references: list[Utterance]

    @property
    def target_speaker(self) -> str | None:
        return self.references[0].speaker if self.references else None


def _from_manifest(path: Path) -> list[Utterance]:
    rows = read_rows(path)
    if not rows:
        raise InputError(f"manifest {path} has no rows")
    if "path" not in rows[0]:
        raise InputError(f"manifest {path} needs a 'path' column (found: {', '.join(rows[0])})")
    base = manifest_base(path, [row.get("path", "") for row in rows])
    out = []
    for n, row in enumerate(rows, 2):
        rel = row.get("path", "")
        if not rel:
            raise InputError(f"{path}:{n}: empty path")
        audio = base / rel
        if not audio.is_file():
            raise InputError(f"{path}:{n}: audio file not found: {audio}")
        meta = {
            k: v for k, v in row.items() if k not in ("id", "path", "text", "lang", "speaker") and v not in (None, "")
        }
        out.append(
            Utterance(
                id=(row.get("id") or audio.stem).strip(),
                path=audio,
                text=(row.get("text") or "").strip() or None,
                lang=(row.get("lang") or "").strip() or None,
                speaker=(row.get("speaker") or "").strip() or None,
                meta=meta,
            )
        )
    return out


def _transcripts(root: Path) -> dict[str, str]:
    texts: dict[str, str] = {}
    for f in list(root.rglob("*.trans.txt")) + list(root.rglob("transcripts.txt")):
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.replace("\t", " ").partition(" ")
            if key and value:
                texts[key] = value.strip()
    return texts


def _from_folder(root: Path) -> list[Utterance]:
    files = audio_files(root)
    if not files:
        raise InputError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found below {root}")
    texts = _transcripts(root)
    out = []
    for f in files:
        rel = f.relative_to(root)
        out.append(
            Utterance(
                id=str(rel.with_suffix("")).replace("/", "_"), path=f, text=texts.get(f.stem), speaker=_speaker(rel)
            )
        )
    return out


def _speaker(rel: Path) -> str | None:
    """LibriSpeech ``1089/134686/1089-134686-0000``, MLS ``audio/10087/10388/10087_10388_000000``
    -> the prefix that names a folder; VoiceBank ``p232_001`` -> ``p232``; else the grandparent folder."""
    prefix = re.split(r"[-_]", rel.stem)[0]
    parents = rel.parts[:-1]
    if prefix in parents:
        return prefix
    if len(parents) >= 2:
        return parents[-2]
    if "_" in rel.stem:
        return rel.stem.split("_")[0]
    return parents[-1] if parents else None


def load_utterances(source: str | Path) -> list[Utterance]:
    """Utterances of a manifest file or a folder (see the module docstring)."""
    p = Path(source)
    if p.is_file():
        return _from_manifest(p)
    if p.is_dir():
        manifest = p / "manifest.tsv"
        return _from_manifest(manifest) if manifest.is_file() else _from_folder(p)
    raise InputError(f"evaluation data not found: {p} (give a folder of audio files or a manifest .tsv/.csv/.jsonl)")


def filter_utterances(
    utts: Sequence[Utterance],
    where: Iterable[str] = (),
    max_duration: float | None = None,
    limit: int | None = None,
) -> list[Utterance]:
    """Keep the utterances whose fields match every ``key=value`` of ``where`` (``value`` may
    list alternatives separated by ``|``; ``lang=en`` also matches ``en (L1 zh)``), that are
    at most ``max_duration`` seconds long (``dur_s`` field, else the file header) and at
    most ``limit`` of them, in order."""
    import soundfile as sf

    conds: list[tuple[str, list[str]]] = []
    for cond in where:
        key, sep, value = cond.partition("=")
        if not sep or not key:
            raise InputError(f"filter must look like key=value, got {cond!r}")
        conds.append((key.strip(), [v.strip() for v in value.split("|")]))
    out: list[Utterance] = []
    for u in utts:
        fields = u.fields()
        fields.setdefault("id", u.id)
        ok = True
        for key, values in conds:
            got = fields.get(key, "")
            if not any(got == v or (key == "lang" and got.split(" ")[0] == v) for v in values):
                ok = False
                break
        if ok and max_duration is not None:
            dur = float(fields["dur_s"]) if "dur_s" in fields else sf.info(str(u.path)).duration
            ok = dur <= max_duration
        if ok:
            out.append(u)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise InputError("no utterance left after filtering (check --where / --max-duration / --limit)")
    return out


def make_vc_pairs(utts: Sequence[Utterance], num_references: int = 5, seed: int = 0) -> list[VCPair]:
    """Pair every utterance with another speaker: the target is the next speaker (sorted,
    cyclically) and its references are up to ``num_references`` of that speaker's utterances."""
    by_speaker: dict[str, list[Utterance]] = {}
    for u in utts:
        by_speaker.setdefault(u.speaker or u.id, []).append(u)
    speakers = sorted(by_speaker)
    if len(speakers) < 2:
        raise InputError(
            "voice conversion needs utterances of at least two speakers (a 'speaker' column or folder layout)"
        )
    rng = random.Random(seed)
    pairs = []
    for u in utts:
        src = u.speaker or u.id
        target = speakers[(speakers.index(src) + 1) % len(speakers)]
        refs = list(by_speaker[target])
        rng.shuffle(refs)
        pairs.append(VCPair(id=f"{u.id}->{target}", source=u, references=refs[:num_references]))
    return pairs


def read_vc_pairs(path: str | Path) -> list[VCPair]:
    """Trials from a ``.tsv``/``.csv``/``.jsonl`` with columns ``source`` and ``target`` (one
    or more reference files separated by ``|``), paths relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"voice-conversion pair file not found: {path}")
    rows = read_rows(path, "voice-conversion pair file")
    if not rows or "source" not in rows[0] or "target" not in rows[0]:
        raise InputError(f"{path} needs 'source' and 'target' columns")

    def utt(rel: str) -> Utterance:
        p = Path(rel.strip())
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise InputError(f"{path}: audio file not found: {p}")
        return Utterance(id=p.stem, path=p)

    pairs = []
    for row in rows:
        src = utt(row["source"])
        refs = [utt(r) for r in row["target"].split("|") if r.strip()]
        pairs.append(VCPair(id=row.get("id") or f"{src.id}->{refs[0].id}", source=src, references=refs))
    return pairs
