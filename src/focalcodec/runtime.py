"""Where a run executes: the ``--device`` check and the one torchrun set-up (corpus
tokenization and training). Torch is imported inside the functions, so the CLI can import
this module while parsing arguments.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every process is one rank: :class:`Distributed` reads
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (and ``MASTER_ADDR`` / ``MASTER_PORT``), gives
``cuda`` the process's own GPU (``cuda:LOCAL_RANK``), starts the process group (nccl on CUDA,
gloo otherwise) unless one is running, and keeps a gloo group for Python objects.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from .errors import InputError

__all__ = ["Distributed", "check_device"]


def check_device(name, flag: str = "--device"):
    """``--device`` (or, with ``flag``, another option or keyword such as ``map_location``) as a
    ``torch.device`` that exists on this machine, else an :class:`~focalcodec.errors.InputError`
    saying what is available."""
    import torch

    cli = flag.startswith("--")
    arg = f"{flag} {name}" if cli else f"{flag}={str(name)!r}"

    def use(device: str) -> str:
        return f"{flag} {device}" if cli else f"{flag}={device!r}"

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"{arg} is not a torch device ({exc}); use e.g. {use('cpu')} or {use('cuda')}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{arg}: no CUDA device is available here; use {use('cpu')}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"{arg}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{arg}: MPS is not available here; use {use('cpu')}")
    elif device.type == "meta":
        raise InputError(f"{arg}: the meta device holds no data and cannot run a model; use e.g. {use('cpu')}")
    elif device.type != "cpu":
        try:  # other backends (xla, xpu, hpu, ...): usable only where torch is built or extended for them
            torch.empty(1, device=device).cpu()
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds here (RuntimeError, ImportError, ...)
            text = " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__
            raise InputError(f"{arg}: not usable here ({text}); use e.g. {use('cpu')} or {use('cuda')}") from None
    return device


class Distributed:
    """This process's rank in a torchrun launch (one process: rank 0 of 1).

    ``device``: ``cuda`` means ``cuda:LOCAL_RANK`` (made current); the device is checked with
    :func:`check_device`. ``backend``: ``"auto"`` (nccl on CUDA, gloo otherwise), ``"nccl"`` or
    ``"gloo"``. ``timeout_hours``: how long a collective may wait (None: PyTorch's default).
    A process group started here is destroyed by :meth:`close`.
    """

    def __init__(self, device: str = "cpu", backend: str = "auto", timeout_hours: float | None = None) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        name = f"cuda:{self.local_rank}" if str(device) == "cuda" else str(device)
        self.device = check_device(name)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        timeout = {} if timeout_hours is None else {"timeout": timedelta(hours=timeout_hours)}
        self.owned = False
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        elif world > 1:
            if backend == "auto":
                backend = "nccl" if self.device.type == "cuda" and dist.is_nccl_available() else "gloo"
            dist.init_process_group(backend, **timeout)
            self.owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world = 0, 1
        self.group = dist.new_group(backend="gloo", **timeout) if self.world > 1 else None

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def all_reduce(self, tensor):
        """``tensor`` summed over the ranks, in place (returned)."""
        if self.world > 1:
            self.dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier(group=self.group)

    def close(self) -> None:
        if self.owned and self.dist.is_initialized():
            self.dist.destroy_process_group()
            self.owned = False
