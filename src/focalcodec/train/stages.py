"""The training stages of SPEC §4, one class each, all driven by :class:`~.trainer.Trainer`.

============== ============================================ =====================================
stage          trains                                       loss
============== ============================================ =====================================
quantizer      compressor + BSQ + decompressor on frozen    masked MSE to the input features
               encoder features (§4.2; also §4.4 step 4     + 0.1 x BSQ entropy loss
               on the causal student's features)
decoder        Vocos (16 kHz) or WaveNeXt (24 kHz targets)  hinge adversarial + 54 x feature
               from continuous encoder features, against    matching + 45 x log-mel L1 (D first,
               MPD + MSD (§4.3, §4.4 step 1)                then G against a fixed D)
pos_conv       a causal positional conv, distilled from     masked MSE to the teacher's
               the non-causal one (§4.4 step 2)             positional-conv output
encoder        causal encoder from the non-causal one,      mean over the layers of w_l x MSE
               positional conv and relative bias frozen     of every layer output (w = 0.5, 0.6,
               (§4.4 step 3)                                ..., 1.0)
joint          causal encoder (positional conv and          masked MSE to the non-causal
               relative bias frozen) + compressor +         teacher's features + 0.1 x entropy
               decompressor with the refiner (§4.4 step 5)
============== ============================================ =====================================

Loss weights and the other ``loss``/``discriminator`` options come resolved from
:func:`~.config.load_train_config` (their defaults, the recipes' values, are in
:data:`~.config.STAGE_OPTIONS`).

A stage owns its networks (``nets``: trained, wrapped in DistributedDataParallel by the
trainer; ``frozen``: teachers and frozen encoders), names its optimisation ``phases`` (one
optimiser each), computes losses for a batch, validation sums and media, and exports its
trained parts under the codec's stage names (``encoder``, ``compressor``, ``decompressor``,
``decoder``) for :func:`~.export.export_checkpoint`.

Batches come from :func:`~.data.collate`: ``sig (B, N)`` at 16 kHz with ``sig_lengths``;
optionally ``target (B, M)`` at the decoder's output rate, ``feats (B, T, C)`` cached
encoder features, and ``crop (B,)`` uniform numbers that choose crop positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FocalCodecConfig
from ..errors import CheckpointError, ConfigError, HubError
from ..nn import BinarySphericalQuantizer, WavLM
from ..nn.layers import time_mask, zero_padded_frames
from .config import RANDOM, load_train_config
from .discriminators import CombinedDiscriminator
from .losses import (
    MelSpectrogram,
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    layer_weighted_mse,
    masked_mse,
    mel_l1,
)
from .probe import encoder_probe

__all__ = ["STAGES", "QuantizerPipeline", "Stage", "StepContext", "build_stage", "load_part_state"]

PARTS = ("encoder", "compressor", "decompressor", "decoder")


# --------------------------------------------------------------------------------------------
# weights of one codec part from a run, a codec checkpoint or Hugging Face WavLM
# --------------------------------------------------------------------------------------------
def load_part_state(
    source: str, part: str, num_layers: int | None = None, checkpoint: str = "auto"
) -> dict[str, Tensor]:
    """State dict of codec part ``part`` from ``source``:

    - ``hf-wavlm:DIR_OR_REPO`` (encoder only): Hugging Face WavLM weights, first
      ``num_layers`` layers (see :mod:`.wavlm_init`);
    - a training run folder (``OUTPUT_DIR`` with ``checkpoints/``): that stage's exported
      parts from the checkpoint chosen by ``checkpoint`` (see :func:`run_checkpoint`), or one
      checkpoint folder (with ``parts.pt``);
    - anything :meth:`FocalCodec.from_pretrained` accepts (a codec folder, preset or repo).
    """
    if part not in PARTS:
        raise ConfigError(f"unknown codec part {part!r}; parts are {', '.join(PARTS)}")
    if source.startswith("hf-wavlm:"):
        if part != "encoder":
            raise ConfigError("hf-wavlm: sources only initialise the encoder")
        from .wavlm_init import _read_hf_weights, convert_hf_wavlm_state_dict, hf_wavlm_folder

        path = hf_wavlm_folder(source[len("hf-wavlm:") :])
        return convert_hf_wavlm_state_dict(_read_hf_weights(path), num_layers or 6)
    ckpt = run_checkpoint(Path(source), checkpoint)
    if ckpt is not None:
        parts = read_parts(ckpt)
        if part not in parts:
            raise CheckpointError(f"{ckpt} holds the parts {', '.join(parts)}, not {part!r}")
        return parts[part]
    from ..codec import FocalCodec

    model = FocalCodec.from_pretrained(source)
    return getattr(model, part).state_dict()


def read_parts(ckpt: Path) -> dict[str, dict[str, Tensor]]:
    """The ``parts.pt`` of a checkpoint folder (a :class:`CheckpointError` naming the file
    when it is truncated or corrupt)."""
    try:
        return torch.load(ckpt / "parts.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any reader failure means a damaged file
        raise CheckpointError(
            f"cannot read {ckpt / 'parts.pt'} (truncated or corrupt: {exc}); use another checkpoint of the "
            f"run (a checkpoints/step_XXXXXXXX folder) as the source"
        ) from None


def _run_stage(run: Path) -> str | None:
    """The stage a run folder trained (from its ``config.yaml``), if known."""
    cfg = run / "config.yaml"
    if not cfg.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return data.get("stage") if isinstance(data, dict) else None


def run_checkpoint(path: Path, which: str = "auto") -> Path | None:
    """The checkpoint folder that ``path`` names: ``path`` itself if it holds ``parts.pt``;
    for a run folder, its ``best`` (lowest validation loss) or ``latest`` checkpoint. ``auto``
    follows the authors' recipes: ``latest`` for decoder runs (the recipe keeps the last
    epoch), ``best`` for every other stage (the recipe keeps the best validation loss; the
    latest when the run was never validated). None when ``path`` is not a run."""
    if which not in ("auto", "best", "latest"):
        raise ConfigError(f"checkpoint choice must be auto, best or latest, not {which!r}")
    if (path / "parts.pt").is_file():
        return path
    ckpts = path / "checkpoints"
    if which == "auto":
        which = "latest" if _run_stage(path) == "decoder" else "best"
    for pointer in ("best", "latest") if which == "best" else ("latest",):
        if (ckpts / pointer).is_file():
            name = (ckpts / pointer).read_text().strip()
            if (ckpts / name / "parts.pt").is_file():
                return ckpts / name
    return None


def load_part(
    module: nn.Module, source: str, part: str, allow_missing: Sequence[str] = (), checkpoint: str = "auto"
) -> None:
    """Load ``part`` from ``source`` into ``module``; missing keys are an error unless they
    start with one of ``allow_missing`` (e.g. the refiner, new in the joint stage)."""
    num_layers = len(module.encoder.layers) if isinstance(module, WavLM) else None
    state = load_part_state(source, part, num_layers, checkpoint)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not any(k.startswith(p) for p in allow_missing)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} (here {tuple(expected[k].shape)})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"the {part} weights of {source} do not fit this architecture (is it the same model?): "
            f"missing {missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {shapes[:3]}"
        )
    module.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
class StepContext:
    """What a stage sees of the trainer: the (possibly DDP-wrapped) ``nets``, the device and
    ``no_sync(name)``, a context that suspends gradient synchronisation of one net."""

    def __init__(
        self, nets: dict[str, nn.Module], device: torch.device, no_sync: Callable[[str], ContextManager]
    ) -> None:
        self.nets = nets
        self.device = device
        self.no_sync = no_sync


class QuantizerPipeline(nn.Module):
    """Compressor -> L2 norm -> BSQ (straight-through) -> decompressor.

    ``forward(feats (B, T, C), lengths (B,) | None) -> (qfeats (B, T'', C), QuantizerOutput,
    token lengths (B,) | None)``.
    """

    def __init__(
        self,
        compressor: nn.Module,
        quantizer: BinarySphericalQuantizer,
        decompressor: nn.Module,
        inv_temperature: float = 100.0,
        diversity_gamma: float = 1.0,
    ) -> None:
        super().__init__()
        self.compressor = compressor
        self.quantizer = quantizer
        self.decompressor = decompressor
        self.inv_temperature = inv_temperature
        self.diversity_gamma = diversity_gamma

    def forward(self, feats: Tensor, lengths: Tensor | None = None):
        raw = self.compressor(feats, lengths=lengths)
        lats = F.normalize(raw.float(), dim=-1)
        tok_lengths = None if lengths is None else self.compressor.num_frames(lengths)
        mask = None if tok_lengths is None else time_mask(tok_lengths, lats.shape[1])
        q = self.quantizer.quantize_with_losses(lats, mask, self.inv_temperature, self.diversity_gamma)
        qfeats = self.decompressor(q.codes, lengths=tok_lengths)
        return qfeats, q, tok_lengths


def _token_stats(hist: Tensor, dim: int) -> dict[str, float]:
    """Code usage (fraction of codes used) and normalised entropy of a token histogram."""
    total = float(hist.sum())
    if total <= 0:
        return {"code_usage": 0.0, "normalized_entropy": 0.0}
    p = hist.double() / total
    ent = float(-(p[p > 0] * p[p > 0].log()).sum())
    return {"code_usage": float((hist > 0).sum()) / hist.numel(), "normalized_entropy": ent / (dim * math.log(2))}


def _encoder_features(encoder: WavLM, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Frozen features of a batch: ``(B, T, C)`` and valid frames ``(B,)`` (cached ones when
    the batch has them)."""
    if "feats" in batch:
        return batch["feats"], batch["feat_lengths"]
    lengths = encoder.num_frames(batch["sig_lengths"])
    with torch.no_grad():
        feats = encoder(batch["sig"], frame_lengths=lengths)
    return feats.float(), lengths


