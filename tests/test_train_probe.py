"""Export checks that the stages it combines were trained on the exported encoder.

Each checkpoint records the features of the encoder its compressor/decompressor or decoder
was trained on, on a fixed probe signal (``probe.pt``); ``--export`` compares them with the
exported encoder's, within a tolerance that tells float rounding of the same weights from
another encoder. A decoder trained on non-causal features (WaveNeXt) is not compared with a
causal encoder. Checkpoints without a probe export with a warning.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, SPEECH

from focalcodec import FocalCodec
from focalcodec.cli import main
from focalcodec.errors import CheckpointError
from focalcodec.train.config import load_train_config
from focalcodec.train.data import write_manifest
from focalcodec.train.export import export_checkpoint
from focalcodec.train.probe import PROBE_FILE, PROBE_TOLERANCE, encoder_features, probe_difference
from focalcodec.train.stages import run_checkpoint
from focalcodec.train.trainer import Trainer

TINY = str(FIXTURES / "tiny_50hz")
TINY_CAUSAL = str(FIXTURES / "tiny_causal_4k")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-step runs: stage Q on the tiny encoder and on a random one, Vocos on the tiny
    encoder, WaveNeXt (causal model) on the non-causal tiny encoder."""
    root = tmp_path_factory.mktemp("probe")
    rows = sorted(
        (SPEECH / "train" / "manifest.tsv").read_text().splitlines()[1:], key=lambda r: float(r.split("\t")[4])
    )
    entries = [{"path": str(SPEECH / r.split("\t")[0]), "duration": float(r.split("\t")[4])} for r in rows[:2]]
    manifest = write_manifest(entries, root / "train.jsonl")
    common = [
        f"data.train={manifest}",
        "data.batch_size=2",
        "data.num_workers=0",
        "data.segment_seconds=1.0",
        "train.max_steps=1",
        "train.progress=false",
        "train.tensorboard=false",
        "train.num_threads=1",
    ]
    decoder = {"stage": "decoder", "discriminator": {"width": 0.05, "num_scales": 0}}
    recipes = {
        "q": ({"stage": "quantizer", "model": TINY, "init": {"encoder": TINY}}, []),
        "q_random": ({"stage": "quantizer", "model": TINY, "init": {"encoder": "random"}}, []),
        "vocos": ({**decoder, "model": TINY, "init": {"encoder": TINY}}, ["data.crop_frames=16"]),
        "wavenext": (
            {**decoder, "model": TINY_CAUSAL, "init": {"encoder": TINY}},
            ["data.crop_frames=16", "data.target_sample_rate=24000"],
        ),
    }
    out = {}
    for name, (recipe, extra) in recipes.items():
        cfg = load_train_config(recipe, [*common, *extra, f"output_dir={root / name}"])
        Trainer(cfg).fit()
        out[name] = root / name
    return out


def _codec_with_encoder(folder: Path, base: str, scale: float | None) -> str:
    """A codec folder: ``base`` with its encoder's weights multiplied by (1 + scale x noise)
    (None: random encoder weights)."""
    model = FocalCodec.from_pretrained(base)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.copy_(
                torch.randn(p.shape, generator=gen) * 0.1
                if scale is None
                else p * (1 + scale * torch.randn(p.shape, generator=gen))
            )
    model.save_pretrained(folder)
    return str(folder)


