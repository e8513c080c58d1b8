"""Speaker similarity: cosine similarity (x 100) of speaker embeddings.

Backends:

- ``wavlm``: ``microsoft/wavlm-base-sv`` x-vectors through transformers, the paper's choice.
  Used when its weights are in the local Hugging Face cache or ``model`` names a local
  directory (downloads only with ``FOCALCODEC_ALLOW_DOWNLOAD=1``). Inputs shorter than 4880
  samples are replicate-padded, as in the recipe.
- ``resemblyzer``: the GE2E d-vector model that ships inside the resemblyzer package
  (offline). Numbers are not comparable with the paper's.

``auto`` (default) picks ``wavlm`` when it can be loaded, else ``resemblyzer``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .metrics import Metric, MetricUnavailable

__all__ = ["SpeakerEmbedder", "SpeakerSimilarity", "cosine_similarity"]

WAVLM_SV = "microsoft/wavlm-base-sv"
MIN_SAMPLES = 4880


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two ``(E,)`` vectors, in [-1, 1]."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _allow_download() -> bool:
    return os.environ.get("FOCALCODEC_ALLOW_DOWNLOAD", "") not in ("", "0")


def _wavlm_cached(name: str) -> bool:
    """Whether ``name`` is a local model folder or already in the Hugging Face cache."""
    if os.path.isdir(name):
        return True
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:
        return False
    snapshots = os.path.join(HF_HUB_CACHE, "models--" + name.replace("/", "--"), "snapshots")
    return os.path.isdir(snapshots) and any(os.scandir(snapshots))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: small recurrent models are many times slower with several
    threads on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SpeakerEmbedder:
    """``embed(audio (N,) float32 @ 16 kHz) -> (E,) float32`` with the chosen backend."""

    def __init__(self, backend: str = "auto", model: str | None = None, device: str = "cpu") -> None:
        if backend not in ("auto", "wavlm", "resemblyzer"):
            raise MetricUnavailable(f"unknown speaker backend {backend!r}: use auto, wavlm or resemblyzer")
        self.device = device
        errors: list[str] = []
        if backend in ("auto", "wavlm"):
            try:
                self._load_wavlm(model or WAVLM_SV)
                self.backend = "wavlm"
                return
            except MetricUnavailable as exc:
                if backend == "wavlm":
                    raise
                errors.append(str(exc))
        try:
            self._load_resemblyzer()
        except MetricUnavailable as exc:
            errors.append(str(exc))
            raise MetricUnavailable("no speaker-embedding backend: " + "; ".join(errors)) from None
        self.backend = "resemblyzer"

    @staticmethod
    def unavailable_reason() -> str | None:
        if importlib.util.find_spec("resemblyzer") is not None or importlib.util.find_spec("transformers") is not None:
            return None
        return "neither resemblyzer (pip install resemblyzer 'setuptools<81') nor transformers is installed"

    def _load_wavlm(self, name: str) -> None:
        if importlib.util.find_spec("transformers") is None:
            raise MetricUnavailable("transformers is not installed (needed for WavLM-base-SV)")
        if not (_wavlm_cached(name) or _allow_download()):  # importing transformers alone takes seconds
            raise MetricUnavailable(
                f"WavLM-base-SV weights not found locally; set FOCALCODEC_ALLOW_DOWNLOAD=1 to download {WAVLM_SV} "
                "or pass a local directory"
            )
        from transformers import AutoFeatureExtractor, WavLMForXVector

        try:
            local = not _allow_download()
            self.extractor = AutoFeatureExtractor.from_pretrained(name, local_files_only=local)
            self.model = WavLMForXVector.from_pretrained(name, local_files_only=local).to(self.device).eval()
        except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/...
            raise MetricUnavailable(
                f"WavLM-base-SV weights not found locally ({type(exc).__name__}); set FOCALCODEC_ALLOW_DOWNLOAD=1 "
                f"to download {WAVLM_SV} or pass a local directory"
            ) from None
        self.name = f"wavlm:{name}"

    def _load_resemblyzer(self) -> None:
        if importlib.util.find_spec("resemblyzer") is None:
            raise MetricUnavailable("resemblyzer is not installed (pip install resemblyzer 'setuptools<81')")
        import io
        import warnings

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder

            self.model = VoiceEncoder(device=self.device, verbose=False)
        self.name = "resemblyzer"

    @torch.inference_mode()
    def embed(self, audio: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if self.backend == "wavlm":
            if x.shape[0] < MIN_SAMPLES:
                x = np.pad(x, (0, MIN_SAMPLES - x.shape[0]), mode="edge")
            inputs = self.extractor(x, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            emb = self.model(**inputs).embeddings[0]
            return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()
        from resemblyzer import preprocess_wav

        peak = float(np.abs(x).max()) if x.size else 0.0
        y = preprocess_wav(x, source_sr=16000) if peak > 0 else x
        if y.shape[0] < 1600:  # VAD removed (almost) everything: embed the raw signal
            y = x / max(peak, 1e-8)
        with single_thread():
            return self.model.embed_utterance(y).astype(np.float32)


_SHARED: dict[Any, SpeakerEmbedder] = {}


class SpeakerSimilarity(Metric):
    """Speaker similarity x 100 between the reconstruction and the reference (or, for voice
    conversion, the target speaker's reference utterances); 100 for identical signals."""

    name = "sim"
    keys = {"sim": True}
    sample_rate = 16000
    align = False
    paper = "WavLM-base-SV"

    def __init__(self, backend: str = "auto", model: str | None = None, device: str = "cpu") -> None:
        key = (backend, model, device)
        if key not in _SHARED:  # one loaded model per process
            _SHARED[key] = SpeakerEmbedder(backend, model, device)
        self.embedder = _SHARED[key]
        self._cache: dict[bytes, np.ndarray] = {}
        self.model = (
            "WavLM-base-SV" if self.embedder.name == f"wavlm:{WAVLM_SV}" else self.embedder.name.replace("wavlm:", "")
        )
        if self.model == "resemblyzer":
            self.model = "resemblyzer (GE2E d-vector)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return SpeakerEmbedder.unavailable_reason()

    @property
    def backend(self) -> str:
        return self.embedder.name

    def _embed_cached(self, audio: np.ndarray) -> np.ndarray:
        import hashlib

        key = hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).digest()
        if key not in self._cache:
            self._cache[key] = self.embedder.embed(audio)
        return self._cache[key]

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        assert ref is not None
        return {"sim": 100.0 * cosine_similarity(self._embed_cached(ref), self.embedder.embed(hyp))}

    def reference_baseline(self, items: Sequence[tuple[str, np.ndarray, Mapping[str, Any]]]) -> dict[str, Any]:
        """What this embedder gives on the original audio: ``sim_other_speaker``, the mean
        similarity between utterances of *different* speakers (the floor a codec's score must
        be read against: resemblyzer gives about 50-60 there), and ``sim_same_speaker``
        between different utterances of the same speaker; each with its pair count and a
        bootstrap 95 % interval. Each utterance is paired with the next one (cyclically) of
        another / of its own speaker. Needs ``speaker`` fields."""
        from .stats import bootstrap_ci

        speakers = [str(meta.get("speaker") or "") for _, _, meta in items]
        if sum(1 for s in speakers if s) < 2:
            return {}
        embs = [self._embed_cached(audio) for _, audio, _ in items]
        out: dict[str, Any] = {}
        for name, same in (("sim_other_speaker", False), ("sim_same_speaker", True)):
            pairs: set[tuple[int, int]] = set()
            n = len(items)
            for i in range(n):
                if not speakers[i]:
                    continue
                for step in range(1, n):
                    j = (i + step) % n
                    if speakers[j] and (speakers[j] == speakers[i]) == same:
                        pairs.add((min(i, j), max(i, j)))
                        break
            values = [100.0 * cosine_similarity(embs[i], embs[j]) for i, j in sorted(pairs)]
            if values:
                out[name] = float(np.mean(values))
                out[f"{name}_n"] = len(values)
                out[f"{name}_ci"] = bootstrap_ci(values)
        return out
