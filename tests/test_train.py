"""Training recipes on CPU: tiny fixture architectures, real speech from ../shared/speech/train.

Every stage learns: trained on 6 utterances (1 s segments), its loss on 2 held-out utterances
of other speakers falls below a bound that the untrained model does not reach (the bounds
leave a margin over the values measured with seeds 0-3, noted at each test). A resumed run
continues exactly as an uninterrupted one; a two-process gloo run equals one process with
gradient accumulation; trained stages export to a checkpoint that ``from_pretrained`` loads
and that encodes. The properties that losses cannot show (codes, gradients, crops, frozen
parts) are in test_train_properties.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SPEECH

from focalcodec import FocalCodec
from focalcodec.errors import CheckpointError, ConfigError
from focalcodec.train.config import load_train_config
from focalcodec.train.data import FeatureCache, build_manifest, write_manifest
from focalcodec.train.export import export_checkpoint
from focalcodec.train.trainer import Trainer

TINY = str(FIXTURES / "tiny_50hz")
TINY_CAUSAL = str(FIXTURES / "tiny_causal_4k")


pytestmark = pytest.mark.usefixtures("one_thread")


def _shortest(*positions: int) -> list[dict]:
    rows = sorted(
        (SPEECH / "train" / "manifest.tsv").read_text().splitlines()[1:], key=lambda r: float(r.split("\t")[4])
    )
    return [
        {"path": str(SPEECH / rows[i].split("\t")[0]), "duration": float(rows[i].split("\t")[4])} for i in positions
    ]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """The 6 shortest utterances of the real training speech (each cut to 1 s in training)."""
    return write_manifest(_shortest(*range(6)), tmp_path_factory.mktemp("data") / "train.jsonl")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """2 utterances (1.9 s and 2 s) of speakers that are not in ``manifest``."""
    return write_manifest(_shortest(8, 6), tmp_path_factory.mktemp("data") / "valid.jsonl")


def _config(stage_cfg: dict, manifest: Path, out: Path, *overrides: str, valid: Path | None = None) -> dict:
    base = [
        f"data.train={manifest}",
        f"data.valid={valid or manifest}",
        "data.valid_limit=2",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.num_buckets=1",
        "data.segment_seconds=1.0",
        "data.min_duration=1.0",
        "train.log_every=1",
        "train.valid_every=3",
        "train.ckpt_every=0",
        "train.progress=false",
        "train.tensorboard=false",
        "train.resume=none",
        "train.num_threads=1",
        "train.validate_first=true",
        f"output_dir={out}",
    ]
    return load_train_config(stage_cfg, base + list(overrides))


def _metrics(run: Path) -> list:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _valid_losses(run: Path, key: str = "valid/loss") -> list:
    return [r[key] for r in _metrics(run) if key in r]


def _fit(cfg: dict) -> Path:
    Trainer(cfg).fit()
    return Path(cfg["output_dir"])


def _learned(losses: list, bound: float) -> bool:
    """The best held-out loss after training is below ``bound`` x the untrained one."""
    return len(losses) >= 2 and min(losses[1:]) < bound * losses[0]


def test_stage_q_learns_on_heldout_speech_and_logs_code_stats(manifest, heldout, tmp_path):
    cfg = _config(
        {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}},
        manifest,
        tmp_path / "q",
        "train.max_steps=12",
        "train.valid_every=6",
        "optim.lr=2e-3",
        "train.tensorboard=true",
        valid=heldout,
    )
    run = _fit(cfg)
    mse = _valid_losses(run, "valid/mse")
    # seeds 0-3: 0.51-0.55 -> 0.26-0.28 (x 0.50-0.54) in 12 steps
    assert _learned(mse, 0.65), mse
    last = [r for r in _metrics(run) if "valid/code_usage" in r][-1]
    assert 0 < last["valid/code_usage"] <= 1 and 0 < last["valid/normalized_entropy"] <= 1
    train_rows = [r for r in _metrics(run) if "grad_norm" in r]
    assert {"loss", "mse", "entropy", "codebook_entropy", "per_sample_entropy", "lr"} <= set(train_rows[0])
    assert list((run / "tb").glob("events.out.tfevents.*"))


def test_stage_d_vocos_learns_on_heldout_speech(manifest, heldout, tmp_path):
    cfg = _config(
        {"stage": "decoder", "model": TINY, "init": {"encoder": TINY}, "discriminator": {"width": 0.05}},
        manifest,
        tmp_path / "d",
        "train.max_steps=8",
        "train.valid_every=8",
        "optim.lr=5e-3",
        "data.crop_frames=22",
        "train.tensorboard=true",
        valid=heldout,
    )
    run = _fit(cfg)
    mel = _valid_losses(run, "valid/mel_l1")
    # seeds 0-3: log-mel L1 3.19-3.26 -> 2.57-2.67 (x 0.80-0.84) in 8 steps
    assert _learned(mel, 0.9), mel
    rows = [r for r in _metrics(run) if "loss_generator" in r]
    assert {"loss_discriminator", "g_adv", "g_fm", "mel_l1", "grad_norm_generator", "grad_norm_discriminator"} <= set(
        rows[0]
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    assert "audio/reconstruction" in events.Tags()["audio"]
    assert "image/mel_reconstruction" in events.Tags()["images"]


def test_stage_d_wavenext_learns_24k_targets(manifest, heldout, tmp_path):
    cfg = _config(
        {"stage": "decoder", "model": TINY_CAUSAL, "init": {"encoder": TINY}, "discriminator": {"width": 0.05}},
        manifest,
        tmp_path / "w",
        "train.max_steps=8",
        "train.valid_every=8",
        "optim.lr=5e-3",
        "data.crop_frames=22",
        "data.target_sample_rate=24000",
        valid=heldout,
    )
    trainer = Trainer(cfg)
    assert trainer.stage.sample_rate == 24000 and trainer.stage.hop == 480
    batch = next(iter(trainer._train_loader()))
    assert batch["target"].shape[1] == round(batch["sig"].shape[1] * 1.5)
    trainer.fit()
    mel = _valid_losses(Path(cfg["output_dir"]), "valid/mel_l1")
    # seeds 0-3: 6.25-6.30 -> 5.10-5.20 (x 0.81-0.83) in 8 steps
    assert _learned(mel, 0.9), mel


def test_streaming_chain_learns_and_exports(manifest, heldout, tmp_path):
    """§4.4 steps 2-5 in sequence, each learning on held-out speech, then export +
    from_pretrained."""
    common = {"model": TINY_CAUSAL}

    def fit(recipe: dict, name: str, *overrides: str) -> Path:
        return _fit(_config({**common, **recipe}, manifest, tmp_path / name, *overrides, valid=heldout))

    pc = fit({"stage": "pos_conv", "init": {"teacher": TINY}}, "pc", "train.max_steps=12", "train.valid_every=12")
    enc = fit(
        {"stage": "encoder", "init": {"teacher": TINY, "encoder": str(pc)}},
        "enc",
        "train.max_steps=6",
        "train.valid_every=6",
        "optim.lr=2e-3",
    )
    q = fit(
        {
            "stage": "quantizer",
            "model_overrides": {"decompressor_config.lookahead_size": 0},
            "init": {"encoder": str(enc)},
        },
        "sq",
        "train.max_steps=6",
        "train.valid_every=6",
        "optim.lr=2e-3",
    )
    joint = fit(
        {
            "stage": "joint",
            "init": {"teacher": TINY, "encoder": str(enc), "compressor": str(q), "decompressor": str(q)},
        },
        "jt",
        "train.max_steps=6",
        "train.valid_every=6",
        "optim.lr=1e-3",
    )
    # seeds 0-3, final / untrained held-out loss: positional conv 0.76-0.79 (12 steps at the
    # recipe's 5e-4), encoder 0.79-0.83, quantizer 0.44-0.52, joint 0.68-0.75 (6 steps each)
    for run, key, bound in (
        (pc, "valid/loss", 0.88),
        (enc, "valid/loss", 0.9),
        (q, "valid/mse", 0.65),
        (joint, "valid/mse", 0.85),
    ):
        losses = _valid_losses(run, key)
        assert _learned(losses, bound), (run.name, losses)
    # the distilled encoder and the joint step kept the frozen positional conv and relative bias
    from focalcodec.train.stages import load_part_state

    pc_state = load_part_state(str(pc), "encoder")
    for run in (enc, joint):
        state = load_part_state(str(run), "encoder")
        for key in ("encoder.positional_embedding.conv.weight", "encoder.relative_embedding.weight"):
            assert torch.equal(state[key], pc_state[key]), (run.name, key)

    out = tmp_path / "exported"
    export_checkpoint(TINY_CAUSAL, [str(joint), f"decoder={TINY_CAUSAL}"], out)
    model = FocalCodec.from_pretrained(out)
    for part in ("encoder", "compressor", "decompressor"):
        state, exported = load_part_state(str(joint), part), getattr(model, part).state_dict()
        assert all(torch.equal(v, exported[k]) for k, v in state.items()), part
    assert "refiner.in_proj.weight" in load_part_state(str(joint), "decompressor")
    sig = torch.randn(16000) * 0.1
    toks, lengths = model.encode(sig)
    assert toks.shape == (50,) and int(toks.max()) < 4096
    audio, _ = model.decode(toks)
    assert audio.shape == (24000,) and torch.isfinite(audio).all()
    # the joint step's compressor works on its own distilled encoder, not on another one
    with pytest.raises(CheckpointError, match="was trained on the features of another encoder"):
        export_checkpoint(TINY_CAUSAL, [str(joint), f"encoder={TINY_CAUSAL}", f"decoder={TINY_CAUSAL}"], tmp_path / "x")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps(manifest, tmp_path, precision):
    cfg = _config(
        {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}},
        manifest,
        tmp_path / precision,
        "train.max_steps=2",
        f"train.precision={precision}",
        "train.validate_first=false",
        "data.valid=null",
    )
    trainer = Trainer(cfg)
    assert trainer.scalers["model"].is_enabled() == (precision == "fp16")
    trainer.fit()
    rows = _metrics(Path(cfg["output_dir"]))
    assert len(rows) == 2 and all(math.isfinite(r["loss"]) for r in rows)


def test_export_cli_from_stage_runs(manifest, tmp_path):
    q = _fit(
        _config(
            {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}},
            manifest,
            tmp_path / "q",
            "train.max_steps=1",
            "train.validate_first=false",
            "data.valid=null",
        )
    )
    from focalcodec.cli import main

    out = tmp_path / "codec"
    assert main(["train", "--export", str(out), "--model", TINY, str(q), f"encoder={TINY}", f"decoder={TINY}"]) == 0
    model = FocalCodec.from_pretrained(out)
    parts = torch.load(q / "checkpoints" / "step_00000001" / "parts.pt", weights_only=True)
    assert torch.equal(
        model.compressor.layers[0].downscale.downscale.weight,
        parts["compressor"]["layers.0.downscale.downscale.weight"],
    )
    toks, _ = model.encode(torch.randn(8000) * 0.1)
    assert toks.dtype == torch.long and toks.numel() == 24
    with pytest.raises(ConfigError, match="no source"):
        export_checkpoint(TINY, [str(q)], tmp_path / "incomplete")
    # an export is an output like any other: replaced only with --force
    args = ["train", "--export", str(out), "--model", TINY, str(q), f"encoder={TINY}", f"decoder={TINY}"]
    assert main(args) == 1
    assert main([*args, "--force", "--checkpoint", "latest"]) == 0


def test_resume_is_exact(manifest, tmp_path):
    """Stop after 3 steps (mid log window), resume to 7: every later logged value equals the
    uninterrupted run's."""
    stage = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}
    extra = (
        "train.valid_every=2",
        "train.log_every=2",
        "train.validate_first=false",
        "data.valid_limit=2",
        "optim.lr=2e-3",
    )
    full = _fit(_config(stage, manifest, tmp_path / "full", "train.max_steps=7", *extra))
    part = tmp_path / "part"  # also with loader workers: the data do not depend on them
    _fit(_config(stage, manifest, part, "train.max_steps=3", "data.num_workers=2", *extra))
    assert (part / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    _fit(_config(stage, manifest, part, "train.max_steps=7", "train.resume=auto", "data.num_workers=1", *extra))

    def by_step(run):
        return {
            (r["step"], k): v for r in _metrics(run) for k, v in r.items() if k not in ("sec_per_step", "step", "epoch")
        }

    a, b = by_step(full), by_step(part)
    later = {k: v for k, v in a.items() if k[0] > 3}
    assert later and all(b[k] == v for k, v in later.items()), [
        (k, v, b.get(k)) for k, v in later.items() if b.get(k) != v
    ]
    # epochs of 3 batches: the run stopped at the end of epoch 0 and went on into epoch 1
    assert max(r["epoch"] for r in _metrics(part)) == 1


def test_planned_steps_is_where_the_run_ends(manifest, tmp_path):
    """The progress bar's total: a recipe bounded by epochs (stage Q: 100 epochs, max_steps
    1e8) ends after max_epochs x steps per epoch, not at max_steps."""
    stage = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}
    extra = ("data.valid=null", "train.validate_first=false", "train.grad_accum=2", "train.max_steps=100000000")
    # 6 utterances, batch 2: 3 batches per epoch, 2 steps of 2 micro-batches (the last has 1)
    trainer = Trainer(_config(stage, manifest, tmp_path / "e", "train.max_epochs=2", *extra))
    assert trainer.planned_steps() == 4
    trainer.fit()
    assert trainer.step == 4
    trainer = Trainer(_config(stage, manifest, tmp_path / "s", "train.max_epochs=2", *extra[:-1], "train.max_steps=3"))
    assert trainer.planned_steps() == 3