def test_stage_q_on_another_encoder_is_refused_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "codec"
    args = ["train", "--export", str(out), "--model", TINY, str(runs["q_random"]), f"encoder={TINY}", f"decoder={TINY}"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    ckpt = str(run_checkpoint(runs["q_random"]))
    assert ckpt in err[0] and f"encoder={TINY}" in err[0] and "init.encoder=random" in err[0], err[0]
    assert "train that stage on the exported encoder" in err[0]
    assert not out.exists()
    # the run trained on the tiny encoder exports with it
    assert (
        main(["train", "--export", str(out), "--model", TINY, str(runs["q"]), f"encoder={TINY}", f"decoder={TINY}"])
        == 0
    )


def test_tolerance_tells_rounding_from_another_encoder(runs, tmp_path):
    """The same weights up to float rounding (as the Hub's WavLM and a codec folder's may be)
    export; weights 1 % away (another WavLM of the same shape) are refused, and the message
    says which encoder the run was trained on."""
    rounding = _codec_with_encoder(tmp_path / "rounding", TINY, 1e-7)
    export_checkpoint(TINY, [str(runs["q"]), f"encoder={rounding}", f"decoder={TINY}"], tmp_path / "ok")
    other = _codec_with_encoder(tmp_path / "other", TINY, 1e-2)
    with pytest.raises(CheckpointError, match=f"export with encoder={TINY} ") as info:
        export_checkpoint(TINY, [str(runs["q"]), f"encoder={other}", f"decoder={TINY}"], tmp_path / "bad")
    assert "compressor, decompressor" in str(info.value)
    # what the probe measures: rounding is far below the tolerance, 1 % of the weights far above
    probe = torch.load(run_checkpoint(runs["q"]) / PROBE_FILE, weights_only=True)
    same = probe_difference(encoder_features(FocalCodec.from_pretrained(rounding).encoder), probe["features"])
    moved = probe_difference(encoder_features(FocalCodec.from_pretrained(other).encoder), probe["features"])
    assert same < PROBE_TOLERANCE / 100 and moved > PROBE_TOLERANCE * 10, (same, moved)


def test_decoder_is_checked_on_the_features_it_was_trained_on(runs, tmp_path):
    """Vocos (non-causal codec): its encoder must be the exported one. WaveNeXt trained on
    non-causal features exports into a causal codec, whose encoder gives other features."""
    random_encoder = _codec_with_encoder(tmp_path / "random", TINY, None)
    with pytest.raises(CheckpointError, match=r"\(decoder\) was trained on the features of another encoder"):
        export_checkpoint(
            TINY,
            [f"compressor={TINY}", f"decompressor={TINY}", str(runs["vocos"]), f"encoder={random_encoder}"],
            tmp_path / "bad",
        )
    export_checkpoint(
        TINY, [f"compressor={TINY}", f"decompressor={TINY}", str(runs["vocos"]), f"encoder={TINY}"], tmp_path / "vocos"
    )
    # the causal codec's encoder differs from the non-causal one WaveNeXt was trained on
    probe = torch.load(run_checkpoint(runs["wavenext"]) / PROBE_FILE, weights_only=True)
    assert probe["causal"] is False
    causal = FocalCodec.from_pretrained(TINY_CAUSAL).encoder
    assert probe_difference(encoder_features(causal), probe["features"]) > 0.1
    export_checkpoint(
        TINY_CAUSAL,
        [f"encoder={TINY_CAUSAL}", f"compressor={TINY_CAUSAL}", f"decompressor={TINY_CAUSAL}", str(runs["wavenext"])],
        tmp_path / "stream",
    )
    assert FocalCodec.from_pretrained(tmp_path / "stream").causal


def test_checkpoint_without_probe_exports_with_a_warning(runs, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    ckpt = run_checkpoint(runs["q_random"])
    (old / "parts.pt").write_bytes((ckpt / "parts.pt").read_bytes())  # a checkpoint from before probes
    args = [
        "train",
        "--export",
        str(tmp_path / "codec"),
        "--model",
        TINY,
        str(old),
        f"encoder={TINY}",
        f"decoder={TINY}",
    ]
    with pytest.warns(UserWarning, match="no encoder probe") as record:
        assert main(args) == 0
    assert len(record) == 1 and str(old) in str(record[0].message) and "\n" not in str(record[0].message)
    assert FocalCodec.from_pretrained(tmp_path / "codec").compressor is not None
