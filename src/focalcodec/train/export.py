"""Assemble trained stages into an official-format checkpoint (``config.json`` +
``model.safetensors``) that :meth:`FocalCodec.from_pretrained` loads.

Sources are given per codec part (``encoder``, ``compressor``, ``decompressor``,
``decoder``); each is a training run folder, a checkpoint folder, a codec checkpoint or
``hf-wavlm:DIR`` (encoder only). A bare run folder contributes every part it trained, e.g.::

    export_checkpoint("focalcodec_50hz", ["runs/q50", "runs/vocos", "encoder=hf-wavlm:wavlm-large"], "out/")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..codec import FocalCodec
from ..config import FocalCodecConfig
from ..errors import ConfigError
from .probe import check_probes
from .stages import PARTS, load_part, read_parts, run_checkpoint

__all__ = ["export_checkpoint", "resolve_sources"]


def resolve_sources(sources: Sequence[str], checkpoint: str = "auto") -> dict[str, str]:
    """``["part=SRC", "RUN_DIR", ...] -> {part: source}``; later entries win. A run folder
    contributes every part of the checkpoint ``checkpoint`` picks (see
    :func:`~.stages.run_checkpoint`: ``auto`` = the latest for decoder runs, the best
    validated one otherwise, as the recipes keep)."""
    out: dict[str, str] = {}
    for item in sources:
        head, sep, tail = item.partition("=")
        if sep and head in PARTS:
            out[head] = str(run_checkpoint(Path(tail), checkpoint) or tail)
            continue
        ckpt = run_checkpoint(Path(item), checkpoint)
        if ckpt is None:
            raise ConfigError(f"{item!r} is neither PART=SOURCE ({', '.join(PARTS)}) nor a training run folder")
        for part in read_parts(ckpt):
            out[part] = str(ckpt)
    return out


def export_checkpoint(
    model: str | Path | Mapping[str, Any],
    sources: Sequence[str] | Mapping[str, str],
    output_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    checkpoint: str = "auto",
) -> Path:
    """Build the codec of architecture ``model`` (preset / config / dict, plus dot-path
    ``overrides``), fill every part from its source and write it to ``output_dir``; returns
    the weights path. Every part with parameters must have a source. ``checkpoint`` (auto,
    best or latest) picks the checkpoint of run folders given as sources. The trained parts of
    each run must have been trained on the features the exported encoder gives (checked on the
    probe signal each checkpoint records, see :mod:`.probe`; a :class:`CheckpointError` names
    both sources otherwise)."""
    config = FocalCodecConfig.load(model).with_overrides(overrides or {})
    resolved = dict(sources) if isinstance(sources, Mapping) else resolve_sources(sources, checkpoint)
    missing = [p for p in PARTS if p not in resolved]
    if missing:
        raise ConfigError(f"no source for the codec part(s): {', '.join(missing)}")
    codec = FocalCodec(config)
    for part in PARTS:
        load_part(getattr(codec, part), resolved[part], part, checkpoint=checkpoint)
    runs = {part: run_checkpoint(Path(resolved[part]), checkpoint) for part in PARTS}
    check_probes(codec.encoder, resolved, runs)
    return codec.save_pretrained(output_dir)
