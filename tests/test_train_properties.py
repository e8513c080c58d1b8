"""Properties of the training stages that a broken trainer violates even when its losses still
fall: the decompressor gets hard codes with a straight-through gradient, the adversarial
term alone moves the generator, the discriminator loss is non-zero and trains the
discriminator, the entropy term raises code usage, audio and feature crops are aligned, the
losses are composed with the recipe's weights, frozen parts stay bit-identical through a
step, and the LR rules act as the recipes' schedulers do.

Every check runs on real speech (../shared/speech/train) with the tiny fixture architectures.
tools/planted_faults.py plants a fault for each property and shows that these tests fail.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES, SPEECH

from focalcodec.train.config import load_train_config
from focalcodec.train.data import AudioDataset, collate
from focalcodec.train.losses import masked_mse
from focalcodec.train.stages import StepContext, build_stage

TINY = str(FIXTURES / "tiny_50hz")
TINY_CAUSAL = str(FIXTURES / "tiny_causal_4k")
STAGE_Q = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}
STAGE_D = {
    "stage": "decoder",
    "model": TINY,
    "init": {"encoder": TINY},
    "discriminator": {"width": 0.05},
    "data": {"crop_frames": 16},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def _entries(count: int, skip: int = 0) -> list[dict]:
    rows = (SPEECH / "train" / "manifest.tsv").read_text().splitlines()[1:]
    rows = sorted(rows, key=lambda r: float(r.split("\t")[4]))[skip : skip + count]
    return [{"path": str(SPEECH / r.split("\t")[0]), "duration": float(r.split("\t")[4])} for r in rows]


def _batch(count: int = 2, seconds: float | None = 1.0, target_rate: int | None = None, crop: float = 0.5) -> dict:
    """A collated batch of real speech (``seconds`` segments, or whole utterances)."""
    dataset = AudioDataset(_entries(count), 16000, target_rate, seed=3, segment_seconds=seconds)
    batch = collate([dataset[i] for i in range(count)])
    batch.pop("skipped")
    batch["crop"] = torch.full((count,), crop, dtype=torch.float64)
    return batch


def _stage(recipe: dict, *overrides: str):
    stage = build_stage(load_train_config(recipe, list(overrides)))
    return stage, StepContext(stage.nets, torch.device("cpu"), None)


# -- stage Q -------------------------------------------------------------------------------------
def test_decompressor_gets_hard_codes_with_a_straight_through_gradient():
    torch.manual_seed(0)
    stage, ctx = _stage(STAGE_Q)
    pipeline = stage.nets["pipeline"]
    seen = {}
    hook = pipeline.decompressor.register_forward_pre_hook(
        lambda m, args, kw: seen.update(codes=args[0]), with_kwargs=True
    )
    batch = _batch()
    from focalcodec.train.stages import _encoder_features

    feats, lengths = _encoder_features(stage.frozen["encoder"], batch)
    qfeats, q, _ = pipeline(feats, lengths)
    hook.remove()
    codes = seen["codes"]
    dim = pipeline.quantizer.dim
    # forward: exactly the binary codes of the normalised compressor output
    # (lats + (codes - lats).detach() rounds within 1e-7 of the codes; latents differ by ~0.1)
    torch.testing.assert_close(codes.detach().abs(), torch.full_like(codes, 1 / math.sqrt(dim)), rtol=0, atol=1e-6)
    with torch.no_grad():
        raw = pipeline.compressor(feats, lengths=lengths)
        expected = pipeline.quantizer.lats_to_codes(F.normalize(raw.float(), dim=-1))
    torch.testing.assert_close(codes.detach(), expected, rtol=0, atol=1e-6)
    assert torch.equal(q.toks, pipeline.quantizer.lats_to_toks(F.normalize(raw.float(), dim=-1)))
    # backward: the reconstruction error alone reaches every compressor weight, through the codes
    codes.retain_grad()
    masked_mse(qfeats, feats, lengths).backward()
    grads = [p.grad for p in pipeline.compressor.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert float(codes.grad.abs().sum()) > 0


def test_stage_q_loss_is_mse_plus_weighted_entropy():
    stage, ctx = _stage(STAGE_Q)
    out = stage.compute("model", _batch(), ctx)
    assert stage.entropy_weight == 0.1  # SPEC §4.2, the recipe's entropy_loss_weight
    torch.testing.assert_close(out["loss"], out["mse"] + 0.1 * out["entropy"], rtol=0, atol=1e-6)
    assert float(out["entropy"]) != 0


def _code_usage_after_training(*overrides: str, steps: int = 6) -> tuple[int, float]:
    """Train compressor + decompressor on a fixed batch; distinct codes on that batch and the
    soft codebook entropy after ``steps`` AdamW steps."""
    torch.manual_seed(0)
    stage, ctx = _stage(STAGE_Q, *overrides)
    batch = _batch(2)
    opt = torch.optim.AdamW(stage.nets["pipeline"].parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        stage.compute("model", batch, ctx)["loss"].backward()
        opt.step()
    with torch.no_grad():
        out = stage.compute("model", batch, ctx)
    return int(batch["_toks"].unique().numel()), float(out["codebook_entropy"])


def test_entropy_loss_raises_code_usage():
    """The same start, data and steps, with and without the entropy term (at the recipe's
    weight 0.1): with it the batch uses far more codes."""
    with_entropy, h_with = _code_usage_after_training()
    without, h_without = _code_usage_after_training("loss.entropy_weight=0")
    assert with_entropy >= 3 * without, (with_entropy, without)
    assert h_with > h_without + 1.0, (h_with, h_without)


# -- stage D -------------------------------------------------------------------------------------
def test_stage_d_loss_uses_the_recipe_weights():
    stage, ctx = _stage(STAGE_D)
    assert (stage.w_adv, stage.w_fm, stage.w_mel) == (1.0, 54.0, 45.0)  # SPEC §4.3, the recipe
    out = stage.compute("generator", _batch(), ctx)
    expected = out["g_adv"] + 54.0 * out["g_fm"] + 45.0 * out["mel_l1"]
    torch.testing.assert_close(out["loss"].detach(), expected, rtol=1e-6, atol=1e-5)
    assert float(out["g_fm"]) > 0 and float(out["mel_l1"]) > 0


def test_adversarial_loss_alone_moves_the_generator():
    torch.manual_seed(0)
    stage, ctx = _stage(STAGE_D, "loss.fm_weight=0", "loss.mel_weight=0")
    G, D = stage.nets["generator"], stage.nets["discriminator"]
    before = [p.detach().clone() for p in G.parameters()]
    out = stage.compute("generator", _batch(), ctx)
    assert float(out["g_adv"]) > 0
    out["loss"].backward()
    grads = [p.grad for p in G.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in D.parameters())  # the generator step never trains D
    torch.optim.AdamW(G.parameters(), lr=1e-3).step()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, G.parameters(), strict=True))
    assert changed == len(before)


def test_discriminator_loss_is_positive_and_trains_the_discriminator():
    torch.manual_seed(0)
    stage, ctx = _stage(STAGE_D)
    G, D = stage.nets["generator"], stage.nets["discriminator"]
    batch = _batch()
    opt = torch.optim.AdamW(D.parameters(), lr=5e-3)

    def margin() -> float:
        real, fake = stage._crops(batch)[1], G(stage._crops(batch)[0])
        with torch.no_grad():
            r, _ = D(real)
            f, _ = D(fake)
        return float(sum(a.mean() - b.mean() for a, b in zip(r, f, strict=True)))

    start = margin()
    losses = []
    for _ in range(5):
        opt.zero_grad()
        out = stage.compute("discriminator", batch, ctx)
        losses.append(float(out["d_loss"]))
        out["loss"].backward()
        assert all(p.grad is None for p in G.parameters())  # the discriminator step never trains G
        opt.step()
    # an untrained D scores real and generated audio alike, near 0: hinge loss about 2 per
    # sub-discriminator (5 periods + 3 scales); 5 steps separate them (measured with seeds 0-2:
    # mean-score margin 0 -> 0.085-0.16, loss down by 0.04-0.075)
    assert losses[0] > 15.0, losses
    assert min(losses[1:]) < losses[0] - 0.01, losses
    assert margin() > start + 0.03, (start, margin())


@pytest.mark.parametrize("model, rate, hop", [(TINY, None, 320), (TINY_CAUSAL, 24000, 480)], ids=["vocos", "wavenext"])
def test_audio_and_feature_crops_are_aligned(model, rate, hop):
    """Each feature crop is a run of the utterance's own features; the audio crop is the
    span those frames encode (frame t <-> samples [t * hop, (t + 1) * hop) at the output
    rate), for Vocos at 16 kHz and WaveNeXt at 24 kHz."""
    recipe = {**STAGE_D, "model": model, "data": {"crop_frames": 16, "target_sample_rate": rate}}
    stage, ctx = _stage(recipe)
    assert stage.hop == hop
    batch = _batch(2, seconds=None, target_rate=rate, crop=0.8)
    batch["crop"] = torch.tensor([0.8, 0.35], dtype=torch.float64)
    from focalcodec.train.stages import _encoder_features

    feats, lengths = _encoder_features(stage.frozen["encoder"], batch)
    target = batch.get("target", batch["sig"])
    crop_feats, crop_audio = stage._crops(batch)
    frames = stage.crop_frames
    assert crop_feats.shape[1] == frames and crop_audio.shape[1] == frames * hop
    starts = []
    for b in range(2):
        matches = [
            s for s in range(int(lengths[b]) - frames + 1) if torch.equal(feats[b, s : s + frames], crop_feats[b])
        ]
        assert len(matches) == 1, matches
        s = matches[0]
        starts.append(s)
        assert torch.equal(crop_audio[b], target[b, s * hop : (s + frames) * hop])
    assert all(s > 0 for s in starts)  # real offsets, not the trivial crop at 0


# -- frozen parts --------------------------------------------------------------------------------
STEP_STAGES = {
    "quantizer": (STAGE_Q, ["encoder"]),
    "decoder": (STAGE_D, ["encoder"]),
    "pos_conv": ({"stage": "pos_conv", "model": TINY_CAUSAL, "init": {"teacher": TINY}}, ["teacher"]),
    "encoder": (
        {"stage": "encoder", "model": TINY_CAUSAL, "init": {"teacher": TINY, "encoder": TINY}},
        ["teacher", "encoder.encoder.positional_embedding", "encoder.encoder.relative_embedding"],
    ),
    "joint": (
        {
            "stage": "joint",
            "model": TINY_CAUSAL,
            "init": {"teacher": TINY, "encoder": TINY, "compressor": "random", "decompressor": "random"},
        },
        ["teacher", "encoder.encoder.positional_embedding", "encoder.encoder.relative_embedding"],
    ),
}


def _module(stage, dotted: str) -> torch.nn.Module:
    head, _, rest = dotted.partition(".")
    module = stage.frozen.get(head) or stage.nets[head]
    return module.get_submodule(rest) if rest else module


@pytest.mark.parametrize("name", list(STEP_STAGES))
def test_frozen_parts_stay_bit_identical_through_a_step(name, tmp_path):
    from focalcodec.train.data import write_manifest
    from focalcodec.train.trainer import Trainer

    recipe, frozen = STEP_STAGES[name]
    manifest = write_manifest(_entries(2), tmp_path / "m.jsonl")
    overrides = [
        f"data.train={manifest}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.segment_seconds=1.0",
        "optim.lr=1e-2",
        f"output_dir={tmp_path / 'run'}",
        "train.tensorboard=false",
        "train.progress=false",
    ]
    trainer = Trainer(load_train_config(recipe, overrides))
    stage = trainer.stage
    fixed = {f: {k: v.clone() for k, v in _module(stage, f).state_dict().items()} for f in frozen}
    trained = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in stage.nets.items()}
    batch = next(iter(trainer._train_loader()))
    batch.pop("skipped")
    trainer.train_step([batch])
    for f, state in fixed.items():
        now = _module(stage, f).state_dict()
        assert all(torch.equal(v, now[k]) for k, v in state.items()), f"{name}: {f} changed"
    for n, state in trained.items():
        now = stage.nets[n].state_dict()
        trainable = {k for k, p in stage.nets[n].named_parameters() if p.requires_grad}
        changed = [k for k in trainable if not torch.equal(state[k], now[k])]
        assert len(changed) >= 0.8 * len(trainable), (
            f"{name}: only {len(changed)} of {len(trainable)} {n} tensors moved"
        )
    # what the stage marks frozen is not what the optimiser holds
    held = {id(p) for params in trainer.params.values() for p in params}
    for f in frozen:
        assert not any(id(p) in held for p in _module(stage, f).parameters()), f


# -- learning-rate rules -------------------------------------------------------------------------
def _schedule(**cfg):
    from focalcodec.train.trainer import LRSchedule

    p = torch.nn.Parameter(torch.zeros(1))
    full = load_train_config({"stage": "quantizer", "init": {"encoder": "random"}, "scheduler": cfg})["scheduler"]
    return LRSchedule(torch.optim.AdamW([p], lr=1.0), full)


def test_plateau_rule_decays_only_when_validation_stalls():
    s = _schedule(type="plateau", factor=0.5, threshold=0.01)
    for loss, lr in ((1.0, 1.0), (0.5, 1.0), (0.499, 0.5), (0.6, 0.25), (0.3, 0.25)):
        s.on_validation(loss)
        assert s.lr == lr, (loss, s.lr)
    # a negative loss (stage Q: MSE + entropy term) improving keeps the LR; stalling decays it
    s = _schedule(type="plateau", factor=0.5, threshold=0.01)
    for loss, lr in ((-0.1, 1.0), (-0.2, 1.0), (-0.2001, 0.5), (-0.1, 0.25)):
        s.on_validation(loss)
        assert s.lr == lr, (loss, s.lr)
    # signed: SpeechBrain's NewBob, which divides by the signed previous loss (inverted below 0)
    s = _schedule(type="plateau", factor=0.5, threshold=0.01, signed=True)
    for loss, lr in ((-0.1, 1.0), (-0.2, 0.5), (-0.1, 0.5)):
        s.on_validation(loss)
        assert s.lr == lr, (loss, s.lr)


def test_exponential_decay_every_two_epochs_as_the_recipe():
    """SpeechBrain's StepScheduler(decay_factor=0.999): lr0 * 0.999 ** floor((1 + epoch) / 2)
    after epoch 1, 2, 3, ..."""
    s = _schedule(type="exponential", gamma=0.5, every=2)
    for epoch in range(1, 8):
        s.on_epoch_end(epoch)
        assert s.lr == 0.5 ** math.floor((1 + epoch) / 2), epoch
    s = _schedule(type="exponential", gamma=0.5)
    s.on_epoch_end(1)
    s.on_epoch_end(2)
    assert s.lr == 0.25
