"""One trainer for every stage: single process or ``torchrun`` (any number of nodes) with
DistributedDataParallel, mixed precision, gradient accumulation, atomic checkpoints and
exact resume.

Run layout (``output_dir``)::

    config.yaml               the resolved configuration
    metrics.jsonl             one JSON object per logged step / validation (a resumed run
                              first cuts it back to its checkpoint, so no step appears twice)
    tb/                       TensorBoard events (losses, LR, gradient norms, audio, mels)
    checkpoints/step_XXXXXXXX/state.pt   model, optimisers, schedulers, scalers, step,
                                          data position, RNG of every rank
    checkpoints/step_XXXXXXXX/parts.pt   the stage's trained codec parts (for export)
    checkpoints/latest, checkpoints/best  names of the latest / best-validation checkpoint

A checkpoint is written to a temporary folder and renamed into place, so an interrupted
write never leaves a broken checkpoint. The folder of another run is never written into
silently: starting a run where one already is (``train.resume=none``, or a run with no
checkpoint to resume) needs ``force`` (``-f``), and a run of another stage is refused before
anything is written. Resuming restores everything needed to continue
exactly as an uninterrupted run: the batches that follow (the data order and crops are
functions of seed, epoch and position), the optimiser and scheduler states and the RNGs.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..errors import CheckpointError, ConfigError, OutputError
from ..outputs import check_writable, output_path, write_text
from ..runtime import Distributed
from .config import load_train_config
from .data import AudioDataset, BucketBatchSampler, FeatureCache, collate, read_manifest
from .probe import PROBE_FILE
from .stages import Stage, StepContext, _run_stage, build_stage

__all__ = ["LRSchedule", "Trainer", "train"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "tb")  # what a run writes into output_dir


class LRSchedule:
    """The learning-rate policies of the recipes, with a resumable state.

    - ``plateau`` (stage Q and the streaming steps; SpeechBrain's NewBob with patience 0):
      after each validation, LR x ``factor`` if the loss improved on the previous validation
      by less than ``threshold`` relative to it: ``(previous - loss) / |previous| <
      threshold``. With ``signed: true`` the division is by the signed ``previous``, as NewBob
      does; that inverts the rule once the loss is negative (the stage-Q loss includes the
      entropy term and goes below 0): LR then decays when the loss improves.
    - ``exponential`` (stage D): LR x ``gamma`` after every step (``interval: step``) or
      after epochs 1, 1 + ``every``, 1 + 2 ``every``, ... (``interval: epoch``; the recipe's
      StepScheduler decays every 2 epochs, starting after the first).
    - ``constant``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: dict[str, Any]) -> None:
        self.optimizer = optimizer
        self.type = cfg["type"]
        if self.type not in ("plateau", "exponential", "constant"):
            raise ConfigError(f"scheduler.type must be plateau, exponential or constant, not {self.type!r}")
        self.factor = float(cfg["factor"])
        self.threshold = float(cfg["threshold"])
        self.signed = bool(cfg["signed"])
        self.gamma = float(cfg["gamma"])
        self.interval = cfg["interval"]
        if self.interval not in ("epoch", "step"):
            raise ConfigError("scheduler.interval must be epoch or step")
        self.every = int(cfg["every"])
        self.previous: float | None = None

    def _scale(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= factor

    def on_step(self) -> None:
        if self.type == "exponential" and self.interval == "step":
            self._scale(self.gamma)

    def on_epoch_end(self, epochs_done: int) -> None:
        """After ``epochs_done`` (>= 1) complete epochs."""
        if self.type == "exponential" and self.interval == "epoch" and (epochs_done - 1) % self.every == 0:
            self._scale(self.gamma)

    def on_validation(self, loss: float) -> None:
        if self.type != "plateau" or not math.isfinite(loss):
            return
        if self.previous is not None:
            scale = self.previous if self.signed else abs(self.previous)
            improvement = (self.previous - loss) / scale if scale != 0 else 0.0
            if improvement < self.threshold:
                self._scale(self.factor)
        self.previous = loss

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = state.get("previous")


def _to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = [
        np_state[0],
        torch.from_numpy(np_state[1].astype(np.int64)),
        int(np_state[2]),
        int(np_state[3]),
        float(np_state[4]),
    ]
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Train one stage from a resolved config (see :mod:`.config`). ``fit()`` returns the
    last logged metrics. ``force`` lets a new run replace the run already in ``output_dir``
    (see :meth:`_check_output_dir`)."""

    def __init__(self, cfg: dict[str, Any], force: bool = False) -> None:
        cfg = load_train_config(cfg)  # resolved and validated (idempotent)
        self.cfg = cfg
        self.tcfg = cfg["train"]
        self.output_dir = Path(cfg["output_dir"])
        self.resume_from, self._replace = self._check_output_dir(force)  # before any work
        if self.tcfg["num_threads"]:
            torch.set_num_threads(int(self.tcfg["num_threads"]))
        want = self.tcfg["device"]
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no GPU is available")
        self.dist = Distributed(want, self.tcfg["backend"])  # torchrun: cuda is this rank's GPU
        self.device, self.rank, self.world_size = self.dist.device, self.dist.rank, self.dist.world
        self.local_rank, self.distributed = self.dist.local_rank, self.dist.world > 1
        precision = self.tcfg["precision"]
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError("train.precision must be fp32, bf16 or fp16")
        self.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.num_validations = 0
        self.writer = None
        self.last_logs: dict[str, float] = {}
        self._improved = False
        self._pending: dict[str, float] = {}  # training logs summed since the last log step
        self._pending_n = 0
        self._pending_resumed = 0
        self._skipped_seen: set[str] = set()
        self._resumed_metrics_bytes: int | None = None

        seed = int(cfg["seed"])
        torch.manual_seed(seed)  # identical initial weights on every rank
        random.seed(seed)
        np.random.seed(seed % (2**32))
        self.stage: Stage = build_stage(cfg)
        for m in list(self.stage.nets.values()) + list(self.stage.frozen.values()):
            m.to(self.device)
        for m in self.stage.frozen.values():
            m.eval()
        self.wrapped: dict[str, nn.Module] = {}
        for name, net in self.stage.nets.items():
            net.train()
            if self.distributed and any(p.requires_grad for p in net.parameters()):
                ids = [self.local_rank] if self.device.type == "cuda" else None
                self.wrapped[name] = DistributedDataParallel(net, device_ids=ids)
            else:
                self.wrapped[name] = net
        ocfg = cfg["optim"]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedules: dict[str, LRSchedule] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.params: dict[str, list[nn.Parameter]] = {}
        for phase, names in self.stage.phases.items():
            params = [p for n in names for p in self.stage.nets[n].parameters() if p.requires_grad]
            if not params:
                raise ConfigError(f"stage {self.stage.name!r} phase {phase!r} has nothing to train")
            self.params[phase] = params
            self.optimizers[phase] = torch.optim.AdamW(
                params,
                lr=float(ocfg["lr"]),
                betas=tuple(float(b) for b in ocfg["betas"]),
                eps=float(ocfg["eps"]),
                weight_decay=float(ocfg["weight_decay"]),
            )
            self.schedules[phase] = LRSchedule(self.optimizers[phase], cfg["scheduler"])
            self.scalers[phase] = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        torch.manual_seed(seed + 7919 * (self.rank + 1))  # per-rank stream for training noise
        self.ctx = StepContext(self.wrapped, self.device, self._no_sync)
        self.raw_ctx = StepContext(self.stage.nets, self.device, lambda name: contextlib.nullcontext())
        self._build_data()

    # -- data ---------------------------------------------------------------------------------
    def _feature_cache(
        self, train_entries: list[dict[str, Any]], valid_entries: list[dict[str, Any]]
    ) -> FeatureCache | None:
        directory = self.cfg["data"]["feature_cache"]
        if not directory:
            return None
        encoder = self.stage.frozen.get("encoder")
        if encoder is None:
            raise ConfigError(
                "data.feature_cache works with a frozen encoder (quantizer and decoder stages), "
                f"not {self.stage.name!r}"
            )
        rate = int(self.cfg["data"]["sample_rate"])
        cache = FeatureCache(directory, FeatureCache.encoder_id(encoder, rate))
        stale = cache.stale_layouts()
        if stale and self.rank == 0:
            warnings.warn(
                f"{directory} also holds cached features of an older layout ({len(stale)} folders such as "
                f"{stale[0].name}/, keyed by another weights digest): they are not used; the features are computed "
                f"again under {cache.root} (delete the old folders to free the space)",
                stacklevel=2,
            )
        todo = (train_entries + valid_entries)[self.rank :: self.world_size]
        cache.fill(encoder, todo, rate, str(self.device))
        self.dist.barrier()
        return cache

    def _build_data(self) -> None:
        d = self.cfg["data"]
        if not d["train"]:
            raise ConfigError("data.train is not set: give a manifest built with `focalcodec prepare`")
        seed = int(self.cfg["seed"])
        train = read_manifest(d["train"], float(d["min_duration"]), float(d["max_duration"]), d["limit"])
        valid = (
            read_manifest(d["valid"], float(d["min_duration"]), float(d["max_duration"]), d["valid_limit"])
            if d["valid"]
            else []
        )
        cache = self._feature_cache(train, valid)
        target_sr = d["target_sample_rate"]
        self.train_set = AudioDataset(train, int(d["sample_rate"]), target_sr, cache, seed, d["segment_seconds"])
        self.train_sampler = BucketBatchSampler(
            [e["duration"] for e in train],
            int(d["batch_size"]),
            d["max_batch_seconds"],
            int(d["num_buckets"]),
            shuffle=True,
            seed=seed,
            num_replicas=self.world_size,
            rank=self.rank,
        )
        self.valid_loader = None
        if valid:
            vset = AudioDataset(valid, int(d["sample_rate"]), target_sr, cache, seed)
            vsampler = BucketBatchSampler(
                [e["duration"] for e in valid],
                int(d["valid_batch_size"]),
                None,
                1,
                shuffle=False,
                num_replicas=self.world_size,
                rank=self.rank,
            )
            self.valid_loader = DataLoader(vset, batch_sampler=vsampler, collate_fn=collate, num_workers=0)
        self.num_workers = int(d["num_workers"])

    def _train_loader(self) -> DataLoader:
        self.train_set.set_epoch(self.epoch)
        self.train_sampler.set_epoch(self.epoch, self.batch_in_epoch)
        gen = torch.Generator().manual_seed(int(self.cfg["seed"]) * 1000003 + self.epoch)
        return DataLoader(
            self.train_set,
            batch_sampler=self.train_sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=gen,
        )

    # -- distributed helpers -----------------------------------------------------------------
    def _no_sync(self, name: str):
        net = self.wrapped[name]
        return net.no_sync() if isinstance(net, DistributedDataParallel) else contextlib.nullcontext()

    def _all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = self.dist.all_reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device))
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=False)}

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- one optimisation step ---------------------------------------------------------------
    def train_step(self, micro: list[dict[str, Tensor]]) -> dict[str, float]:
        """One optimiser step per phase over the micro-batches (gradient accumulation;
        gradients are synchronised on the last micro-batch only)."""
        micro = [_to_device(b, self.device) for b in micro]
        logs: dict[str, float] = {}
        multi = len(self.stage.phases) > 1
        for phase, names in self.stage.phases.items():
            opt, scaler = self.optimizers[phase], self.scalers[phase]
            opt.zero_grad(set_to_none=True)
            for i, batch in enumerate(micro):
                last = i == len(micro) - 1
                with contextlib.ExitStack() as stack:
                    if not last:
                        for n in names:
                            stack.enter_context(self._no_sync(n))
                    with self._autocast():
                        losses = self.stage.compute(phase, batch, self.ctx)
                    scaler.scale(losses["loss"] / len(micro)).backward()
                for k, v in losses.items():
                    key = f"loss_{phase}" if (k == "loss" and multi) else k
                    logs[key] = logs.get(key, 0.0) + float(v.detach()) / len(micro)
            scaler.unscale_(opt)
            clip = self.cfg["optim"]["grad_clip"]
            norm = torch.nn.utils.clip_grad_norm_(self.params[phase], float(clip) if clip else float("inf"))
            if torch.isfinite(norm) or scaler.is_enabled():
                scaler.step(opt)
            else:
                warnings.warn(
                    f"step {self.step + 1}: non-finite gradient norm in phase {phase!r}; update skipped", stacklevel=2
                )
            scaler.update()
            logs[f"grad_norm_{phase}" if multi else "grad_norm"] = float(norm)
            logs[f"lr_{phase}" if multi else "lr"] = self.schedules[phase].lr
        return logs

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> dict[str, float] | None:
        if self.valid_loader is None:
            return None
        for net in self.stage.nets.values():
            net.eval()
        sums: dict[str, Tensor] = {}
        media: dict[str, Any] = {}
        every = int(self.tcfg["media_every_valid"])
        want_media = self.rank == 0 and self.writer is not None and every > 0 and self.num_validations % every == 0
        with torch.no_grad():
            for i, batch in enumerate(self.valid_loader):
                self._report_skipped(batch.pop("skipped", []))
                batch = _to_device(batch, self.device)
                with self._autocast():
                    part = self.stage.validate(batch, self.raw_ctx)
                    if i == 0 and want_media:
                        media = self.stage.media(batch, self.raw_ctx)
                for k, v in part.items():
                    sums[k] = sums[k] + v.double() if k in sums else v.double()
        for net in self.stage.nets.values():
            net.train()
        if self.distributed:
            for k in sorted(sums):
                sums[k] = self.dist.all_reduce(sums[k].to(self.device)).cpu()
        metrics = self.stage.summarize(sums)
        self.num_validations += 1
        for sched in self.schedules.values():
            sched.on_validation(metrics["loss"])
        improved = self.best is None or metrics["loss"] < self.best
        if improved:
            self.best = metrics["loss"]
        self._log({f"valid/{k}": v for k, v in metrics.items()}, media)
        self._improved = improved
        return metrics

    # -- logging -----------------------------------------------------------------------------
    def _log(self, values: dict[str, float], media: dict[str, Any] | None = None) -> None:
        if self.rank != 0:
            return
        row = {"step": self.step, "epoch": self.epoch, **values}
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(k if "/" in k else f"train/{k}", v, self.step)
            for k, v in (media or {}).items():
                if k.startswith("audio/"):
                    wave, rate = v
                    self.writer.add_audio(k, wave.clamp(-1, 1)[None], self.step, sample_rate=rate)
                elif k.startswith("image/"):
                    self.writer.add_image(k, v, self.step)
            self.writer.flush()

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.output_dir / "checkpoints"

    def save_checkpoint(self, is_best: bool = False) -> Path | None:
        """Write ``checkpoints/step_XXXXXXXX`` atomically (rank 0); every rank's RNG is kept."""
        rngs = self.dist.all_gather(_rng_state())
        final = None
        if self.rank == 0:
            state = {
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "best": self.best,
                "num_validations": self.num_validations,
                "pending_logs": {"values": dict(self._pending), "count": self._pending_n},
                "metrics_bytes": self._metrics_bytes(),
                "stage": self.stage.name,
                "nets": {n: m.state_dict() for n, m in self.stage.nets.items()},
                "optimizers": {p: o.state_dict() for p, o in self.optimizers.items()},
                "schedules": {p: s.state_dict() for p, s in self.schedules.items()},
                "scalers": {p: s.state_dict() for p, s in self.scalers.items()},
                "rng": rngs,
            }
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            name = f"step_{self.step:08d}"
            final = self.checkpoint_dir / name
            with output_path(final, force=True, folder=True) as tmp:
                torch.save(state, tmp / "state.pt")
                torch.save(
                    {k: {n: t.detach().cpu() for n, t in v.items()} for k, v in self.stage.export().items()},
                    tmp / "parts.pt",
                )
                probe = self.stage.encoder_probe()
                if probe is not None:
                    torch.save(probe, tmp / PROBE_FILE)
            write_text(self.checkpoint_dir / "latest", name + "\n", force=True)
            if is_best:
                write_text(self.checkpoint_dir / "best", name + "\n", force=True)
            self._prune()
        self.dist.barrier()
        return final

    def _prune(self) -> None:
        keep = int(self.tcfg["keep_last"])
        if keep <= 0:
            return
        protected = set()
        for pointer in ("best", "latest"):
            p = self.checkpoint_dir / pointer
            if p.is_file():
                protected.add(p.read_text().strip())
        ckpts = sorted(p for p in self.checkpoint_dir.glob("step_*") if p.is_dir())
        for p in ckpts[:-keep]:
            if p.name not in protected:
                shutil.rmtree(p, ignore_errors=True)

    def _resume_path(self) -> Path | None:
        resume = self.tcfg["resume"]
        if resume in (None, False, "none", "no"):
            return None
        if resume == "auto":
            pointer = self.checkpoint_dir / "latest"
            if not pointer.is_file():
                return None
            path = self.checkpoint_dir / pointer.read_text().strip()
            if not (path / "state.pt").is_file():
                raise CheckpointError(
                    f"{pointer} names {path.name}, which has no state.pt: set train.resume to an intact "
                    f"checkpoint folder ({self._intact_checkpoints()}) or train.resume=none --force to start over"
                )
            return path
        path = Path(resume)
        if not (path / "state.pt").is_file():
            raise ConfigError(f"train.resume: {path} is not a checkpoint folder (no state.pt)")
        return path

    def _check_output_dir(self, force: bool) -> tuple[Path | None, list[str]]:
        """Before any work: the checkpoint to resume from, and the files of an earlier run in
        ``output_dir`` that this run replaces (only with ``force``). Resuming a run of this
        folder continues it; any other start refuses a folder that holds a run, and a run of
        another stage is refused whatever ``force`` says."""
        out = self.output_dir
        try:
            check_writable(out, folder=True)
        except OutputError as exc:
            raise OutputError(f"output_dir: {exc}") from None
        resume = self._resume_path()
        own = resume is not None and resume.resolve().parent.parent == out.resolve()
        if own:
            stage = _run_stage(out)
            if stage not in (None, self.cfg["stage"]):
                raise ConfigError(
                    f"{out} holds a run of the {stage} stage, not {self.cfg['stage']}: set output_dir to "
                    "another folder (each stage trains in its own)"
                )
            return resume, []
        found = [name for name in RUN_FILES if (out / name).exists()]
        if found and not force:
            if resume is not None:
                why = f"train.resume names {resume}, a checkpoint of another folder"
            elif self.tcfg["resume"] == "auto":
                why = "no checkpoint to resume from"
            else:
                why = f"train.resume={self.tcfg['resume']}"
            raise OutputError(
                f"{out} already holds a training run ({', '.join(found)}; {why}): continue it with "
                "train.resume=auto, set output_dir to a new folder, or add -f/--force to replace it"
            )
        return resume, found

    def _intact_checkpoints(self, but: Path | None = None) -> str:
        """The last three checkpoint folders with a state.pt (other than ``but``), for messages."""
        found = sorted(p for p in self.checkpoint_dir.glob("step_*") if (p / "state.pt").is_file() and p != but)
        return ", ".join(map(str, found[-3:])) or "none found"

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "nets" not in state:
                raise ValueError("not a training state")
        except Exception as exc:  # noqa: BLE001 - any reader failure means a damaged file
            raise CheckpointError(
                f"cannot resume: {path / 'state.pt'} is truncated or corrupt ({type(exc).__name__}); "
                f"set train.resume to an earlier checkpoint folder ({self._intact_checkpoints(path)}) "
                "or train.resume=none --force to start over"
            ) from None
        if state.get("stage") != self.stage.name:
            raise ConfigError(f"{path} is a checkpoint of stage {state.get('stage')!r}, not {self.stage.name!r}")
        try:
            for n, m in self.stage.nets.items():
                m.load_state_dict(state["nets"][n])
            for p, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][p])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(
                f"{path} does not fit this run's networks ({str(exc).splitlines()[0]}): resume it with the config "
                "it was trained with, or start over with train.resume=none --force"
            ) from None
        for p, s in self.schedules.items():
            s.load_state_dict(state["schedules"][p])
        for p, s in self.scalers.items():
            s.load_state_dict(state["scalers"][p])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best, self.num_validations = state["best"], state["num_validations"]
        self._pending = dict(state["pending_logs"]["values"])
        self._pending_n = self._pending_resumed = int(state["pending_logs"]["count"])
        rngs = state["rng"]
        _set_rng_state(rngs[self.rank % len(rngs)])
        self._resumed_metrics_bytes = state.get("metrics_bytes")

    def _metrics_bytes(self) -> int:
        path = self.output_dir / "metrics.jsonl"
        return path.stat().st_size if path.is_file() else 0

    # -- main loop ---------------------------------------------------------------------------
    def _setup_output(self) -> None:
        """Rank 0: replace an earlier run (``force``), or cut the log of the run being resumed
        back to its checkpoint (the steps after it are logged again, so none appears twice),
        then write config.yaml and open TensorBoard."""
        if self.rank != 0:
            return
        for name in self._replace:
            path = self.output_dir / name
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.output_dir / "metrics.jsonl"
        keep = self._resumed_metrics_bytes
        if keep is not None and metrics.is_file() and metrics.stat().st_size > keep:
            with open(metrics, "r+b") as fh:
                fh.truncate(keep)
        import yaml

        write_text(self.output_dir / "config.yaml", yaml.safe_dump(self.cfg, sort_keys=False), force=True)
        if self.tcfg["tensorboard"]:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                warnings.warn(
                    "tensorboard is not installed: logging to metrics.jsonl only (pip install tensorboard)",
                    stacklevel=2,
                )
            else:
                # a resumed run drops the events logged after its checkpoint
                purge = self.step + 1 if self.resume_from is not None else None
                self.writer = SummaryWriter(str(self.output_dir / "tb"), purge_step=purge)

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        for batch in self._train_loader():
            self._report_skipped(batch.pop("skipped", []))
            yield batch

    def _report_skipped(self, messages: list[str]) -> None:
        """Warn once per process about each unusable manifest entry the data passed over
        (every rank its own); rank 0 also records it in metrics.jsonl."""
        for msg in messages:
            if msg in self._skipped_seen:
                continue
            self._skipped_seen.add(msg)
            from tqdm import tqdm

            tqdm.write(f"warning: skipped a training utterance: {msg}", file=sys.stderr)
            self._log({"skipped": msg})

    def planned_steps(self) -> int:
        """The steps the run will end at: ``train.max_steps``, or fewer when ``train.max_epochs``
        epochs end first (the recipes bound stage Q by epochs; exact for fixed-size batches, an
        estimate with ``data.max_batch_seconds``). The progress bar's total."""
        accum = max(1, int(self.tcfg["grad_accum"]))
        batches = len(self.train_sampler._batches())  # this rank's batches of one epoch
        per_epoch = max(1, math.ceil(batches / accum))
        return min(int(self.tcfg["max_steps"]), int(self.tcfg["max_epochs"]) * per_epoch)

    def fit(self) -> dict[str, float]:
        # the checkpoint is read before anything is written: a run that cannot resume leaves
        # the folder as it was
        max_steps, max_epochs = int(self.tcfg["max_steps"]), int(self.tcfg["max_epochs"])
        if self.resume_from is not None:
            self.load_checkpoint(self.resume_from)
            if self.step >= max_steps or self.epoch >= max_epochs:
                raise ConfigError(
                    f"the run in {self.output_dir} has already ended (step {self.step}, {self.epoch} epochs; "
                    f"train.max_steps={max_steps}, train.max_epochs={max_epochs}): raise train.max_steps or "
                    "train.max_epochs to train it further, or export it with `focalcodec train --export`"
                )
        self._setup_output()
        accum = max(1, int(self.tcfg["grad_accum"]))
        log_every, valid_every, ckpt_every = (
            int(self.tcfg["log_every"]),
            int(self.tcfg["valid_every"]),
            int(self.tcfg["ckpt_every"]),
        )
        pbar = None
        if self.rank == 0 and self.tcfg["progress"]:
            from tqdm import tqdm

            pbar = tqdm(total=self.planned_steps(), initial=self.step, desc=f"{self.stage.name}", dynamic_ncols=True)
        if self.tcfg["validate_first"] and self.step == 0:
            self.validate()
        t0 = time.perf_counter()
        try:
            while self.step < max_steps and self.epoch < max_epochs:
                it = self._batches()
                epoch_done = False
                while self.step < max_steps:
                    micro = []
                    for _ in range(accum):
                        b = next(it, None)
                        if b is None:
                            epoch_done = True
                            break
                        micro.append(b)
                    if not micro:
                        break
                    self.batch_in_epoch += len(micro)
                    logs = self.train_step(micro)
                    self.step += 1
                    for s in self.schedules.values():
                        s.on_step()
                    for k, v in logs.items():
                        self._pending[k] = self._pending.get(k, 0.0) + v
                    self._pending_n += 1
                    if pbar is not None:
                        pbar.update(1)
                        main = logs.get("loss", logs.get("loss_generator", 0.0))
                        pbar.set_postfix(loss=f"{main:.4g}", epoch=self.epoch)
                    if log_every > 0 and self.step % log_every == 0:
                        mean = self._all_reduce_mean({k: v / self._pending_n for k, v in self._pending.items()})
                        mean["sec_per_step"] = (time.perf_counter() - t0) / max(
                            self._pending_n - self._pending_resumed, 1
                        )
                        self._log(mean)
                        self.last_logs = mean
                        self._pending, self._pending_n, self._pending_resumed = {}, 0, 0
                        t0 = time.perf_counter()
                    self._improved = False
                    if valid_every > 0 and self.step % valid_every == 0:
                        self.validate()
                    if (ckpt_every > 0 and self.step % ckpt_every == 0) or self._improved:
                        self.save_checkpoint(self._improved)
                    if epoch_done:
                        break
                if self.step >= max_steps and not epoch_done:
                    break
                # end of epoch
                self.epoch += 1
                self.batch_in_epoch = 0
                for s in self.schedules.values():
                    s.on_epoch_end(self.epoch)
                self._improved = False
                if valid_every == 0:
                    self.validate()
                    if self._improved or ckpt_every == 0:
                        self.save_checkpoint(self._improved)
            self.save_checkpoint(False)
        finally:
            if pbar is not None:
                pbar.close()
            if self.writer is not None:
                self.writer.close()
        return self.last_logs

    def close(self) -> None:
        self.dist.close()


def train(cfg: dict[str, Any], force: bool = False) -> dict[str, float]:
    """Build a :class:`Trainer` from a resolved config, train, clean up (``force``: replace
    the run already in ``output_dir``)."""
    trainer = Trainer(cfg, force)
    try:
        return trainer.fit()
    finally:
        trainer.close()