def _layer_outputs(encoder: nn.Module, raw: WavLM, sig: Tensor, frame_lengths: Tensor) -> list[Tensor]:
    """Every transformer layer's output ``[(B, T, C)] * num_layers`` (forward hooks on
    ``raw``, the unwrapped ``encoder``)."""
    outputs: list[Tensor] = []
    hooks = [layer.register_forward_hook(lambda m, i, o: outputs.append(o)) for layer in raw.encoder.layers]
    try:
        encoder(sig, frame_lengths=frame_lengths)
    finally:
        for h in hooks:
            h.remove()
    return outputs


def _encoder_front(encoder: WavLM, sig: Tensor, frame_lengths: Tensor) -> Tensor:
    """The encoder's input to the positional conv: ``(B, N) -> (B, T, C)``, padding zeroed."""
    x = encoder.feature_extractor(sig)
    x = encoder.feature_proj(encoder.norm(x))
    return zero_padded_frames(x, frame_lengths)


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def _freeze_position(encoder: WavLM) -> WavLM:
    """Freeze the positional conv and the relative-position embedding of a causal student
    (the encoder-distillation and joint steps train neither, as in the recipe)."""
    for module in (encoder.encoder.positional_embedding, encoder.encoder.relative_embedding):
        module.requires_grad_(False)
    return encoder


