"""What a training run accepts: configs (unknown keys, bad values, no silent random weights),
manifests with unusable entries (skipped and reported, also after a resume), ``prepare``
leaving unusable files out, and one clear ``error:`` line for a truncated checkpoint or an
unreachable Hugging Face source."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, SPEECH

from focalcodec.cli import main
from focalcodec.errors import ConfigError, HubError, OutputError
from focalcodec.train.config import load_train_config
from focalcodec.train.data import read_manifest, write_manifest
from focalcodec.train.stages import build_stage, run_checkpoint
from focalcodec.train.trainer import Trainer

TINY = str(FIXTURES / "tiny_50hz")
TINY_CAUSAL = str(FIXTURES / "tiny_causal_4k")
STAGE_Q = {"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}

pytestmark = pytest.mark.usefixtures("one_thread")


def _speech(count: int) -> list[Path]:
    rows = sorted(
        (SPEECH / "train" / "manifest.tsv").read_text().splitlines()[1:], key=lambda r: float(r.split("\t")[4])
    )
    return [SPEECH / r.split("\t")[0] for r in rows[:count]]


def _overrides(manifest: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.train={manifest}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.num_buckets=1",
        "data.segment_seconds=1.0",
        "train.log_every=1",
        "train.ckpt_every=1",
        "train.progress=false",
        "train.tensorboard=false",
        "train.num_threads=1",
        "optim.lr=2e-3",
        f"output_dir={out}",
        *extra,
    ]


# -- configs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "recipe, overrides, named",
    [
        (STAGE_Q, ["data.batchsize=3"], "data.batchsize"),
        (STAGE_Q, ["scheduler.patience=2"], "scheduler.patience"),
        (STAGE_Q, ["loss.entropy_wieght=0.2"], "loss.entropy_wieght"),
        (STAGE_Q, ["discriminator.width=0.5"], "discriminator"),
        (STAGE_Q, ["init.decoder=" + TINY], "init.decoder"),
        ({**STAGE_Q, "stage": "decoder"}, ["data.crop_frames=22", "loss.mel.nmels=64"], "loss.mel.nmels"),
        ({**STAGE_Q, "stage": "decoder"}, ["data.crop_frames=22", "discriminator.period=[2]"], "discriminator.period"),
        ({"stage": "pos_conv", "init": {"teacher": TINY}}, ["loss.entropy_weight=0.1"], "loss"),
    ],
)
def test_unknown_options_in_every_section_are_errors(recipe, overrides, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("[", r"\[")):
        load_train_config(recipe, overrides)


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.batch_size=abc", "data.batch_size must be an integer >= 1, not 'abc'"),
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, not 0"),
        ("data.num_workers=1.5", "data.num_workers must be an integer >= 0"),
        ("optim.lr=-1e-3", "optim.lr must be a number > 0"),
        ("optim.lr=fast", "optim.lr must be a number > 0, not 'fast'"),
        ("optim.betas=[0.9]", "optim.betas must be two numbers"),
        ("train.precision=bf17", "train.precision must be one of fp32, bf16, fp16"),
        ("train.max_steps=true", "train.max_steps must be an integer"),
        (
            "train.max_steps=0",
            "train.max_steps must be an integer >= 1 (a run of no step would save untrained weights)",
        ),
        ("train.max_epochs=0", "train.max_epochs must be an integer >= 1"),
        ("train.max_steps=-3", "train.max_steps must be an integer >= 1"),
        ("train.progress=maybe", "train.progress must be true or false"),
        ("scheduler.type=cosine", "scheduler.type must be one of plateau, exponential, constant"),
        ("data.min_duration=5", "data.min_duration (5) is above data.max_duration"),
        ("loss.entropy_weight=nan", "loss.entropy_weight must be a number >= 0"),
        ("optim.lr", "is not of the form key.path=value"),
    ],
)
def test_bad_values_name_the_setting(override, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_train_config(STAGE_Q, ["data.max_duration=2", override] if "min_duration" in override else [override])


def test_cli_reports_a_bad_override_in_one_line(tmp_path, capsys):
    assert main(["train", "--config", "stage_q_50hz", "data.batch_size=abc", f"output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: data.batch_size must be an integer"), err
    assert not list(tmp_path.iterdir())  # nothing was started


def test_print_config_shows_every_resolved_loss_option(capsys):
    import yaml

    assert main(["train", "--config", "stage_d_vocos", "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["loss"]["mel"] == {
        "n_mels": 80,
        "n_fft": 1024,
        "win_length": None,
        "hop_length": 320,
        "f_min": 0.0,
        "f_max": 8000.0,
        "clamp": 1e-5,
    }
    assert cfg["optim"]["grad_clip"] is None and cfg["scheduler"]["every"] == 2


@pytest.mark.parametrize(
    "recipe, missing",
    [
        ({"stage": "quantizer", "model": TINY}, "init.encoder"),
        ({"stage": "decoder", "model": TINY, "data": {"crop_frames": 22}}, "init.encoder"),
        ({"stage": "pos_conv", "model": TINY_CAUSAL}, "init.teacher"),
        ({"stage": "encoder", "model": TINY_CAUSAL, "init": {"teacher": TINY}}, "init.encoder"),
        (
            {
                "stage": "joint",
                "model": TINY_CAUSAL,
                "init": {"teacher": TINY, "encoder": TINY, "compressor": TINY_CAUSAL},
            },
            "init.decompressor",
        ),
    ],
)
def test_random_weights_for_a_part_that_needs_training_must_be_asked_for(recipe, missing):
    with pytest.raises(ConfigError, match=rf"{missing} is not set.*{missing}=random"):
        load_train_config(recipe)
    init = {**recipe.get("init", {}), missing.split(".")[1]: "random"}
    stage = build_stage(load_train_config({**recipe, "init": init}))  # explicit: accepted
    assert stage.name == recipe["stage"]


def test_decoder_stage_needs_a_crop_length():
    with pytest.raises(ConfigError, match="data.crop_frames is not set"):
        load_train_config({"stage": "decoder", "model": TINY, "init": {"encoder": TINY}})


def test_offline_hub_source_names_the_repo_and_the_setting(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    cfg = load_train_config(
        {"stage": "quantizer", "model": TINY, "init": {"encoder": "hf-wavlm:microsoft/wavlm-large"}}
    )
    with pytest.raises(HubError, match=r"init\.encoder = hf-wavlm:microsoft/wavlm-large: .*'microsoft/wavlm-large'"):
        build_stage(cfg)
    recipe = tmp_path / "q.yaml"
    recipe.write_text(json.dumps(cfg))
    assert main(["train", "--config", str(recipe), f"output_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "init.encoder" in err[0] and "microsoft/wavlm-large" in err[0], err


# -- unusable manifest entries --------------------------------------------------------------------
@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Path:
    """A manifest of 6 real utterances with a missing file and a WAV full of NaN among them."""
    root = tmp_path_factory.mktemp("damaged")
    sig, rate = sf.read(str(_speech(1)[0]), dtype="float32")
    nan = sig.copy()
    nan[100:200] = np.nan
    sf.write(str(root / "nan.wav"), nan, rate, subtype="FLOAT")
    entries = [{"path": str(p), "duration": 2.0} for p in _speech(4)]
    entries[1:1] = [{"path": str(root / "nan.wav"), "duration": 2.0}, {"path": str(root / "gone.wav"), "duration": 2.0}]
    return write_manifest(entries, root / "train.jsonl")


def test_unusable_entries_are_skipped_and_reported_also_after_resume(damaged, tmp_path):
    def metrics(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    full = tmp_path / "full"
    Trainer(load_train_config(STAGE_Q, _overrides(damaged, full, "train.max_steps=4"))).fit()
    part = tmp_path / "part"
    Trainer(load_train_config(STAGE_Q, _overrides(damaged, part, "train.max_steps=2"))).fit()
    first = [r["skipped"] for r in metrics(part) if "skipped" in r]
    Trainer(load_train_config(STAGE_Q, _overrides(damaged, part, "train.max_steps=4"))).fit()
    rows = metrics(part)
    skipped = [r["skipped"] for r in rows if "skipped" in r]
    assert any("nan.wav contains NaN" in m for m in first) and any("gone.wav" in m for m in first), first
    assert len(skipped) > len(first)  # reported again by the resumed run (its own log)
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(v) for v in losses.values())
    # the data (substitutes included) depend only on the manifest: resume stays exact
    assert losses == {r["step"]: r["loss"] for r in metrics(full) if "loss" in r}


def test_a_manifest_line_without_a_usable_duration_is_skipped_with_a_warning(tmp_path):
    good = {"path": str(_speech(1)[0]), "duration": 1.65}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "duration": float("nan")}) + "\n")
    with pytest.warns(UserWarning, match=r"m\.jsonl, entry 2: duration nan"):
        assert len(read_manifest(path)) == 1


def test_prepare_leaves_unusable_files_out(tmp_path, capsys):
    data = tmp_path / "data" / "spk"
    data.mkdir(parents=True)
    sig, rate = sf.read(str(_speech(1)[0]), dtype="float32")
    sf.write(str(data / "good.wav"), sig, rate)
    bad = sig.copy()
    bad[5] = np.inf
    sf.write(str(data / "inf.wav"), bad, rate, subtype="FLOAT")
    (data / "noise.wav").write_bytes(b"RIFF not really a wave file")
    (data / "empty.wav").write_bytes(b"")
    out = tmp_path / "m.jsonl"
    assert main(["prepare", str(tmp_path / "data"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert [Path(json.loads(line)["path"]).name for line in out.read_text().splitlines()] == ["good.wav"]
    for name, reason in (("inf.wav", "NaN or infinite"), ("noise.wav", "not readable"), ("empty.wav", "")):
        assert any(name in line and reason in line for line in captured.err.splitlines()), (name, captured.err)
    assert "3 unusable files left out" in captured.out
    # the manifest is an output like any other: kept unless --force
    assert main(["prepare", str(tmp_path / "data"), "-o", str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["prepare", str(tmp_path / "data"), "-o", str(out), "--force", "--no-verify"]) == 0
    names = sorted(Path(json.loads(line)["path"]).name for line in out.read_text().splitlines())
    assert names == ["good.wav", "inf.wav"]  # headers only: bad samples are not seen


def test_prepare_to_stdout_writes_only_the_manifest_there(tmp_path, capsys):
    """``-o -`` pipes the manifest (``prepare DIR -o - > m.jsonl``): the summary goes to stderr."""
    data = tmp_path / "data"
    data.mkdir()
    for p in _speech(2):
        shutil.copy(p, data / p.name)
    assert main(["prepare", str(data), "-o", "-"]) == 0
    captured = capsys.readouterr()
    (tmp_path / "m.jsonl").write_text(captured.out)
    assert len(read_manifest(tmp_path / "m.jsonl")) == 2
    assert "2 utterances" in captured.err


# -- checkpoints ----------------------------------------------------------------------------------
def test_truncated_state_gives_one_clear_error(tmp_path, capsys):
    manifest = write_manifest([{"path": str(p), "duration": 2.0} for p in _speech(2)], tmp_path / "m.jsonl")
    run = tmp_path / "run"
    Trainer(load_train_config(STAGE_Q, _overrides(manifest, run, "train.max_steps=2"))).fit()
    state = run / "checkpoints" / "step_00000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:5000])
    recipe = tmp_path / "q.yaml"
    recipe.write_text(json.dumps(STAGE_Q))
    assert main(["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=3")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"{state} is truncated or corrupt" in err[0] and "step_00000001" in err[0] and "train.resume" in err[0]
    earlier = run / "checkpoints" / "step_00000001"
    assert (
        main(
            [
                "train",
                "--config",
                str(recipe),
                *_overrides(manifest, run, "train.max_steps=3"),
                f"train.resume={earlier}",
            ]
        )
        == 0
    )


def _fake_run(root: Path, stage: str) -> Path:
    """A run folder with checkpoints step 1 (best) and step 2 (latest)."""
    ckpts = root / "checkpoints"
    for step in (1, 2):
        (ckpts / f"step_{step:08d}").mkdir(parents=True)
        torch.save({"decoder": {"w": torch.tensor([float(step)])}}, ckpts / f"step_{step:08d}" / "parts.pt")
    (ckpts / "best").write_text("step_00000001\n")
    (ckpts / "latest").write_text("step_00000002\n")
    (root / "config.yaml").write_text(f"stage: {stage}\n")
    return root


def test_run_checkpoint_choice_follows_the_recipes(tmp_path):
    decoder, quantizer = _fake_run(tmp_path / "d", "decoder"), _fake_run(tmp_path / "q", "quantizer")
    assert run_checkpoint(decoder).name == "step_00000002"  # recipe: the latest epoch
    assert run_checkpoint(quantizer).name == "step_00000001"  # recipe: the best validation loss
    assert run_checkpoint(decoder, "best").name == "step_00000001"
    assert run_checkpoint(quantizer, "latest").name == "step_00000002"
    with pytest.raises(ConfigError, match="auto, best or latest"):
        run_checkpoint(decoder, "newest")


# -- the run folder ---------------------------------------------------------------------------------
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_folder_is_never_written_into_silently(tmp_path, capsys):
    manifest = write_manifest([{"path": str(p), "duration": 2.0} for p in _speech(2)], tmp_path / "m.jsonl")
    run = tmp_path / "run"
    Trainer(load_train_config(STAGE_Q, _overrides(manifest, run, "train.max_steps=2"))).fit()
    before = _snapshot(run)
    # starting over in it, or training another stage in it (e.g. two recipes left at one output_dir)
    with pytest.raises(OutputError, match=r"already holds a training run .*train.resume=none.*--force"):
        Trainer(load_train_config(STAGE_Q, _overrides(manifest, run, "train.max_steps=1", "train.resume=none")))
    decoder = {**STAGE_Q, "stage": "decoder"}
    with pytest.raises(ConfigError, match=r"holds a run of the quantizer stage, not decoder"):
        Trainer(load_train_config(decoder, _overrides(manifest, run, "data.crop_frames=8")))
    assert _snapshot(run) == before  # config.yaml still says quantizer: --export picks its best checkpoint
    # a file where the run folder should be: one line, before any work
    recipe = tmp_path / "q.yaml"
    recipe.write_text(json.dumps(STAGE_Q))
    assert main(["train", "--config", str(recipe), *_overrides(manifest, manifest, "train.max_steps=1")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: output_dir: {manifest} is a file; give a folder"], err
    # --force replaces the earlier run: nothing of it is left
    args = ["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=1", "train.resume=none")]
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_00000001"]


def test_a_run_with_nothing_to_do_is_refused_in_one_line(tmp_path, capsys):
    """max_steps=0 at config validation (it used to save a checkpoint of untrained weights),
    and resuming a run that has already reached its end, before anything is written."""
    manifest = write_manifest([{"path": str(p), "duration": 2.0} for p in _speech(2)], tmp_path / "m.jsonl")
    recipe = tmp_path / "q.yaml"
    recipe.write_text(json.dumps(STAGE_Q))
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=0")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: train.max_steps must be an integer >= 1"), err
    assert not run.exists()
    assert main(["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=2")]) == 0
    capsys.readouterr()
    before = _snapshot(run)
    assert main(["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=2")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has already ended (step 2" in err[0] and "raise train.max_steps" in err[0], err
    assert _snapshot(run) == before
    assert main(["train", "--config", str(recipe), *_overrides(manifest, run, "train.max_steps=3")]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """A run killed between checkpoints has logged steps that its resume runs again: the log
    is cut back to the checkpoint, so metrics.jsonl (and TensorBoard) read as one run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest = write_manifest([{"path": str(p), "duration": 2.0} for p in _speech(4)], tmp_path / "m.jsonl")
    extra = ("train.max_steps=4", "train.ckpt_every=2", "train.tensorboard=true")
    full, run = tmp_path / "full", tmp_path / "run"
    Trainer(load_train_config(STAGE_Q, _overrides(manifest, full, *extra))).fit()
    Trainer(load_train_config(STAGE_Q, _overrides(manifest, run, *extra))).fit()
    # as if killed after logging step 4, before its checkpoint
    shutil.rmtree(run / "checkpoints" / "step_00000004")
    (run / "checkpoints" / "latest").write_text("step_00000002\n")
    Trainer(load_train_config(STAGE_Q, _overrides(manifest, run, *extra))).fit()

    def rows(folder: Path) -> list[tuple]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines)]

    assert rows(run) == rows(full) and [s for s, _ in rows(run)] == [1, 2, 3, 4]
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