def test_resume_is_exact_for_gan_stage(manifest, tmp_path):
    stage = {"stage": "decoder", "model": TINY, "init": {"encoder": TINY}, "discriminator": {"width": 0.05}}
    extra = (
        "train.validate_first=false",
        "data.valid=null",
        "data.crop_frames=8",
        "train.grad_accum=2",
        "scheduler.type=exponential",
        "scheduler.interval=step",
    )
    full = _fit(_config(stage, manifest, tmp_path / "full", "train.max_steps=3", *extra))
    part = tmp_path / "part"
    _fit(_config(stage, manifest, part, "train.max_steps=1", *extra))
    _fit(_config(stage, manifest, part, "train.max_steps=3", "train.resume=auto", *extra))
    a = [r for r in _metrics(full) if r["step"] > 1]
    b = [r for r in _metrics(part) if r["step"] > 1]
    keys = ("loss_generator", "loss_discriminator", "mel_l1", "lr_generator")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


# The GAN cases use the period discriminators only: the first scale discriminator's spectral
# norm runs a power iteration at every forward, so one process accumulating two micro-batches
# normalises with a vector iterated more often than each DDP rank does (0.4 % apart).
GAN = {"stage": "decoder", "model": TINY, "init": {"encoder": TINY}, "discriminator": {"width": 0.05, "num_scales": 0}}
DDP_CASES = {
    # stage, precision, tolerance: fp32 is exact up to the order of the gradient sums; under
    # bf16 autocast such a last-bit difference after a step can flip a bf16 rounding
    "decoder-fp32": (GAN, "fp32", 1e-4),
    "decoder-bf16": (GAN, "bf16", 1e-2),
}


