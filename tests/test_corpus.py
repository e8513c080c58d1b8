"""Corpus tokenization: shards equal solo encoding, resume is byte-exact, two processes (gloo)
give the same output as one, bad files are listed and skipped, read-back API and detokenize."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pyarrow as pa  # noqa: E402 - the corpus extra: pip install -e ".[corpus]"
import pyarrow.parquet as pq  # noqa: E402
import pytest
import soundfile as sf
import torch
from conftest import FIXTURES, SPEECH, fixture_model, speech_files

from focalcodec import audio as audio_module  # noqa: E402
from focalcodec.audio import load_audio, resample  # noqa: E402
from focalcodec.cli import main  # noqa: E402
from focalcodec.compression import encode_audio  # noqa: E402
from focalcodec.corpus import (  # noqa: E402
    CorpusItem,
    TokenCorpus,
    TokenDataset,
    collate_tokens,
    length_batches,
    list_corpus,
    tokenize_corpus,
)
from focalcodec.corpus import run as corpus_run  # noqa: E402
from focalcodec.errors import InputError  # noqa: E402
from focalcodec.windowing import Windowing  # noqa: E402

MODEL_DIR = FIXTURES / "tiny_50hz"
SHARD_SIZE = 2
GOOD_IDS = ["a_22k", "b_ogg", "c_mono48k", "sub/d_stereo", "sub/e_wav", "sub/f_short"]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """Six short real utterances in several formats, rates and channel counts, plus one
    corrupt file: 7 items, 4 shards of 2."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    src = [p for p in speech_files("eval") if p.name.startswith(("s2i_", "ravdess_"))][:6]
    clips = [load_audio(p).numpy()[: int(16000 * (0.5 + 0.1 * n))] for n, p in enumerate(src)]
    sf.write(root / "a_22k.wav", resample(clips[0], 16000, 22050), 22050)
    sf.write(root / "b_ogg.ogg", clips[1], 16000)
    sf.write(root / "c_mono48k.flac", resample(clips[2], 16000, 48000), 48000)
    sf.write(root / "sub" / "d_stereo.flac", np.stack([clips[3], 0.5 * clips[3]], axis=1), 16000)
    sf.write(root / "sub" / "e_wav.wav", clips[4], 16000, subtype="FLOAT")
    sf.write(root / "sub" / "f_short.wav", clips[5][:300], 16000)  # shorter than the CNN's receptive field
    (root / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt junk that is not audio")
    return root


@pytest.fixture(scope="module")
def reference(corpus_dir, tmp_path_factory) -> Path:
    """One uninterrupted single-process run (with a DataLoader worker process)."""
    out = tmp_path_factory.mktemp("ref") / "tokens"
    summary = _tokenize(corpus_dir, out, window=3, batch_seconds=1.5, num_workers=1)
    assert summary.num_utterances == 6 and summary.num_errors == 1 and summary.num_shards == 4
    assert summary.world_size == 1 and summary.skipped_shards == 0
    return out


def _tokenize(data: Path, out: Path, **options) -> object:
    """``tokenize_corpus`` with the tiny 50 Hz fixture model, this file's shard size, no progress."""
    options = {"model_source": str(MODEL_DIR), "shard_size": SHARD_SIZE, "progress": False, **options}
    return tokenize_corpus(data, out, fixture_model("tiny_50hz"), **options)


def _files(out: Path) -> dict:
    """Every file of an output folder (relative path -> bytes)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _cli_env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return env


def _tokenize_cmd(data: Path, out: Path) -> list:
    return [
        "-m",
        "focalcodec",
        "tokenize",
        "--data",
        str(data),
        "--out",
        str(out),
        "--model",
        str(MODEL_DIR),
        "--shard-size",
        str(SHARD_SIZE),
        "--sort-group",
        "3",
        "--batch-seconds",
        "1.5",
        "--workers",
        "0",
        "--quiet",
    ]


# -- the run's output ---------------------------------------------------------------------------
def test_tokens_equal_solo_encode(reference, corpus_dir):
    model = fixture_model("tiny_50hz")
    corpus = TokenCorpus(reference)
    assert corpus.ids() == GOOD_IDS  # sorted relative paths, the corrupt file left out
    for utt in corpus:
        sig = load_audio(corpus_dir / utt.path, warn=False)
        solo = model.encode(sig).tokens
        assert torch.equal(utt.tokens, solo), utt.id
        assert utt.num_samples == sig.numel()
        assert utt.duration == pytest.approx(sig.numel() / 16000)
        assert utt.tokens.numel() == int(model.num_tokens(sig.numel()))


def test_parquet_loads_with_pyarrow(reference):
    index = json.loads((reference / "index.json").read_text())
    tables = [pq.read_table(reference / s["file"]) for s in index["shards"]]
    for table, shard in zip(tables, index["shards"], strict=False):
        assert table.schema.names == ["id", "path", "duration", "num_samples", "num_tokens", "tokens"]
        assert table.schema.field("tokens").type == pa.list_(pa.int32())
        assert table.num_rows == shard["num_rows"]
        lens = [len(t) for t in table.column("tokens").to_pylist()]
        assert lens == table.column("num_tokens").to_pylist()
    whole = pq.read_table(reference / "shards")  # the folder holds only the shards
    assert whole.column("id").to_pylist() == GOOD_IDS
    assert whole.column("path").to_pylist()[:3] == ["a_22k.wav", "b_ogg.ogg", "c_mono48k.flac"]


def test_format_facts_in_the_docs_hold(reference, corpus_dir):
    """What docs/tokenize.md tells a reader without this package: shard k holds list items
    k * shard_size ... in order, its schema metadata names the plan and k, durations are
    samples / 16000, plan.json's files_sha256 is the sha256 of the compact [id, path] list."""
    index = json.loads((reference / "index.json").read_text())
    plan = json.loads((reference / "plan.json").read_text())
    items = list_corpus(corpus_dir)
    listed = json.dumps([[it.id, it.path] for it in items], sort_keys=True, separators=(",", ":"))
    assert plan["files_sha256"] == hashlib.sha256(listed.encode()).hexdigest()
    assert index["plan"] == plan["digest"] and plan["reading"] == 2 and index["version"] == 1
    for k, shard in enumerate(index["shards"]):
        table = pq.read_table(reference / shard["file"])
        meta = json.loads(table.schema.metadata[b"focalcodec"])
        assert meta == {"plan": plan["digest"], "shard": k}
        wanted = [it.id for it in items[k * plan["shard_size"] : (k + 1) * plan["shard_size"]] if it.id != "broken"]
        assert table.column("id").to_pylist() == wanted
        for n, d in zip(table.column("num_samples").to_pylist(), table.column("duration").to_pylist(), strict=True):
            assert d == n / 16000
    lines = (reference / "errors.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == ["id", "path", "reason"] and lines[1].split("\t")[:2] == ["broken", "broken.wav"]


def test_index_checksums_and_model_identity(reference):
    index = json.loads((reference / "index.json").read_text())
    model = fixture_model("tiny_50hz")
    assert index["model"]["fingerprint"] == model.fingerprint
    assert index["model"]["source"] == str(MODEL_DIR)
    assert index["model"]["codebook_size"] == model.codebook_size
    assert [s["file"] for s in index["shards"]] == [f"shards/shard-{k:06d}.parquet" for k in range(4)]
    for s in index["shards"]:
        assert hashlib.sha256((reference / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert index["num_utterances"] == 6 and index["num_errors"] == 1
    assert index["num_tokens"] == sum(s["num_tokens"] for s in index["shards"])
    TokenCorpus(reference, verify=True)


def test_corrupt_file_listed_with_reason_and_skipped(reference):
    errors = TokenCorpus(reference).errors()
    assert [(e["id"], e["path"]) for e in errors] == [("broken", "broken.wav")]
    assert "cannot read" in errors[0]["reason"]
    assert (reference / "errors.tsv").read_text().splitlines()[0] == "id\tpath\treason"
    assert "broken" not in TokenCorpus(reference)


# -- resume ----------------------------------------------------------------------------------------
def test_resume_after_crash_debris_is_byte_identical(reference, corpus_dir, tmp_path):
    """A crash can leave a shard without marker, a truncated shard, a temporary file and no
    index; the same command finishes the job with exactly the uninterrupted run's bytes."""
    out = tmp_path / "tokens"
    shutil.copytree(reference, out)
    (out / "markers" / "shard-000001.json").unlink()
    damaged = out / "shards" / "shard-000002.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    (out / "shards" / ".shard-000003.parquet.99999.tmp").write_bytes(b"partial")
    (out / "index.json").unlink()
    (out / "errors.tsv").unlink()
    summary = _tokenize(corpus_dir, out, batch_seconds=100.0, num_workers=0)
    assert summary.skipped_shards == 2
    assert _files(out) == _files(reference)


@pytest.mark.slow  # starts Python twice (about 15 s on 2 quiet cores)
def test_kill_and_resume_gives_identical_shards(reference, corpus_dir, tmp_path):
    out = tmp_path / "tokens"
    cmd = [sys.executable, *_tokenize_cmd(corpus_dir, out)]
    proc = subprocess.Popen(
        cmd, env=_cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while proc.poll() is None and not (out / "markers" / "shard-000000.json").exists():
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "index.json").exists()
    with pytest.raises(InputError, match="no index.json"):
        TokenCorpus(out)
    res = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "shards were already done" in res.stdout and "0 shards were already done" not in res.stdout
    assert _files(out) == _files(reference)


def test_max_duration_is_part_of_the_run(corpus_dir, tmp_path):
    """``--max-duration`` decides which files become rows: resuming with another limit would mix
    shards cut two ways, so it is refused like another model (it used to go through)."""
    out = tmp_path / "tokens"
    model = fixture_model("tiny_50hz")
    summary = tokenize_corpus(
        corpus_dir, out, model, shard_size=SHARD_SIZE, max_duration=0.75, num_workers=0, progress=False
    )
    assert summary.num_errors == 1 + 2  # the corrupt file and the two clips over 0.75 s (0.8 and 0.9 s)
    assert json.loads((out / "plan.json").read_text())["max_duration"] == 0.75
    for limit, said in ((None, "none"), (5.0, "5 s")):
        with pytest.raises(InputError, match=f"--max-duration 0.75 s then, {said} now"):
            tokenize_corpus(corpus_dir, out, model, shard_size=SHARD_SIZE, max_duration=limit, progress=False)
    again = tokenize_corpus(corpus_dir, out, model, shard_size=SHARD_SIZE, max_duration=0.75, progress=False)
    assert again.skipped_shards == again.num_shards


def test_output_folder_holding_other_files_is_refused(corpus_dir, tmp_path, capsys):
    """``-o`` naming the corpus itself (or any folder with other files) is refused before any
    work, even with --force (it used to get shards/, markers/ and a replaced errors.tsv); what a
    run killed at once leaves (empty shards/ and markers/) is taken up again."""
    data = tmp_path / "data"
    shutil.copytree(corpus_dir, data)
    (data / "errors.tsv").write_text("the user's own notes\n")
    before = _files(data)
    for extra in ([], ["--force"]):
        assert main(_tokenize_cmd(data, data)[2:] + extra) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "is not empty" in err and "\n" not in err
    assert _files(data) == before
    out = tmp_path / "tokens"
    (out / "shards").mkdir(parents=True)
    (out / "markers").mkdir()
    (out / ".DS_Store").write_bytes(b"\0")
    summary = tokenize_corpus(corpus_dir, out, fixture_model("tiny_50hz"), num_workers=0, progress=False)
    assert summary.num_utterances == len(GOOD_IDS)
    (out / "plan.json").write_text("[1]")  # not ours: named, not an internal error
    with pytest.raises(InputError, match="another tokenization run .*not a focalcodec-tokens plan"):
        tokenize_corpus(corpus_dir, out, fixture_model("tiny_50hz"), num_workers=0, progress=False)


def test_rerun_of_a_finished_run_says_nothing_to_do_and_all_failed_is_an_error(reference, corpus_dir, tmp_path, capsys):
    """The same command on a finished folder: a clear no-op line, no file touched. A corpus of
    which no file could be tokenized: exit code 1 and one error line (it used to exit 0)."""
    out = tmp_path / "tokens"
    shutil.copytree(reference, out)
    assert main(_tokenize_cmd(corpus_dir, out)[2:]) == 0
    assert capsys.readouterr().out.startswith("nothing to do: this run was already complete: 6 utterances")
    assert _files(out) == _files(reference)
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(corpus_dir / "broken.wav", bad / "x.wav")
    (bad / "y.flac").write_bytes(b"")
    assert main(_tokenize_cmd(bad, tmp_path / "bad_tokens")[2:]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no file could be tokenized: all 2 failed") and "errors.tsv" in err[-1]


def test_disk_full_is_one_clear_error_and_the_rerun_resumes(reference, corpus_dir, tmp_path, monkeypatch, capsys):
    """A full disk while writing a shard: one ``error:`` line naming the shard and saying how to
    go on (pyarrow's own message named neither), finished shards kept, no temporary left, and
    the same command then finishes with the uninterrupted run's bytes."""
    out = tmp_path / "tokens"
    real_write = pq.write_table
    calls = []

    def full_disk(table, where, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            real_write(table.slice(0, 1), where, **kwargs)  # part of the file made it
            raise OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    args = _tokenize_cmd(corpus_dir, out)[2:]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: cannot write ")
    assert "shard-000001.parquet: No space left on device" in err and "rerun the same command to resume" in err
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-000000.parquet"]
    monkeypatch.undo()
    summary = _tokenize(corpus_dir, out, num_workers=0)
    assert summary.skipped_shards == 1
    assert _files(out) == _files(reference)


@pytest.mark.slow  # starts Python twice (about 15 s on 2 quiet cores)
def test_ctrl_c_is_one_line_and_the_rerun_resumes(reference, corpus_dir, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, DataLoader workers included) ends the run
    with "error: interrupted" alone: samples cross from the workers as NumPy arrays, because
    tensors pass file descriptors through a helper thread that printed a traceback when the
    main process went away. The same command then resumes to the uninterrupted run's bytes."""
    sample = corpus_run._AudioFiles(list_corpus(corpus_dir), 16000, None, 16000 * 64)[0][1]
    assert isinstance(sample, np.ndarray)
    out = tmp_path / "tokens"
    cmd = [sys.executable, *_tokenize_cmd(corpus_dir, out)]
    cmd[cmd.index("--workers") + 1] = "1"

    def own_group_with_default_sigint():
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        cmd,
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=own_group_with_default_sigint,
    )
    while proc.poll() is None and not (out / "markers" / "shard-000000.json").exists():
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "the run finished before it could be interrupted"
    assert err.strip() == "error: interrupted"
    res = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert _files(out) == _files(reference)


def test_other_run_in_same_folder_is_refused(reference, corpus_dir, tmp_path):
    """Resuming with another shard size, model or weights is refused, and the message says
    which (tokens of two models in one corpus would be a silent disaster); nothing is touched."""
    out = tmp_path / "tokens"
    shutil.copytree(reference, out)
    with pytest.raises(InputError, match="another tokenization run .*shard size 2 then, 3 now"):
        tokenize_corpus(corpus_dir, out, fixture_model("tiny_50hz"), shard_size=3, progress=False)
    with pytest.raises(InputError, match="another model: tiny_50hz .* then, tiny_25hz"):
        tokenize_corpus(corpus_dir, out, fixture_model("tiny_25hz"), shard_size=SHARD_SIZE, progress=False)
    other = copy.deepcopy(fixture_model("tiny_50hz"))
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    new_sha = other.weights_sha256[:16]
    with pytest.raises(InputError, match=f"other weights of tiny_50hz: sha256 [0-9a-f]{{16}} then, {new_sha} now"):
        tokenize_corpus(corpus_dir, out, other, shard_size=SHARD_SIZE, progress=False)
    assert _files(out) == _files(reference)
    plan = json.loads((out / "plan.json").read_text())
    del plan["reading"]  # a run started before files were read as `focalcodec encode` reads them
    plan["digest"] = "0" * 64
    (out / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(InputError, match="started by an older focalcodec"):
        tokenize_corpus(corpus_dir, out, fixture_model("tiny_50hz"), shard_size=SHARD_SIZE, progress=False)


# -- scale-out -------------------------------------------------------------------------------------
@pytest.mark.slow  # starts three Python processes (about 15 s on 2 quiet cores)
def test_two_processes_gloo_same_output_as_one(reference, corpus_dir, tmp_path):
    """torchrun with 2 ranks on CPU (gloo): ranks split the shards, rank 0 writes the index,
    and every file equals the single-process run's."""
    out = tmp_path / "tokens"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        *_tokenize_cmd(corpus_dir, out),
    ]
    res = subprocess.run(cmd, env=_cli_env(), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "on 2 processes" in res.stdout
    assert _files(out) == _files(reference)


# -- reading back ----------------------------------------------------------------------------------
def test_fetch_by_id_and_position(reference):
    corpus = TokenCorpus(reference, cache_shards=1)
    assert len(corpus) == 6
    by_order = list(corpus)
    for i, utt in enumerate(by_order):
        assert corpus[utt.id].id == utt.id and torch.equal(corpus[utt.id].tokens, utt.tokens)
        assert torch.equal(corpus[i].tokens, utt.tokens)
    assert corpus[-1].id == GOOD_IDS[-1]
    assert by_order[0].tokens.dtype == torch.int64
    with pytest.raises(KeyError, match="nope"):
        corpus["nope"]
    with pytest.raises(IndexError):
        corpus[6]
    with pytest.raises(TypeError, match="position.*float"):
        corpus[1.5]  # was read as corpus[1]


def test_collate_takes_arrays_and_refuses_what_is_not_tokens():
    """Lists and NumPy arrays collate like tensors (they failed with AttributeError); float
    tokens and items without tokens are one InputError naming the item."""
    got = collate_tokens([{"id": "a", "tokens": [1, 2, 3]}, {"id": "b", "tokens": np.array([4], dtype=np.int32)}])
    assert torch.equal(got["tokens"], torch.tensor([[1, 2, 3], [4, 0, 0]])) and got["lengths"].tolist() == [3, 1]
    with pytest.raises(InputError, match="item 1.*integers"):
        collate_tokens([{"id": "a", "tokens": [1]}, {"id": "b", "tokens": torch.tensor([0.5])}])
    with pytest.raises(InputError, match="item 0.*'tokens'"):
        collate_tokens([{"id": "a"}])


def test_torch_dataset_and_collate(reference):
    ds = TokenDataset(reference, max_tokens=20)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_tokens)
    batches = list(loader)
    assert [b["tokens"].shape[0] for b in batches] == [4, 2]
    corpus = TokenCorpus(reference)
    b = batches[0]
    assert b["ids"] == GOOD_IDS[:4]
    for row, uid in enumerate(b["ids"]):
        want = corpus[uid].tokens[:20]
        n = int(b["lengths"][row])
        assert n == want.numel() and torch.equal(b["tokens"][row, :n], want)
        assert (b["tokens"][row, n:] == 0).all()


def test_detokenize_cli_decodes_chosen_ids(reference, tmp_path):
    out = tmp_path / "audio"
    assert main(["detokenize", str(reference), "--ids", "sub/d_stereo", "b_ogg", "--out", str(out)]) == 0
    model = fixture_model("tiny_50hz")
    corpus = TokenCorpus(reference)
    for uid in ("sub/d_stereo", "b_ogg"):
        audio, rate = sf.read(out / f"{uid}.wav", dtype="float32")
        want = model.decode(corpus[uid].tokens).audio.numpy()
        assert rate == model.sample_rate_output
        # The original length (the shard's num_samples), as a .fc decodes, not T * hop (the
        # tiny 50 Hz model's T * hop is shorter: the last sample is repeated, as .fc decoding does).
        n = model.num_output_samples(corpus[uid].num_samples)
        assert audio.shape == (n,) and n != want.shape[0]
        want = np.concatenate([want, np.repeat(want[-1:], max(0, n - want.shape[0]))])[:n]
        np.testing.assert_allclose(audio, np.clip(want, -1, 1), atol=1.0 / 32768 + 1e-6)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == ["b_ogg.wav", "sub/d_stereo.wav"]
    every = tmp_path / "every"  # every utterance (rates, channels, one shorter than the receptive field)
    assert main(["detokenize", str(reference), "--all", "-o", str(every), "--output-rate", "24000", "-q"]) == 0
    for uid in GOOD_IDS:
        assert sf.info(str(every / f"{uid}.wav")).frames == corpus[uid].num_samples * 24000 // 16000


def test_detokenize_refuses_unknown_ids_and_other_model(reference, tmp_path, capsys):
    assert main(["detokenize", str(reference), "--ids", "missing", "--out", str(tmp_path)]) == 1
    assert "not in" in capsys.readouterr().err
    other = str(FIXTURES / "tiny_25hz")
    assert main(["detokenize", str(reference), "--ids", "b_ogg", "--out", str(tmp_path), "--model", other]) == 1
    assert "pass that model with --model" in capsys.readouterr().err


# -- file lists ------------------------------------------------------------------------------------
def test_manifest_with_missing_file(tmp_path):
    """A manifest's ids and order are kept; a missing file lands in the errors list."""
    clip = sorted((SPEECH / "eval").glob("s2i_*.flac"))[0]
    x = load_audio(clip).numpy()[:8000]
    sf.write(tmp_path / "one.wav", x, 16000)
    sf.write(tmp_path / "two.wav", x[:6000], 16000)
    manifest = tmp_path / "list.tsv"
    manifest.write_text("id\tpath\tduration\nz\ttwo.wav\t0.375\ny\tgone.wav\t1.0\nx\tone.wav\t0.5\n")
    out = tmp_path / "tokens"
    summary = tokenize_corpus(manifest, out, fixture_model("tiny_50hz"), num_workers=0, progress=False)
    assert summary.num_utterances == 2 and summary.num_errors == 1
    corpus = TokenCorpus(out)
    assert corpus.ids() == ["z", "x"]
    assert [(e["id"], e["path"]) for e in corpus.errors()] == [("y", "gone.wav")]
    assert "not found" in corpus.errors()[0]["reason"]
    assert torch.equal(corpus["x"].tokens, fixture_model("tiny_50hz").encode(torch.from_numpy(x)).tokens)


def test_retry_errors_redoes_the_shards_that_skipped_files(tmp_path):
    """A file missing during the run (network storage, a copy under way) stays in errors.tsv on
    a plain rerun; --retry-errors redoes the shards that skipped files, and the result equals a
    fresh run's."""
    clip = sorted((SPEECH / "eval").glob("s2i_*.flac"))[0]
    x = load_audio(clip).numpy()[:8000]
    for name, n in (("a", 4000), ("b", 6000), ("d", 7000)):  # c.wav is missing at first
        sf.write(tmp_path / f"{name}.wav", x[:n], 16000)
    manifest = tmp_path / "list.tsv"
    manifest.write_text("path\na.wav\nb.wav\nc.wav\nd.wav\n")
    out = tmp_path / "tokens"
    args = ["tokenize", "--data", str(manifest), "-o", str(out), "--model", str(MODEL_DIR)]
    args += ["--shard-size", "2", "--workers", "0", "-q"]
    assert main(args) == 0 and [e["id"] for e in TokenCorpus(out).errors()] == ["c"]
    sf.write(tmp_path / "c.wav", x[:5000], 16000)  # restored
    assert main(args) == 0 and [e["id"] for e in TokenCorpus(out).errors()] == ["c"]
    assert main(args + ["--retry-errors"]) == 0
    assert TokenCorpus(out).errors() == [] and TokenCorpus(out).ids() == ["a", "b", "c", "d"]
    assert main(args[:4] + [str(tmp_path / "fresh")] + args[5:]) == 0
    assert _files(out) == _files(tmp_path / "fresh")


def test_list_corpus_shared_manifest_and_folder():
    items = list_corpus(SPEECH / "eval" / "manifest.tsv")
    assert len(items) == 210 and all(Path(it.file).is_file() for it in items)
    assert items[0].id == "ls_testother_1688-142285-0007" and items[0].duration == pytest.approx(7.06)
    folder = list_corpus(SPEECH / "eval")
    assert [it.path for it in folder] == sorted(p.name for p in speech_files("eval"))


def test_list_corpus_errors(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(100, dtype=np.float32), 16000)
    sf.write(tmp_path / "a.flac", np.zeros(100, dtype=np.float32), 16000)
    with pytest.raises(InputError, match="more than once"):
        list_corpus(tmp_path)
    with pytest.raises(InputError, match="is an audio file"):
        list_corpus(tmp_path / "a.wav")
    with pytest.raises(InputError, match="does not exist"):
        list_corpus(tmp_path / "nothing")
    bad = tmp_path / "m.csv"
    bad.write_text("name,seconds\na,1\n")
    with pytest.raises(InputError, match="no path column"):
        list_corpus(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        list_corpus(tmp_path / "empty")
    with pytest.raises(InputError, match="is a folder: --root only applies to a manifest"):
        list_corpus(tmp_path, root=tmp_path / "empty")  # was ignored without a word
    # Paths that start from another folder: refused before any work, not hours of "not found".
    (tmp_path / "lists").mkdir()
    elsewhere = tmp_path / "lists" / "train.tsv"
    elsewhere.write_text("path\nspk1/u1.wav\nspk1/u2.wav\n")
    with pytest.raises(InputError, match="none of the first 2 files listed .* pass --root"):
        list_corpus(elsewhere)
    with pytest.raises(InputError, match="none of the first 2 files"):
        list_corpus(elsewhere, root=tmp_path / "empty")
    (tmp_path / "spk1").mkdir()
    sf.write(tmp_path / "spk1" / "u2.wav", np.zeros(100, dtype=np.float32), 16000)
    assert [it.file for it in list_corpus(elsewhere)] == [str(tmp_path / "spk1" / f) for f in ("u1.wav", "u2.wav")]


def test_list_corpus_follows_linked_folders_and_reports_broken_links(tmp_path):
    """A corpus assembled from symbolic links: linked speaker folders are read (they used to be
    skipped without a word), a loop is walked once, and a broken link reaches the errors list."""
    store, data = tmp_path / "store", tmp_path / "data"
    (store / "spk1").mkdir(parents=True)
    data.mkdir()
    for name in ("u1.wav", "u2.wav"):
        sf.write(store / "spk1" / name, np.zeros(800, dtype=np.float32), 16000)
    sf.write(data / "own.wav", np.zeros(800, dtype=np.float32), 16000)
    (data / "spk1").symlink_to(store / "spk1", target_is_directory=True)
    (data / "loop").symlink_to(data, target_is_directory=True)
    (data / "gone.wav").symlink_to(tmp_path / "deleted.wav")
    assert [it.id for it in list_corpus(data)] == ["gone", "own", "spk1/u1", "spk1/u2"]
    summary = tokenize_corpus(data, tmp_path / "tokens", fixture_model("tiny_50hz"), num_workers=0, progress=False)
    assert summary.num_utterances == 3
    (err,) = TokenCorpus(tmp_path / "tokens").errors()
    assert err["id"] == "gone" and "not found" in err["reason"]


def test_length_batches_respect_budget():
    lengths = [5, 100, 40, 41, 7, 100, 300, 1]
    batches = length_batches(lengths, max_batch_samples=200, max_batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 200
    assert batches[0] == [6]  # longer than the budget: alone
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)


def test_items_list_and_bad_arguments(tmp_path, corpus_dir):
    items = [CorpusItem(id="only", path="a_22k.wav", file=str(corpus_dir / "a_22k.wav"))]
    with pytest.raises(InputError, match="shard_size"):
        tokenize_corpus(items, tmp_path / "o", fixture_model("tiny_50hz"), shard_size=0)
    summary = tokenize_corpus(items, tmp_path / "o", fixture_model("tiny_50hz"), num_workers=0, progress=False)
    assert summary.num_utterances == 1 and TokenCorpus(tmp_path / "o").ids() == ["only"]


def test_tokens_equal_focalcodec_encode_whatever_the_rate_and_length(tmp_path, monkeypatch):
    """Each file gets exactly the tokens ``focalcodec encode`` (:func:`encode_audio`) gives it:
    resampled files have its length rule (floor(frames * 16000 / rate); one token more for some
    lengths before), long ones its windows, and a long 16 kHz FLAC is read window by window
    (never loaded whole) as encode reads it."""
    speech = np.concatenate([load_audio(p).numpy() for p in speech_files("eval")[:6]])
    files = {}
    for n, (rate, seconds) in enumerate([(22050, 0.125), (44100, 0.37), (8000, 0.61), (22050, 1.5), (16000, 1.5)]):
        x = speech[n * 800 : n * 800 + int(seconds * 16000)]
        name = f"f{n}_{rate}.{'flac' if rate == 16000 else 'wav'}"
        sf.write(tmp_path / name, resample(x, 16000, rate) if rate != 16000 else x, rate)
        files[name.split(".")[0]] = tmp_path / name
    model = fixture_model("tiny_50hz")
    windowing = Windowing(window=1.0, context=0.1, lookahead=0.1)  # one pass up to 1.2 s
    loaded = []
    real_read = audio_module.read_audio

    def tracking_read(path):
        loaded.append(Path(path).name)
        return real_read(path)

    monkeypatch.setattr(audio_module, "read_audio", tracking_read)
    out = tmp_path / "tokens"
    summary = tokenize_corpus(tmp_path, out, model, windowing=windowing, num_workers=0, progress=False)
    monkeypatch.undo()
    assert summary.num_utterances == 5 and summary.num_errors == 0
    corpus = TokenCorpus(out)
    for uid, path in files.items():
        expected = encode_audio(path, model, windowing=windowing)
        assert torch.equal(corpus[uid].tokens, torch.as_tensor(expected.tokens).flatten()), uid
    assert "f4_16000.flac" not in loaded  # read on demand, window by window


def test_long_files_are_encoded_as_they_come_not_held_in_a_sort_group(tmp_path, monkeypatch):
    """Files longer than one window are encoded alone, window by window; they used to be held
    until their whole sort group (256 files) was read, so a corpus of hour-long recordings
    needed 256 of them in memory. Now at most one is alive."""
    speech = np.concatenate([load_audio(p).numpy() for p in speech_files("eval")[:6]])
    for n in range(3):  # 1.5 s at 22.05 kHz: loaded and resampled
        sf.write(tmp_path / f"long{n}.wav", resample(speech[n * 800 : n * 800 + 24000], 16000, 22050), 22050)
    sf.write(tmp_path / "short.wav", speech[:8000], 16000)
    model = fixture_model("tiny_50hz")
    windowing = Windowing(window=1.0, context=0.1, lookahead=0.1)  # one pass up to 1.2 s
    handed_out = []
    alive_at_encode = []
    real_getitem, real_encode_long = corpus_run._AudioFiles.__getitem__, corpus_run.encode_long

    def tracked_getitem(self, i):
        item = real_getitem(self, i)
        if isinstance(item[1], np.ndarray) and item[1].size > 16000:  # a tensor made from it keeps it alive
            handed_out.append(weakref.ref(item[1]))
        return item

    def counting_encode_long(model, sig, windowing):
        alive_at_encode.append(sum(ref() is not None for ref in handed_out))
        return real_encode_long(model, sig, windowing)

    monkeypatch.setattr(corpus_run._AudioFiles, "__getitem__", tracked_getitem)
    monkeypatch.setattr(corpus_run, "encode_long", counting_encode_long)
    summary = tokenize_corpus(tmp_path, tmp_path / "tokens", model, windowing=windowing, num_workers=0, progress=False)
    assert summary.num_utterances == 4 and alive_at_encode == [1, 1, 1]


def test_encoding_failure_of_one_item_spares_its_batch(tmp_path, corpus_dir, monkeypatch):
    """A batch that fails is retried item by item: only the culprit lands in the errors."""
    model = fixture_model("tiny_50hz")
    names = ["a_22k.wav", "b_ogg.ogg", "c_mono48k.flac"]
    items = [CorpusItem(id=n.split(".")[0], path=n, file=str(corpus_dir / n)) for n in names]
    bad_len = load_audio(corpus_dir / "b_ogg.ogg").numel()
    real_encode = model.encode

    def flaky_encode(wav, lengths=None):
        if lengths is not None and bad_len in [int(n) for n in lengths]:
            raise RuntimeError("out of memory (simulated)")
        return real_encode(wav, lengths)

    monkeypatch.setattr(model, "encode", flaky_encode)
    summary = tokenize_corpus(items, tmp_path / "o", model, num_workers=0, progress=False)
    corpus = TokenCorpus(tmp_path / "o")
    assert corpus.ids() == ["a_22k", "c_mono48k"] and summary.num_errors == 1
    (err,) = corpus.errors()
    assert err["id"] == "b_ogg" and "out of memory (simulated)" in err["reason"]
    monkeypatch.undo()
    assert torch.equal(corpus["c_mono48k"].tokens, model.encode(load_audio(corpus_dir / "c_mono48k.flac")).tokens)


def test_autocast_run_is_its_own_run(reference, corpus_dir, tmp_path):
    """``--autocast float16``: tokens close to the float32 run's, the dtype recorded in the
    index, and a float32 resume into that folder refused (it would mix precisions)."""
    out = tmp_path / "tokens"
    args = _tokenize_cmd(corpus_dir, out)[2:] + ["--autocast", "float16"]
    assert main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert "float16" in json.dumps(index)
    fp16, fp32 = TokenCorpus(out), TokenCorpus(reference)
    assert fp16.ids() == fp32.ids()
    same = total = 0
    for key in fp32.ids():
        a, b = fp16[key].tokens, fp32[key].tokens
        assert a.shape == b.shape
        same += int((a == b).sum())
        total += a.numel()
    assert same / total > 0.97  # measured 0.994 (1 of 171 tokens)
    with pytest.raises(InputError, match="another tokenization run"):
        tokenize_corpus(corpus_dir, out, fixture_model("tiny_50hz"), shard_size=SHARD_SIZE, progress=False)
    with pytest.raises(InputError, match="autocast"):
        tokenize_corpus(corpus_dir, tmp_path / "x", fixture_model("tiny_50hz"), autocast="int8")
