"""Which encoder a trained part was trained on: its features on a fixed probe signal.

A compressor/decompressor (stage Q, the streaming quantiser and joint steps) or a decoder
(stage D, Vocos and WaveNeXt) only works on the features of the encoder it was trained on.
Weight digests cannot tell whether two encoders are the same WavLM: the same weights loaded
from the Hub (weight-normalised positional conv fused here) and from a codec folder need not
be bit-identical. So each checkpoint keeps the behaviour of that encoder instead: its features
on :func:`probe_signal` (``probe.pt`` beside ``parts.pt``), and :func:`check_probes` compares
them, at export, with the features of the encoder being exported.

A decoder run is trained on *non-causal* features by design (the recipe's WaveNeXt decoder of
the streaming models too, SPEC §4.4 step 1), while a streaming codec's encoder is causal: its
probe is compared only when the exported encoder is non-causal (the features it was trained
on are then the ones it will get).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ["PROBE_FILE", "PROBE_TOLERANCE", "check_probes", "encoder_probe", "probe_difference", "probe_signal"]

PROBE_FILE = "probe.pt"
PROBE_VERSION = 1
PROBE_TOLERANCE = 1e-3  # relative RMS difference of the probe features that still counts as the same encoder
PROBE_SAMPLES = 16000  # 1 s at 16 kHz: 49-50 frames


def probe_signal() -> Tensor:
    """The fixed probe: ``(1, 16000)`` float32 at 16 kHz, seeded noise plus a 150 Hz harmonic
    tone (the same on every machine and in every run)."""
    gen = torch.Generator().manual_seed(20250907)
    t = torch.arange(PROBE_SAMPLES, dtype=torch.float64) / 16000
    tone = sum(torch.sin(2 * math.pi * 150 * h * t) / h for h in range(1, 8))
    sig = 0.05 * tone + 0.02 * torch.randn(PROBE_SAMPLES, generator=gen, dtype=torch.float64)
    return sig.float()[None]


@torch.no_grad()
def encoder_features(encoder: nn.Module) -> Tensor:
    """The encoder's features on the probe: ``(T, C)`` float32, computed on a CPU copy in fp32
    (the same arithmetic at training time, on any device, and at export)."""
    cpu = copy.deepcopy(encoder).float().cpu().eval()
    return cpu(probe_signal())[0].float().contiguous()


def encoder_probe(encoder: nn.Module, parts: Sequence[str], stage: str, source: str, described: str) -> dict[str, Any]:
    """What a checkpoint records about the encoder whose features its ``parts`` were trained
    on: the probe features, whether the encoder is causal, and where it came from: ``source``
    (an export source, or ``random``) and ``described`` (for messages)."""
    return {
        "version": PROBE_VERSION,
        "features": encoder_features(encoder),
        "causal": bool(getattr(encoder, "causal", False)),
        "parts": list(parts),
        "stage": stage,
        "source": source,
        "described": described,
    }


def probe_difference(a: Tensor, b: Tensor) -> float:
    """Relative RMS difference ``||a - b|| / ||b||`` (inf when the shapes differ)."""
    if a.shape != b.shape:
        return math.inf
    return float((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-12))


def _read_probe(ckpt: Path) -> dict[str, Any] | None:
    path = ckpt / PROBE_FILE
    if not path.is_file():
        return None
    try:
        probe = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(probe, dict) or not isinstance(probe.get("features"), Tensor):
            raise ValueError("not an encoder probe")
    except Exception as exc:  # noqa: BLE001 - any reader failure means a damaged file
        raise CheckpointError(
            f"cannot read {path} (truncated or corrupt: {exc}); use another checkpoint of the run"
        ) from None
    return probe


def check_probes(encoder: nn.Module, sources: Mapping[str, str], checkpoints: Mapping[str, Path | None]) -> None:
    """Check that the trained parts of each run checkpoint in ``checkpoints`` (``{part: checkpoint
    folder or None}``) were trained on the features ``encoder`` (the exported one, from
    ``sources["encoder"]``) gives. A mismatch is a :class:`CheckpointError` naming both sources;
    a run checkpoint without a probe (written before probes existed) is a warning."""
    exported: Tensor | None = None
    causal = bool(getattr(encoder, "causal", False))
    seen: set[Path] = set()
    for part, ckpt in checkpoints.items():
        if part == "encoder" or ckpt is None or ckpt in seen:
            continue
        seen.add(ckpt)
        parts = [p for p, c in checkpoints.items() if c == ckpt and p != "encoder"]
        probe = _read_probe(ckpt)
        if probe is None:
            warnings.warn(
                f"{ckpt} has no encoder probe (a checkpoint from before probes were recorded): cannot check that its "
                f"{', '.join(parts)} were trained on the features of the exported encoder ({sources['encoder']})",
                stacklevel=2,
            )
            continue
        if probe.get("stage") == "decoder" and causal and not probe.get("causal"):
            continue  # trained on non-causal features by design (WaveNeXt of the streaming models)
        if exported is None:
            exported = encoder_features(encoder)
        diff = probe_difference(exported, probe["features"])
        if not diff <= PROBE_TOLERANCE:
            trained = str(probe.get("source") or "random")
            kind = "causal" if probe.get("causal") else "non-causal"
            todo = "train that stage on the exported encoder"
            if trained != "random":
                todo = f"export with encoder={trained} (the encoder it was trained on), or {todo}"
            raise CheckpointError(
                f"{ckpt} ({', '.join(parts)}) was trained on the features of another encoder "
                f"({kind}, {probe.get('described', trained)}) "
                f"than the exported one (encoder={sources['encoder']}; relative difference {diff:.3g} on the probe "
                f"signal, tolerance {PROBE_TOLERANCE:g}): {todo}"
            )