@pytest.mark.slow  # starts two fresh Python processes (about 10 s each on a quiet machine)
@pytest.mark.parametrize("case", list(DDP_CASES))
def test_two_process_gloo_matches_gradient_accumulation(manifest, tmp_path, case):
    """torchrun with 2 CPU processes (DDP over gloo) == 1 process accumulating 2 micro-batches,
    in fp32 and bf16 autocast. The GAN stage covers what the one-phase stages use (one DDP
    net, length-masked validation sums reduced over ranks) plus a second optimiser phase."""
    stage, precision, tol = DDP_CASES[case]
    # batch 1: each rank's batches are exactly the single process's micro-batches
    extra = (
        "train.max_steps=2",
        "train.validate_first=false",
        "train.valid_every=2",
        "optim.lr=2e-3",
        "data.batch_size=1",
        "data.crop_frames=16",
        f"train.precision={precision}",
    )
    single = _fit(_config(stage, manifest, tmp_path / "single", "train.grad_accum=2", *extra))
    ddp_cfg = _config(stage, manifest, tmp_path / "ddp", *extra)
    import yaml

    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(ddp_cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "focalcodec",
        "train",
        "--config",
        str(cfg_file),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _metrics(single), _metrics(tmp_path / "ddp")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 2]
    names = ("loss", "mse", "grad_norm", "loss_generator", "loss_discriminator", "g_adv", "g_fm", "mel_l1")
    for ra, rb in zip(a, b, strict=True):
        keys = [k for k in ra if k.startswith("valid/") or k in names or k.startswith("grad_norm")]
        assert keys
        for key in keys:
            assert rb[key] == pytest.approx(ra[key], rel=tol, abs=1e-6), (ra["step"], key, ra[key], rb[key])
    latest = (tmp_path / "ddp" / "checkpoints" / "latest").read_text().strip()
    state = torch.load(tmp_path / "ddp" / "checkpoints" / latest / "state.pt", weights_only=True)
    assert len(state["rng"]) == 2 and state["step"] == 2
    # both ranks hold the same weights: rank 1's copy is what rank 0 saved
    single_state = torch.load(tmp_path / "single" / "checkpoints" / latest / "state.pt", weights_only=True)
    for net, weights in state["nets"].items():
        for k, v in weights.items():
            torch.testing.assert_close(v, single_state["nets"][net][k], rtol=tol, atol=tol * 1e-2, msg=f"{net}.{k}")


