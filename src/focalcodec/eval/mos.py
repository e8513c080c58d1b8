"""Non-intrusive quality predictors (MOS, 1..5, higher is better), scored on one signal.

- ``utmos``: UTMOS22-strong through ``torch.hub`` (``tarepan/SpeechMOS:v1.2.0``), the paper's
  metric. Used when the hub repository is already in the torch hub cache, or downloaded
  when ``FOCALCODEC_ALLOW_DOWNLOAD=1``.
- ``dnsmos``: Microsoft DNSMOS P.835 (SIG/BAK/OVRL) and P.808, ONNX models shipped in the
  ``speechmos`` package (offline).
- ``distillmos``: Distill-MOS (Stahl & Gamper 2025), the one offline MOS predictor found on
  PyPI whose weights ship inside its package (``distillmos``, 17 MB). Install it with
  ``pip install --no-deps distillmos xls-r-sqa``: its declared dependency ``torchaudio`` has no
  build for torch 2.13, and the model itself never uses it (only its file-reading command
  line does), so the module is imported with a stand-in ``torchaudio`` that fails if touched.

Checked and not usable offline (weights downloaded at run time, none in the package):
NISQA (``nisqa``, ``torchmetrics``), SCOREQ (``scoreq``, ``scoreq-pytorch``), UTMOS
(``utmos``, ``utmos-pytorch``), UTMOSv2, WhiSQA (needs Whisper-small from the Hub), WV-MOS.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .metrics import Metric, MetricUnavailable

__all__ = ["DNSMOSMetric", "DistillMOSMetric", "UTMOSMetric"]

UTMOS_REPO = "tarepan/SpeechMOS:v1.2.0"


def _allow_download() -> bool:
    return os.environ.get("FOCALCODEC_ALLOW_DOWNLOAD", "") not in ("", "0")


class _MOS(Metric):
    needs_reference = False
    sample_rate = 16000


class UTMOSMetric(_MOS):
    """UTMOS22 strong learner (Saeki et al. 2022), as in the paper's recipe."""

    name = "utmos"
    keys = {"utmos": True}
    model = paper = "UTMOS22-strong"

    @staticmethod
    def _cached_repo() -> Path | None:
        hub = Path(torch.hub.get_dir())
        owner, rest = UTMOS_REPO.split("/")
        name, _, tag = rest.partition(":")
        path = hub / f"{owner}_{name}_{tag.replace('/', '_')}"
        return path if (path / "hubconf.py").is_file() else None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if cls._cached_repo() is None and not _allow_download():
            return (
                f"UTMOS ({UTMOS_REPO}) is not in the torch hub cache; set FOCALCODEC_ALLOW_DOWNLOAD=1 once "
                "with network access to fetch it"
            )
        return None

    def __init__(self, device: str = "cpu") -> None:
        repo = self._cached_repo()
        try:
            if repo is not None:
                self.net = torch.hub.load(str(repo), "utmos22_strong", source="local", trust_repo=True)
            else:
                self.net = torch.hub.load(UTMOS_REPO, "utmos22_strong", trust_repo=True)
        except Exception as exc:  # noqa: BLE001 - hub code and weight downloads fail in many ways
            raise MetricUnavailable(f"UTMOS could not be loaded: {type(exc).__name__}: {exc}") from None
        self.device = device
        self.net = self.net.to(device).eval()

    @torch.inference_mode()
    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        x = torch.from_numpy(hyp)[None].to(self.device)
        return {"utmos": float(self.net(x, self.sample_rate).reshape(-1)[0])}


class DNSMOSMetric(_MOS):
    """DNSMOS P.835 (``dnsmos_sig``, ``dnsmos_bak``, ``dnsmos_ovrl``) and P.808 (``dnsmos_p808``).
    Clips shorter than 9 s are looped, as DNSMOS does."""

    name = "dnsmos"
    keys = {"dnsmos_ovrl": True, "dnsmos_sig": True, "dnsmos_bak": True, "dnsmos_p808": True}
    model = paper = "DNSMOS P.835 + P.808 (Microsoft ONNX models)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        for mod, pkg in (("speechmos", "speechmos"), ("onnxruntime", "onnxruntime"), ("librosa", "librosa")):
            if importlib.util.find_spec(mod) is None:
                return f"package {pkg!r} is not installed (pip install speechmos)"
        return None

    def __init__(self, personalized: bool = False) -> None:
        from speechmos import dnsmos

        root = Path(dnsmos.__file__).parent
        primary = root / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
        self.personalized = personalized
        self.net = dnsmos.DNSMOS(str(primary), str(root / "dnsmos_models" / "model_v8.onnx"))

    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        out = self.net(np.clip(hyp, -1.0, 1.0).astype(np.float32), self.sample_rate, self.personalized)
        return {
            "dnsmos_ovrl": float(out["ovrl_mos"]),
            "dnsmos_sig": float(out["sig_mos"]),
            "dnsmos_bak": float(out["bak_mos"]),
            "dnsmos_p808": float(out["p808_mos"]),
        }


@contextlib.contextmanager
def _torchaudio_stand_in():
    """Make ``import torchaudio`` succeed while a module that imports it but never uses it
    is imported; any use of the stand-in raises. A real torchaudio is left alone."""
    if importlib.util.find_spec("torchaudio") is not None:
        yield
        return

    class _Missing(types.ModuleType):
        def __getattr__(self, attr: str):
            raise MetricUnavailable(f"torchaudio.{attr} was used, but torchaudio is not installed")

    sys.modules["torchaudio"] = _Missing("torchaudio")
    try:
        yield
    finally:
        sys.modules.pop("torchaudio", None)


class DistillMOSMetric(_MOS):
    """Distill-MOS (Stahl & Gamper 2025), a small convolutional transformer distilled from an
    XLS-R speech-quality model; weights ship in the ``distillmos`` package."""

    name = "distillmos"
    keys = {"distillmos": True}
    model = "Distill-MOS v7 (distillmos package)"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        for mod in ("distillmos", "xls_r_sqa"):
            if importlib.util.find_spec(mod) is None:
                return f"package {mod!r} is not installed (pip install --no-deps distillmos xls-r-sqa)"
        return None

    def __init__(self, device: str = "cpu") -> None:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _torchaudio_stand_in():
            warnings.simplefilter("ignore")
            import distillmos

            self.net = distillmos.ConvTransformerSQAModel().to(device).eval()
        self.device = device

    @torch.inference_mode()
    def compute(self, ref: np.ndarray | None, hyp: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        x = torch.from_numpy(hyp)[None].to(self.device)
        return {"distillmos": float(self.net(x).reshape(-1)[0])}