def _mel_image(mel: Tensor) -> Tensor:
    """``(n_mels, frames)`` log-mel -> ``(1, n_mels, frames)`` image in [0, 1], low bins at the bottom."""
    m = mel.detach().float().cpu().flip(0)
    return ((m - m.min()) / (m.max() - m.min()).clamp(min=1e-6))[None]


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------
class Stage:
    """Base class; see the module docstring."""

    name = ""
    phases: dict[str, list[str]] = {"model": []}

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.codec_config = FocalCodecConfig.load(cfg["model"]).with_overrides(cfg.get("model_overrides") or {})
        self.init = cfg.get("init") or {}
        self.loss_cfg = cfg["loss"]  # every option resolved by load_train_config
        self.nets: dict[str, nn.Module] = {}
        self.frozen: dict[str, nn.Module] = {}
        self._probe: dict[str, Any] | None = None

    # construction helpers
    def _load_init(self, module: nn.Module, key: str, part: str, allow_missing: Sequence[str] = ()) -> None:
        """Fill ``module`` from ``init.<key>`` (nothing for ``random`` or an unset optional
        source); errors name the setting."""
        source = self.init.get(key)
        if not source or source == RANDOM:
            return
        try:
            load_part(module, str(source), part, allow_missing)
        except (CheckpointError, ConfigError, HubError) as exc:
            hint = ""
            if isinstance(exc, HubError):
                hint = f"; or point init.{key} at a local copy (hf-wavlm:DIR for WavLM, a codec folder otherwise)"
            raise type(exc)(f"init.{key} = {source}: {exc}{hint}") from None

    def _part(self, part: str, allow_missing: Sequence[str] = (), **overrides: Any) -> nn.Module:
        if overrides:
            cfg = self.codec_config.with_overrides({f"{part}_config.{k}": v for k, v in overrides.items()})
        else:
            cfg = self.codec_config
        module = cfg.build(part)
        self._load_init(module, part, part, allow_missing)
        return module

    def _teacher(self) -> WavLM:
        teacher = self.codec_config.with_overrides({"encoder_config.causal": False}).build("encoder")
        self._load_init(teacher, "teacher", "encoder")
        return _freeze(teacher)

    def _pipeline(self, compressor: nn.Module, decompressor: nn.Module) -> QuantizerPipeline:
        return QuantizerPipeline(
            compressor,
            self.codec_config.build("quantizer"),
            decompressor,
            float(self.loss_cfg["inv_temperature"]),
            float(self.loss_cfg["diversity_gamma"]),
        )

    # interface
    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Losses of one micro-batch for ``phase``; ``"loss"`` is back-propagated."""
        raise NotImplementedError

    def validate(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        """Sums over one validation batch (summed over batches and ranks), incl. ``count``."""
        with torch.no_grad():
            losses = self.compute("model", batch, ctx)
        n = torch.tensor(float(batch["sig"].shape[0]))
        return {**{k: v.detach().float().cpu() * n for k, v in losses.items()}, "count": n}

    def summarize(self, sums: dict[str, Tensor]) -> dict[str, float]:
        """Validation metrics from the summed values; must hold ``"loss"``."""
        n = float(sums.pop("count"))
        return {k: float(v) / max(n, 1.0) for k, v in sums.items() if v.numel() == 1}

    def media(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Any]:
        """``{"audio/NAME": (wave (N,), rate), "image/NAME": (1, H, W)}`` for TensorBoard."""
        return {}

    def export(self) -> dict[str, dict[str, Tensor]]:
        """Trained codec parts ``{part: state_dict}``."""
        raise NotImplementedError

    def encoder_probe(self) -> dict[str, Any] | None:
        """What the checkpoint records about the encoder whose features the exported
        compressor/decompressor or decoder were trained on (see :mod:`.probe`); None for
        stages that export only an encoder. Computed once for a frozen encoder."""
        return None

    def _frozen_encoder_probe(self, parts: Sequence[str]) -> dict[str, Any]:
        if self._probe is None:
            source = str(self.init.get("encoder") or RANDOM)
            self._probe = encoder_probe(self.frozen["encoder"], parts, self.name, source, f"init.encoder={source}")
        return self._probe


class QuantizerStage(Stage):
    """SPEC §4.2 (and §4.4 step 4 with a causal config and the distilled encoder)."""

    name = "quantizer"
    phases = {"model": ["pipeline"]}

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen["encoder"] = _freeze(self._part("encoder"))
        self.nets["pipeline"] = self._pipeline(
            self._part("compressor"), self._part("decompressor", allow_missing=("refiner.",))
        )
        self.entropy_weight = float(self.loss_cfg["entropy_weight"])

    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        feats, lengths = _encoder_features(self.frozen["encoder"], batch)
        qfeats, q, tok_lengths = ctx.nets["pipeline"](feats, lengths)
        mse = masked_mse(qfeats, feats, lengths)
        loss = mse + self.entropy_weight * q.entropy_loss
        out = {"loss": loss, "mse": mse.detach(), "entropy": q.entropy_loss.detach(), **q.stats}
        valid = q.toks if tok_lengths is None else q.toks[time_mask(tok_lengths, q.toks.shape[1])]
        out["batch_code_usage"] = torch.tensor(
            float(valid.unique().numel()) / self.nets["pipeline"].quantizer.codebook_size
        )
        batch["_toks"] = valid
        return out

    def validate(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        sums = super().validate(batch, ctx)
        q = self.nets["pipeline"].quantizer
        sums["token_histogram"] = torch.bincount(batch.pop("_toks").cpu(), minlength=q.codebook_size).double()
        return sums

    def summarize(self, sums: dict[str, Tensor]) -> dict[str, float]:
        hist = sums.pop("token_histogram")
        out = super().summarize(sums)
        out.update(_token_stats(hist, self.nets["pipeline"].quantizer.dim))
        return out

    def export(self) -> dict[str, dict[str, Tensor]]:
        p = self.nets["pipeline"]
        return {"compressor": p.compressor.state_dict(), "decompressor": p.decompressor.state_dict()}

    def encoder_probe(self) -> dict[str, Any]:
        return self._frozen_encoder_probe(("compressor", "decompressor"))


class DecoderStage(Stage):
    """SPEC §4.3 / §4.4 step 1: GAN vocoder training on cropped continuous features."""

    name = "decoder"
    phases = {"discriminator": ["discriminator"], "generator": ["generator"]}

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen["encoder"] = _freeze(self._part("encoder", causal=False))
        self.nets["generator"] = self._part("decoder")
        d = cfg["discriminator"]
        self.nets["discriminator"] = CombinedDiscriminator(
            tuple(int(x) for x in d["periods"]), int(d["num_scales"]), float(d["width"])
        )
        self.hop = int(self.nets["generator"].upsample_factor)
        self.sample_rate = 16000 * self.hop // int(self.frozen["encoder"].downsample_factor)
        self.crop_frames = int(cfg["data"]["crop_frames"])
        mel = dict(self.loss_cfg["mel"])
        if mel["hop_length"] is None:
            mel["hop_length"] = self.hop
        if mel["f_max"] is None:
            mel["f_max"] = self.sample_rate / 2
        self.mel = MelSpectrogram(sample_rate=self.sample_rate, **mel)
        self.w_adv = float(self.loss_cfg["adv_weight"])
        self.w_fm = float(self.loss_cfg["fm_weight"])
        self.w_mel = float(self.loss_cfg["mel_weight"])

    def _target(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if "target" in batch:
            return batch["target"], batch["target_lengths"]
        if self.sample_rate != 16000:
            raise ConfigError(
                f"the decoder outputs {self.sample_rate} Hz: set data.target_sample_rate: {self.sample_rate}"
            )
        return batch["sig"], batch["sig_lengths"]

    def _crops(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Aligned random crops: feats ``(B, F, C)`` and target ``(B, F * hop)`` (memoised in
        the batch so that both phases see the same crop)."""
        if "_crop_feats" not in batch:
            feats, lengths = _encoder_features(self.frozen["encoder"], batch)
            target, target_lengths = self._target(batch)
            Fr, hop = self.crop_frames, self.hop
            fs, ts = [], []
            for b in range(feats.shape[0]):
                valid = int(min(int(lengths[b]), int(target_lengths[b]) // hop))
                start = int(float(batch["crop"][b]) * max(valid - Fr + 1, 1))
                f = feats[b, start : start + Fr]
                t = target[b, start * hop : (start + Fr) * hop]
                fs.append(F.pad(f, (0, 0, 0, Fr - f.shape[0])))
                ts.append(F.pad(t, (0, Fr * hop - t.shape[0])))
            batch["_crop_feats"], batch["_crop_target"] = torch.stack(fs), torch.stack(ts)
        return batch["_crop_feats"], batch["_crop_target"]

    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        feats, real = self._crops(batch)
        G, D = ctx.nets["generator"], ctx.nets["discriminator"]
        if phase == "discriminator":
            with torch.no_grad():
                fake = G(feats)
            real_scores, _ = D(real)
            fake_scores, _ = D(fake.detach())
            loss = discriminator_hinge_loss(real_scores, fake_scores)
            return {"loss": loss, "d_loss": loss.detach()}
        fake = G(feats)
        # The generator's losses see the discriminator as a fixed function (as the recipe
        # does): no gradient reaches its weights, no DDP hooks or synchronisation fire.
        D_raw = self.nets["discriminator"]
        D_raw.requires_grad_(False)
        try:
            fake_scores, fake_maps = D_raw(fake)
            with torch.no_grad():
                _, real_maps = D_raw(real)
        finally:
            D_raw.requires_grad_(True)
        adv = generator_hinge_loss(fake_scores)
        fm = feature_matching_loss(real_maps, fake_maps)
        mel = mel_l1(self.mel.to(fake.device), fake.float(), real.float())
        loss = self.w_adv * adv + self.w_fm * fm + self.w_mel * mel
        return {"loss": loss, "g_adv": adv.detach(), "g_fm": fm.detach(), "mel_l1": mel.detach()}

    def _full(self, batch: dict[str, Tensor], ctx: StepContext) -> tuple[Tensor, Tensor, Tensor]:
        feats, lengths = _encoder_features(self.frozen["encoder"], batch)
        target, target_lengths = self._target(batch)
        fake = ctx.nets["generator"](feats, lengths=lengths)
        return fake.float(), target, torch.minimum(lengths * self.hop, target_lengths)

    def validate(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        with torch.no_grad():
            fake, target, lengths = self._full(batch, ctx)
            mel = self.mel.to(fake.device)
            total = sum(
                float(mel_l1(mel, fake[b : b + 1, : int(n)], target[b : b + 1, : int(n)]))
                for b, n in enumerate(lengths)
            )
        n = float(len(lengths))
        return {"loss": torch.tensor(total), "mel_l1": torch.tensor(total), "count": torch.tensor(n)}

    def media(self, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Any]:
        with torch.no_grad():
            fake, target, lengths = self._full(batch, ctx)
        n = int(lengths[0])
        mel = self.mel.to(fake.device)
        return {
            "audio/reconstruction": (fake[0, :n].cpu(), self.sample_rate),
            "audio/original": (target[0, :n].float().cpu(), self.sample_rate),
            "image/mel_reconstruction": _mel_image(mel(fake[:1, :n])[0]),
            "image/mel_original": _mel_image(mel(target[:1, :n].float())[0]),
        }

    def export(self) -> dict[str, dict[str, Tensor]]:
        return {"decoder": self.nets["generator"].state_dict()}

    def encoder_probe(self) -> dict[str, Any]:
        return self._frozen_encoder_probe(("decoder",))


class PosConvStage(Stage):
    """SPEC §4.4 step 2: causal positional conv distilled from the non-causal one."""

    name = "pos_conv"
    phases = {"model": ["pos_conv"]}

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen["teacher"] = self._teacher()
        student = self.codec_config.with_overrides({"encoder_config.causal": True}).build("encoder")
        student.load_state_dict(self.frozen["teacher"].state_dict())
        self.student = student
        self.nets["pos_conv"] = student.encoder.positional_embedding
        for p in self.nets["pos_conv"].parameters():
            p.requires_grad_(True)

    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        teacher = self.frozen["teacher"]
        lengths = teacher.num_frames(batch["sig_lengths"])
        with torch.no_grad():
            x = _encoder_front(teacher, batch["sig"], lengths)
            target = teacher.encoder.positional_embedding(x)
        pred = ctx.nets["pos_conv"](x)
        loss = masked_mse(pred, target, lengths)
        return {"loss": loss, "mse": loss.detach()}

    def export(self) -> dict[str, dict[str, Tensor]]:
        return {"encoder": self.student.state_dict()}


class EncoderDistillStage(Stage):
    """SPEC §4.4 step 3: causal encoder distilled on all layer outputs."""

    name = "encoder"
    phases = {"model": ["encoder"]}

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen["teacher"] = self._teacher()
        student = _freeze_position(self._part("encoder", causal=True))
        self.nets["encoder"] = student
        n = len(student.encoder.layers)
        weights = self.loss_cfg["layer_weights"]
        if weights is None:  # the recipe's 0.5, 0.6, ..., 1.0 for 6 layers
            weights = [round(0.5 + 0.5 * i / max(n - 1, 1), 3) for i in range(n)]
        self.weights = [float(w) for w in weights]
        if len(self.weights) != n:
            raise ConfigError(f"loss.layer_weights has {len(self.weights)} entries for {n} encoder layers")

    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        teacher = self.frozen["teacher"]
        t_lengths = teacher.num_frames(batch["sig_lengths"])
        s_raw: WavLM = self.nets["encoder"]
        s_lengths = s_raw.num_frames(batch["sig_lengths"])
        with torch.no_grad():
            targets = _layer_outputs(teacher, teacher, batch["sig"], t_lengths)
        preds = _layer_outputs(ctx.nets["encoder"], s_raw, batch["sig"], s_lengths)
        lengths = torch.minimum(t_lengths, s_lengths)
        loss = layer_weighted_mse(preds, targets, self.weights, lengths)
        out = {"loss": loss}
        out["last_layer_mse"] = masked_mse(preds[-1], targets[-1], lengths).detach()
        return out

    def export(self) -> dict[str, dict[str, Tensor]]:
        return {"encoder": self.nets["encoder"].state_dict()}


class JointStage(Stage):
    """SPEC §4.4 step 5: causal encoder + quantiser pipeline with the refiner, against the
    non-causal teacher's features."""

    name = "joint"
    phases = {"model": ["encoder", "pipeline"]}

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        self.frozen["teacher"] = self._teacher()
        self.nets["encoder"] = _freeze_position(self._part("encoder", causal=True))
        self.nets["pipeline"] = self._pipeline(
            self._part("compressor"), self._part("decompressor", allow_missing=("refiner.",))
        )
        self.entropy_weight = float(self.loss_cfg["entropy_weight"])

    def compute(self, phase: str, batch: dict[str, Tensor], ctx: StepContext) -> dict[str, Tensor]:
        teacher = self.frozen["teacher"]
        t_lengths = teacher.num_frames(batch["sig_lengths"])
        with torch.no_grad():
            target = teacher(batch["sig"], frame_lengths=t_lengths)
        s_lengths = self.nets["encoder"].num_frames(batch["sig_lengths"])
        feats = ctx.nets["encoder"](batch["sig"], frame_lengths=s_lengths)
        qfeats, q, _ = ctx.nets["pipeline"](feats, s_lengths)
        lengths = torch.minimum(t_lengths, s_lengths)
        mse = masked_mse(qfeats, target, lengths)
        loss = mse + self.entropy_weight * q.entropy_loss
        return {"loss": loss, "mse": mse.detach(), "entropy": q.entropy_loss.detach(), **q.stats}

    def export(self) -> dict[str, dict[str, Tensor]]:
        p = self.nets["pipeline"]
        return {
            "encoder": self.nets["encoder"].state_dict(),
            "compressor": p.compressor.state_dict(),
            "decompressor": p.decompressor.state_dict(),
        }

    def encoder_probe(self) -> dict[str, Any]:
        # the compressor is trained on this run's own (trained) encoder, exported with it
        out = str(self.cfg["output_dir"])
        return encoder_probe(
            self.nets["encoder"], ("compressor", "decompressor"), self.name, out, f"the encoder of {out}"
        )


STAGES = {s.name: s for s in (QuantizerStage, DecoderStage, PosConvStage, EncoderDistillStage, JointStage)}


def build_stage(cfg: dict[str, Any]) -> Stage:
    """The stage named by ``cfg["stage"]`` (the config is resolved and validated first)."""
    cfg = load_train_config(cfg)
    return STAGES[cfg["stage"]](cfg)
