"""Checkpoints: finding them (local or Hugging Face Hub), reading both key layouts, strict
loading with useful errors, and writing the official format back.

Accepted sources for :meth:`FocalCodec.from_pretrained`:

- a local directory with ``config.json`` and ``model.safetensors`` (or ``model.pt``);
- a local ``X.json`` config with a sibling ``X.safetensors``/``X.pt`` (or ``model.*``);
- a Hub repo id ``owner/name`` (``config.json`` + ``model.safetensors``, else ``model.pt``),
  or ``owner/name/file.json`` (that config and the weights with the same stem);
- a bare preset name such as ``focalcodec_50hz`` (= ``lucadellalib/focalcodec_50hz``).

Key layouts: the current ("v0.0.2") one, and the legacy v0.0.1 one of the non-causal
checkpoints (separate q/k/v projections, ``.0``/``.1`` sub-modules in the compressor and
decompressor, an unused ``encoder.encoder.norm`` and ``quantizer.mask``), converted on load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import HUB_OWNER, FocalCodecConfig, preset_name
from .errors import CheckpointError, ConfigError, HubError

__all__ = [
    "checkpoint_name",
    "convert_legacy_state_dict",
    "load_state_dict",
    "load_weights_file",
    "resolve_checkpoint",
    "save_checkpoint",
    "state_dict_sha256",
]

WEIGHT_NAMES = ("model.safetensors", "model.pt")
LEGACY_EXTRAS = re.compile(r"^(quantizer\.mask|encoder\.encoder\.norm\.(weight|bias))$")
_LEGACY_BLOCKS = {
    "compressor": {"0": "downscale", "1": "focal_block"},
    "decompressor": {"0": "focal_block", "1": "upscale"},
}
_LEGACY_BLOCK_KEY = re.compile(r"^(compressor|decompressor)\.layers\.(\d+)\.([01])\.(.+)$")


def is_legacy_state_dict(state_dict: dict[str, Tensor]) -> bool:
    """True for the v0.0.1 layout (separate q/k/v or numbered focal sub-modules)."""
    return any(".q_proj." in k or _LEGACY_BLOCK_KEY.match(k) for k in state_dict)


def convert_legacy_state_dict(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """v0.0.1 keys -> current keys; also drops the two legacy extras (see module docstring)."""
    out: dict[str, Tensor] = {}
    qkv: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if LEGACY_EXTRAS.match(key):
            continue
        m = re.match(r"^(.*\.attention)\.([qkv])_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault(f"{m.group(1)}.qkv_proj.{m.group(3)}", {})[m.group(2)] = value
            continue
        m = _LEGACY_BLOCK_KEY.match(key)
        if m:
            key = f"{m.group(1)}.layers.{m.group(2)}.{_LEGACY_BLOCKS[m.group(1)][m.group(3)]}.{m.group(4)}"
        out[key] = value
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"legacy checkpoint has an incomplete q/k/v set for {key} (found {sorted(parts)})")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def state_dict_sha256(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in name order.
    The same weights give the same digest whatever file, key layout or folder they came from."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def checkpoint_name(path: Path) -> str:
    """A readable model name for a local checkpoint folder: its own name (``.`` resolved), or
    for a Hugging Face cache snapshot (``models--OWNER--NAME/snapshots/COMMIT``) the repo:
    the preset name for the official ones, else ``OWNER/NAME``."""
    path = Path(path).resolve()
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        parts = path.parent.parent.name.split("--")[1:]
        if len(parts) == 2 and all(parts):
            repo = "/".join(parts)
            return preset_name(repo) or repo
    return path.name or str(path)


def load_weights_file(path: Path) -> dict[str, Tensor]:
    """Read ``.safetensors`` or ``.pt`` (``weights_only=True``) into a flat dict of tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a bad file
        raise CheckpointError(f"cannot read weights file {path} (truncated or not a checkpoint?): {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return state


def load_state_dict(model: nn.Module, state_dict: dict[str, Tensor], source: str = "checkpoint") -> None:
    """Strictly load either layout into ``model``; on mismatch raise a :class:`CheckpointError`
    naming the missing, unexpected and mis-shaped keys."""
    if is_legacy_state_dict(state_dict):
        state_dict = convert_legacy_state_dict(state_dict)
    else:
        state_dict = {k: v for k, v in state_dict.items() if not LEGACY_EXTRAS.match(k)}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} (model wants {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:

        def show(keys: list) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = []
        if missing:
            lines.append(f"missing keys: {show(missing)}")
        if unexpected:
            lines.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            lines.append(f"wrong shapes: {show(shapes)}")
        lines.append("check that the weights and the config belong to the same model")
        raise CheckpointError(f"{source} does not match the model architecture of its config: " + "; ".join(lines))
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(
            f"{source} holds NaN or infinite weights in {', '.join(bad[:3])}{more}; "
            "the checkpoint is damaged or its training diverged"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=True)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


_RESOLVED: dict[str, str | None] = {}


def _unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be reached (its host name does not resolve), or None. Checked once
    per process, so that a machine without network fails at once instead of after
    huggingface_hub's retries (about 27 s)."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if host not in _RESOLVED:
        outcome: list[str | None] = []

        def resolve() -> None:
            try:
                socket.getaddrinfo(host, 443)
                outcome.append(None)
            except OSError as exc:
                outcome.append(f"the host name {host} does not resolve ({exc.strerror or exc})")

        worker = threading.Thread(target=resolve, daemon=True)
        worker.start()
        worker.join(timeout)
        _RESOLVED[host] = outcome[0] if outcome else f"the host name {host} did not resolve within {timeout:g} s"
    return _RESOLVED[host]


def _hub_download(repo_id: str, filename: str, **hub_kwargs: Any) -> Path | None:
    """Download one file; None if the repo exists but lacks it; HubError otherwise. Without
    network (the Hub's name does not resolve) only the local cache is tried."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise HubError("huggingface_hub is not installed: pip install huggingface_hub") from None
    reason = "HF_HUB_OFFLINE is set" if _offline() else None
    if reason is None and not hub_kwargs.get("local_files_only"):
        reason = _unreachable()
        if reason is not None:
            hub_kwargs = {**hub_kwargs, "local_files_only": True}  # the cache may still have it
    try:
        return Path(hf_hub_download(repo_id, filename, **hub_kwargs))
    except LocalEntryNotFoundError as exc:
        error: Exception = exc
    except EntryNotFoundError:
        return None
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise HubError(
            f"Hugging Face repo {repo_id!r} (or its revision) was not found; check the name, or pass a local "
            "checkpoint folder"
        ) from None
    except Exception as exc:  # noqa: BLE001 - network, auth...
        error = exc
    why = reason or f"no network? {type(error).__name__}"
    raise HubError(
        f"could not fetch {filename} of {repo_id!r} from the Hugging Face Hub ({why}). Download the checkpoint "
        f"where the Hub is reachable, e.g. `hf download {repo_id} --local-dir DIR`, and pass DIR instead of "
        "the repo id"
    )


def _missing_local(text: str) -> str | None:
    """Why ``text`` (not an existing file or folder) must have meant a local path, or None
    when it may be a Hub repo id."""
    if text.startswith(("./", "../", "/", "~", ".\\", "..\\")) or "\\" in text or text in (".", ".."):
        return "it is written as a local path"
    first = text.split("/")[0]
    if "/" in text and first and Path(first).is_dir():
        return f"there is a local folder {first!r}"
    return None


def check_hub_kwargs(hub_kwargs: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for keyword arguments ``hf_hub_download`` does not take (a misspelt
    ``cache_dir`` would otherwise be dropped for a local folder, or fail as a network error)."""
    if not hub_kwargs:
        return
    import inspect

    from huggingface_hub import hf_hub_download

    known = set(inspect.signature(hf_hub_download).parameters) - {"repo_id", "filename"}
    unknown = sorted(set(hub_kwargs) - known)
    if unknown:
        raise ConfigError(
            f"unknown keyword argument(s) {', '.join(unknown)}: from_pretrained passes extra keywords to "
            f"huggingface_hub.hf_hub_download, which takes {', '.join(sorted(known))}"
        )


def resolve_checkpoint(source: str, **hub_kwargs: Any) -> tuple[FocalCodecConfig, Path]:
    """Find the config and weights file for ``source`` (see module docstring)."""
    check_hub_kwargs(hub_kwargs)
    text = str(source)
    path = Path(text)
    if path.is_dir():
        config = FocalCodecConfig.from_json(path / "config.json", name=checkpoint_name(path))
        for name in WEIGHT_NAMES:
            if (path / name).is_file():
                return config, path / name
        raise CheckpointError(f"{path} has a config.json but no model.safetensors or model.pt")
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        config = FocalCodecConfig.from_json(path)
        candidates = [path.with_suffix(".safetensors"), path.with_suffix(".pt")]
        candidates += [path.parent / n for n in WEIGHT_NAMES]
        for candidate in candidates:
            if candidate.is_file():
                return config, candidate
        raise CheckpointError(f"no weights next to {path}: expected {candidates[0].name} or model.safetensors")
    local = _missing_local(text)
    if local is not None:
        raise CheckpointError(
            f"local checkpoint not found: {path} (no such folder or file; read as a local path because {local}); "
            "check the path"
        )
    preset = preset_name(text)
    repo_id = f"{HUB_OWNER}/{preset}" if preset is not None else text
    parts = repo_id.split("/")
    if len(parts) == 3 and parts[2].endswith(".json"):
        repo, config_file = "/".join(parts[:2]), parts[2]
        stem = config_file[: -len(".json")]
        weight_names: tuple[str, ...] = (stem + ".safetensors", stem + ".pt")
    elif len(parts) == 2 and all(parts):
        repo, config_file, weight_names = repo_id, "config.json", WEIGHT_NAMES
    else:
        raise ConfigError(f"{text!r} is not a local directory, a config .json, a preset or a Hub repo id 'owner/name'")
    config_path = _hub_download(repo, config_file, **hub_kwargs)
    if config_path is None:
        raise HubError(f"Hugging Face repo {repo!r} has no {config_file}")
    config = FocalCodecConfig.from_json(config_path, name=preset or repo)
    for name in weight_names:
        weights = _hub_download(repo, name, **hub_kwargs)
        if weights is not None:
            return config, weights
    raise HubError(f"Hugging Face repo {repo!r} has none of: {', '.join(weight_names)}")


def save_checkpoint(
    model: nn.Module, config: FocalCodecConfig, directory: Path, safetensors: bool = True, force: bool = True
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (or ``model.pt``) into ``directory``
    through :func:`focalcodec.outputs.output_path` (atomic; ``force=False`` refuses to replace
    an existing checkpoint)."""
    from .outputs import check_targets, output_path

    directory = Path(directory)
    target = directory / ("model.safetensors" if safetensors else "model.pt")
    check_targets([directory / "config.json", target], force=force)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with output_path(target, force=force) as tmp:
        if safetensors:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, str(tmp))
    config.to_json(directory / "config.json", force=force)
    return target