def test_feature_cache_gives_the_same_losses(manifest, tmp_path):
    stage = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}
    extra = ("train.max_steps=2", "train.validate_first=false", "data.valid=null", "data.segment_seconds=null")
    plain = _fit(_config(stage, manifest, tmp_path / "plain", *extra))
    cached = _fit(_config(stage, manifest, tmp_path / "cached", f"data.feature_cache={tmp_path / 'cache'}", *extra))
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 6
    for ra, rb in zip(_metrics(plain), _metrics(cached), strict=False):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5)


def test_feature_cache_is_keyed_by_the_package_weights_digest(manifest, tmp_path):
    """One identity for weights: the cache folder is the encoder's state_dict_sha256 (what
    .fc files name), plus causal/non-causal and the rate. A cache of the old layout (keyed by
    a digest of its own) holding other features is not reused: the losses are those of
    features computed afresh, and a warning says the old files are unused."""
    import hashlib

    from focalcodec.hub import state_dict_sha256

    stage = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}
    extra = ("train.max_steps=2", "train.validate_first=false", "data.valid=null", "data.segment_seconds=null")
    plain = _fit(_config(stage, manifest, tmp_path / "plain", *extra))
    encoder = FocalCodec.from_pretrained(TINY).encoder
    # the cache as the old trainer wrote it: sha1 of the float bytes, garbage features inside
    h = hashlib.sha1()
    for k, v in sorted(encoder.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    cache = tmp_path / "cache"
    for line in manifest.read_text().splitlines():
        entry = json.loads(line)
        key = hashlib.sha1(f"{h.hexdigest()[:16]}\0{entry['path']}".encode()).hexdigest()
        (cache / key[:2]).mkdir(parents=True, exist_ok=True)
        frames = int(encoder.num_frames(torch.tensor(round(entry["duration"] * 16000))))
        torch.save(torch.randn(frames, 64), cache / key[:2] / f"{key}.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cached = _fit(_config(stage, manifest, tmp_path / "cached", f"data.feature_cache={cache}", *extra))
    for ra, rb in zip(_metrics(plain), _metrics(cached), strict=True):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5)
    assert [str(w.message) for w in caught if "older layout" in str(w.message)]
    folder = f"{state_dict_sha256(encoder.state_dict())}-noncausal-16000"
    assert [p.name for p in cache.iterdir() if len(p.name) > 2] == [folder]
    assert len(list((cache / folder).rglob("*.pt"))) == 6
    # the same weights, causal, are another encoder: another folder
    causal = FocalCodec.from_pretrained(TINY_CAUSAL).encoder
    causal.load_state_dict(encoder.state_dict())
    assert FeatureCache.encoder_id(causal, 16000) == folder.replace("noncausal", "causal")
    # a file that names another encoder is refused in one line, never read as features
    other = FeatureCache(cache, FeatureCache.encoder_id(causal, 16000))
    path = json.loads(manifest.read_text().splitlines()[0])["path"]
    other.path(path).parent.mkdir(parents=True)
    other.path(path).write_bytes(FeatureCache(cache, folder).path(path).read_bytes())
    with pytest.raises(CheckpointError, match="holds features of another encoder"):
        other.get(path)


def test_config_errors_and_shipped_recipes(manifest, tmp_path):
    with pytest.raises(ConfigError, match="data.batchsize"):
        load_train_config({"stage": "quantizer"}, ["data.batchsize=3"])
    with pytest.raises(ConfigError, match="unknown stage"):
        Trainer(_config({"stage": "vocoder"}, manifest, tmp_path))
    with pytest.raises(ConfigError, match="init.teacher"):
        Trainer(_config({"stage": "encoder", "model": TINY_CAUSAL}, manifest, tmp_path))
    cfg = load_train_config("stage_q_50hz", ["optim.lr=1e-4", "data.batch_size=8"])
    assert cfg["optim"]["lr"] == 1e-4 and cfg["data"]["batch_size"] == 8 and cfg["loss"]["entropy_weight"] == 0.1
    d = load_train_config("stage_d_vocos")
    assert d["data"]["crop_frames"] * 320 == 7040 and d["loss"]["fm_weight"] == 54.0 and d["loss"]["mel_weight"] == 45.0
    w = load_train_config("stage_d_wavenext")
    assert w["data"]["target_sample_rate"] == 24000 and w["data"]["crop_frames"] * 480 == 72000
    enc = load_train_config("stream_encoder")
    assert enc["loss"]["layer_weights"] == [0.5, 0.6, 0.7, 0.8, 0.9, 1.0] and enc["optim"]["lr"] == 5e-5


def test_shipped_recipes_say_what_docs_training_md_says():
    """The recipe-alignment table of docs/training.md, §3, as the shipped files hold it."""
    from focalcodec.train.config import builtin_configs

    recipes = {name: load_train_config(name) for name in builtin_configs()}
    assert len(recipes) == 9
    for name in ("stage_q_50hz", "stage_q_25hz", "stage_q_12_5hz"):
        q = recipes[name]
        assert q["optim"]["betas"] == [0.8, 0.99] and q["optim"]["grad_clip"] == 5.0 and q["optim"]["lr"] == 5e-4
        assert (q["scheduler"]["type"], q["scheduler"]["factor"], q["scheduler"]["threshold"]) == (
            "plateau",
            0.9,
            0.0025,
        )
        assert q["scheduler"]["signed"] is False and q["train"]["max_epochs"] == 100
        assert q["loss"] == {"entropy_weight": 0.1, "inv_temperature": 100.0, "diversity_gamma": 1.0}
        assert "train960" in q["data"]["train"] and q["data"]["max_duration"] == 60.0
    for name, rate, crop, lr, batch in (
        ("stage_d_vocos", None, 22, 2e-4, 16),
        ("stage_d_wavenext", 24000, 150, 4e-4, 32),
    ):
        d = recipes[name]
        assert d["optim"]["grad_clip"] is None  # the recipe's GAN step does not clip
        assert (d["scheduler"]["type"], d["scheduler"]["gamma"], d["scheduler"]["every"]) == ("exponential", 0.999, 2)
        assert (d["data"]["target_sample_rate"], d["data"]["crop_frames"], d["optim"]["lr"]) == (rate, crop, lr)
        assert d["data"]["batch_size"] == batch and d["data"]["min_duration"] == 1.0
        assert "train_clean_100" in d["data"]["train"]
        assert (d["loss"]["adv_weight"], d["loss"]["fm_weight"], d["loss"]["mel_weight"]) == (1.0, 54.0, 45.0)
        assert d["train"]["max_steps"] == 3_000_000
    for name in ("stream_pos_conv", "stream_encoder", "stream_quantizer", "stream_joint"):
        s = recipes[name]
        assert (s["train"]["max_epochs"], s["data"]["max_duration"], s["data"]["batch_size"]) == (100, 320.0, 16)
        assert s["data"]["max_batch_seconds"] is None and s["optim"]["betas"] == [0.9, 0.98]
    assert recipes["stream_pos_conv"]["optim"]["lr"] == 5e-4
    assert all(recipes[n]["optim"]["lr"] == 5e-5 for n in ("stream_encoder", "stream_quantizer", "stream_joint"))
    assert recipes["stream_quantizer"]["model_overrides"] == {"decompressor_config.lookahead_size": 0}


def test_cli_train_runs_a_recipe_with_overrides(manifest, tmp_path, capsys):
    import yaml

    from focalcodec.cli import main

    recipe = tmp_path / "q.yaml"
    recipe.write_text(yaml.safe_dump({"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}))
    out = tmp_path / "run"
    args = [
        "train",
        "--config",
        str(recipe),
        f"data.train={manifest}",
        "data.batch_size=2",
        "data.segment_seconds=1.0",
        "data.num_workers=0",
        "train.max_steps=2",
        "train.log_every=1",
        "train.progress=false",
        "train.num_threads=1",
        "train.tensorboard=false",
        f"output_dir={out}",
        "optim.lr=1e-3",
    ]
    assert main(args + ["--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["optim"]["lr"] == 1e-3 and printed["data"]["batch_size"] == 2
    assert main(args) == 0
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["max_steps"] == 2
    assert main(["train", "--config", str(recipe), "data.bogus=1"]) == 1
    assert "data.bogus" in capsys.readouterr().err


def test_prepare_reads_libritts_layout_and_plain_folders(tmp_path):
    import shutil

    src = sorted((SPEECH / "train").glob("*.flac"))[:3]
    libri = tmp_path / "LibriTTS" / "train-clean-100" / "19" / "198"
    libri.mkdir(parents=True)
    for i, f in enumerate(src[:2]):
        shutil.copy(f, libri / f"19_198_000000_00000{i}.wav")
        (libri / f"19_198_000000_00000{i}.normalized.txt").write_text(f"hello {i}\n")
    plain = tmp_path / "mine" / "alice"
    plain.mkdir(parents=True)
    shutil.copy(src[2], plain / "take1.flac")
    (plain / "broken.wav").write_bytes(b"not audio")
    from focalcodec.cli import main

    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(tmp_path / "LibriTTS"), str(tmp_path / "mine"), "-o", str(out), "--relative"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3
    assert rows[0]["speaker"] == "19" and rows[0]["text"] == "hello 0" and rows[0]["sample_rate"] == 16000
    assert rows[2]["speaker"] == "alice" and "text" not in rows[2]
    assert not Path(rows[0]["path"]).is_absolute() and (tmp_path / rows[0]["path"]).is_file()
    from focalcodec.train.data import read_manifest

    assert Path(read_manifest(out)[0]["path"]).is_file()
    entries = build_manifest(SPEECH / "train", min_duration=0, max_duration=1.9, num_workers=2)
    assert entries and all(e["duration"] <= 1.9 for e in entries) and all("speaker" in e for e in entries)


def test_stage_q_padding_is_masked_exactly(manifest):
    """Full utterances in one padded batch: the masked MSE equals the one from running each
    utterance alone (the padding changes neither features, tokens nor reconstructions)."""
    from focalcodec.audio import load_audio
    from focalcodec.train.losses import masked_mse
    from focalcodec.train.stages import QuantizerStage, StepContext, _encoder_features

    stage = QuantizerStage(load_train_config({"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}))
    stage.nets["pipeline"].eval()
    ctx = StepContext(stage.nets, torch.device("cpu"), None)
    paths = [json.loads(line)["path"] for line in manifest.read_text().splitlines()[:2]]
    sigs = [load_audio(p, 16000) for p in paths]
    sigs[1] = sigs[1][: len(sigs[1]) - 5000]
    n = max(len(s) for s in sigs)
    batch = {
        "sig": torch.stack([torch.nn.functional.pad(s, (0, n - len(s))) for s in sigs]),
        "sig_lengths": torch.tensor([len(s) for s in sigs]),
    }
    with torch.no_grad():
        feats, lengths = _encoder_features(stage.frozen["encoder"], batch)
        qfeats, q, tok_lengths = ctx.nets["pipeline"](feats, lengths)
        sse, count = 0.0, 0
        for i, s in enumerate(sigs):
            alone = {"sig": s[None], "sig_lengths": torch.tensor([len(s)])}
            f1, l1 = _encoder_features(stage.frozen["encoder"], alone)
            torch.testing.assert_close(f1[0], feats[i, : int(l1)], atol=1e-5, rtol=1e-4)
            q1, o1, _ = ctx.nets["pipeline"](f1, l1)
            assert torch.equal(o1.toks[0], q.toks[i, : int(tok_lengths[i])])
            sse += float(masked_mse(q1, f1)) * f1.numel()
            count += f1.numel()
        assert float(masked_mse(qfeats, feats, lengths)) == pytest.approx(sse / count, rel=1e-5)
