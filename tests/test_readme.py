"""README and docs/*.md snippets are tests: every Python snippet runs as written (with fixture
models instead of the Hub checkpoints and local files for the names it reads, since tests are
offline), or is listed in ``SNIPPETS`` with the test that runs it or why it cannot run here;
every documented ``focalcodec`` command line parses."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import FIXTURES, ROOT, fixture_model, speech_files

EXAMPLE = ROOT / "examples" / "speech.flac"
DOCS = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]
HUB = {  # Hub names in snippets -> the fixture model standing in for them
    '"lucadellalib/focalcodec_50hz_4k_causal"': repr(str(FIXTURES / "tiny_causal_4k")),
    '"lucadellalib/focalcodec_50hz"': repr(str(FIXTURES / "tiny_50hz")),
}

# Every Python snippet of README.md and docs/*.md, by a string only it holds: the test file
# that runs it (which must hold that string too), or why it is not run.
SNIPPETS = {
    ("README.md", "codec.decode(tokens, n_tokens)"): "tests/test_readme.py",
    ("README.md", "codec.sig_to_toks(chunk, enc_state, comp_state"): "tests/test_readme.py",
    ("README.md", "focalcodec.compress("): "tests/test_readme.py",
    ("README.md", "for piece in pieces:"): "tests/test_readme.py",
    ("README.md", 'alice = engine.open(mode="resynth")'): "tests/test_readme.py",
    ("README.md", "wav = convert(codec"): "tests/test_readme.py",
    ("README.md", "focalcodec.serve.client import health, stream"): "tests/test_readme_serve.py",
    ("README.md", "estimate_delay"): "tests/test_eval_align.py",
    ("README.md", 'TokenCorpus("tokens/")'): "tests/test_readme.py",
    ("README.md", "torch.autocast"): "tests/test_readme.py",
    ("docs/bitstream.md", "FrameWriter(f,"): "tests/test_readme.py",
    ("docs/bitstream.md", "stream.check_model(codec)"): "tests/test_readme.py",
    ("docs/serve.md", "async def talk"): "tests/test_readme_serve.py",
    ("docs/streaming.md", "for piece in mic_pieces:"): "tests/test_readme.py",
    ("docs/streaming.md", "EngineFull, StreamEngine"): "tests/test_readme.py",
    ("docs/streaming.md", "stream_encode.onnx"): "tests/test_export_stream.py",
    ("docs/tokenize.md", 'TokenCorpus("tokens/", verify=True)'): "tests/test_readme.py",
    ("docs/training.md", 'from_pretrained("out/focalcodec_50hz")'): "not run: it loads the folder a training run "
    "exports (tests/test_train.py exports and loads one)",
    ("docs/vc.md", 'speaker.save("alice.safetensors")'): "tests/test_readme.py",
}


def python_blocks(doc: str = "README.md") -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.S)


def snippet(doc: str, marker: str) -> str:
    """The one Python snippet of ``doc`` that holds ``marker``."""
    found = [b for b in python_blocks(doc) if marker in b]
    assert len(found) == 1, f"{doc}: {len(found)} Python snippets hold {marker!r} (one expected)"
    return found[0]


def run_snippet(doc: str, marker: str, scope: dict | None = None, files: dict | None = None) -> dict:
    """Run the snippet of ``doc`` holding ``marker`` with Hub names replaced by fixture models
    and the quoted file names of ``files`` by real paths; ``scope`` supplies the names a reader
    brings (the audio, a chunk). Returns the snippet's variables."""
    code = snippet(doc, marker)
    for old, new in {**HUB, **{f'"{k}"': repr(str(v)) for k, v in (files or {}).items()}}.items():
        if old.startswith('"lucadellalib/'):
            code = code.replace(old, new)
        else:
            assert old in code, f"{doc}: the snippet holding {marker!r} no longer reads {old}"
            code = code.replace(old, new)
    scope = dict(scope or {})
    exec(compile(code, doc, "exec"), scope)
    return scope


def test_every_python_snippet_is_run_or_excused() -> None:
    """A snippet added to the README or docs must be run by a test (or say why it cannot be),
    and a listed one must still exist and still be run where the list says."""
    problems = []
    for doc in DOCS:
        for block in python_blocks(doc):
            keys = [m for d, m in SNIPPETS if d == doc and m in block]
            if len(keys) != 1:
                first = block.strip().splitlines()[0]
                problems.append(
                    f"{doc}: snippet starting {first!r} matches {len(keys)} SNIPPETS entries (one expected)"
                )
    for (doc, marker), where in SNIPPETS.items():
        if not any(marker in b for b in python_blocks(doc)):
            problems.append(f"{doc}: no snippet holds {marker!r} any more")
        if where.startswith("tests/") and marker not in (ROOT / where).read_text():
            problems.append(f"{where} does not run the snippet of {doc} holding {marker!r}")
    assert not problems, "\n".join(problems)


# -- documented command lines ---------------------------------------------------------------------
def command_lines(text: str) -> list[tuple[str, list[str]]]:
    """``(line, argv)`` of every ``focalcodec`` / ``-m focalcodec`` call in the shell blocks
    of a Markdown text. ``[--optional ...]`` groups (usage notation) are dropped."""
    out = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split(" #")[0])
            if line.lstrip().startswith("#"):
                continue
            for part in re.split(r"\s(?:&&|\|\||\||;)\s", line):
                words = shlex.split(part.replace("<", " "))
                for i, w in enumerate(words):
                    if w == "focalcodec" or (w == "-m" and words[i + 1 : i + 2] == ["focalcodec"]):
                        out.append((part.strip(), words[i + (1 if w == "focalcodec" else 2) :]))
                        break
    return out


def test_every_documented_command_line_parses() -> None:
    """Option names, sub-commands and choices in README.md and docs/*.md exist (the parser
    runs, the command does not)."""
    from focalcodec.cli import build_parser

    parser, problems, seen = build_parser(), [], 0
    for doc in DOCS:
        for line, argv in command_lines((ROOT / doc).read_text()):
            seen += 1
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    parser.parse_args(argv)
                except SystemExit as exc:
                    if exc.code:
                        problems.append(f"{doc}: {line}\n    {err.getvalue().strip()}")
    assert seen > 50, seen  # the extraction found the commands
    assert not problems, "\n".join(problems)


def test_the_command_line_check_catches_a_wrong_option() -> None:
    text = "```bash\nfocalcodec encode a.wav -o a.fc --windw 3   # typo\nx && python -m focalcodec info a.fc\n```\n"
    lines = command_lines(text)
    assert [argv for _, argv in lines] == [["encode", "a.wav", "-o", "a.fc", "--windw", "3"], ["info", "a.fc"]]
    from focalcodec.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        build_parser().parse_args(lines[0][1])


# -- README ---------------------------------------------------------------------------------------
def test_every_documented_dotted_name_exists() -> None:
    """``focalcodec.x.y`` names in README.md and docs/*.md import (modules, classes, functions)."""
    import importlib

    def resolve(name: str) -> None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:i]))
            except ImportError:
                continue
            for attr in parts[i:]:
                obj = getattr(obj, attr)
            return

    problems, seen = [], 0
    for doc in DOCS:
        for name in set(re.findall(r"`[^`\n]*?\b(focalcodec(?:\.\w+)+)", (ROOT / doc).read_text())):
            seen += 1
            try:
                resolve(name)
            except AttributeError as exc:
                problems.append(f"{doc}: {name}: {exc}")
    assert seen > 20 and not problems, "\n".join(problems)


def _commands(text: str) -> list[str]:
    """Shell commands of ``text`` split at ``&&`` and lines, without ``python -m``, quiet flags
    and output redirections (what CI adds to the README's command)."""
    out = []
    for line in text.splitlines():
        for cmd in line.split(" && "):
            words = [w for w in shlex.split(cmd) if w not in ("-q", "-qq", ">/dev/null")]
            if words[:2] == ["python", "-m"] and words[2:3] == ["pip"]:
                words = words[2:]
            out.append(" ".join(words))
    return out


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's install-and-test line and .ci/run are the same commands in the same order."""
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)[0].splitlines()
    line = block[block.index(next(b for b in block if b.startswith("# Install and run the tests"))) + 1]
    ci = [x for x in (ROOT / ".ci" / "run").read_text().splitlines() if x and not x.startswith(("#", "set ", "cd "))]
    assert _commands(line) == _commands("\n".join(ci))
    assert _commands("python -m pip install -q torch && ruff check . >/dev/null") == [
        "pip install torch",
        "ruff check .",
    ]


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope = run_snippet("README.md", "codec.decode(tokens, n_tokens)", files={"examples/speech.flac": EXAMPLE})
    assert (tmp_path / "speech_rec.wav").is_file()
    import torch

    codec, wav = scope["codec"], scope["wav"]
    assert scope["tokens"].shape[0] == 2 and scope["n_tokens"].tolist() == [len(codec.encode(wav).tokens), 62]
    assert torch.equal(scope["tokens"][1, :62], codec.encode(wav[:20000]).tokens)


@pytest.mark.usefixtures("one_thread")
def test_reference_streaming_states_snippet_runs(tiny_causal) -> None:
    """The README's two lines with the reference's positional states, run chunk after chunk,
    give the streaming tokens."""
    import torch

    from focalcodec.audio import load_audio
    from focalcodec.streaming import StreamEncoder

    wav = load_audio(EXAMPLE)[None, : 3 * 1280]
    scope = {"codec": tiny_causal, "enc_state": (), "comp_state": (), "dec_state": (), "voc_state": ()}
    toks, audio = [], []
    for i in range(3):
        scope = run_snippet("README.md", "codec.sig_to_toks(chunk, enc_state, comp_state", scope | {
            "chunk": wav[:, i * 1280 : (i + 1) * 1280]
        })  # fmt: skip
        toks.append(scope["toks"])
        audio.append(scope["audio"])
    assert torch.equal(torch.cat(toks, 1)[0], StreamEncoder(tiny_causal).push(wav[0]))
    assert torch.cat(audio, 1).shape == (1, 3 * tiny_causal.num_output_samples(1280))


def test_compress_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    scope = run_snippet("README.md", "focalcodec.compress(", files={"speech.flac": EXAMPLE})
    info = sf.info(str(EXAMPLE))
    assert scope["blob"] == (tmp_path / "speech.fc").read_bytes()
    assert scope["rate"] == info.samplerate and scope["audio"].shape[-1] == info.frames  # output_rate="input"
    stream = scope["stream"]
    assert stream.tokens.shape == (scope["codec"].num_tokens(int(16000 * info.duration)),)
    assert stream.tokens.dtype == np.int64
    assert abs(stream.duration - info.duration) < 1e-3 and stream.info()["duration_s"] == pytest.approx(stream.duration)


@pytest.mark.usefixtures("one_thread")
def test_stream_codec_snippet_runs(tiny_causal) -> None:
    """The README's StreamCodec loop: the flush after the pieces gives what one push of the
    whole signal and a flush give."""
    import torch

    from focalcodec.audio import load_audio
    from focalcodec.streaming import StreamCodec

    wav = load_audio(EXAMPLE)[:7000]
    pieces = [wav[:1000], wav[1000:1001], wav[1001:]]
    scope = run_snippet("README.md", "for piece in pieces:", {"pieces": pieces})
    solo = StreamCodec(tiny_causal)
    solo.push(wav)
    toks, audio = solo.flush()
    assert torch.equal(scope["toks"], toks) and torch.allclose(scope["audio"], audio, atol=1e-5)
    assert audio.shape[-1] == 1920 * (toks.shape[-1] // 4)


@pytest.mark.usefixtures("one_thread")
def test_vc_snippet_runs(tmp_path: Path) -> None:
    source, ref = speech_files()[0], speech_files()[1]
    scope = run_snippet("README.md", "wav = convert(codec", files={"ref.wav": ref, "source.wav": source})
    assert scope["wav"].ndim == 1 and scope["wav"].shape[0] == sf.info(str(source)).frames


def _tokens_dir(root: Path) -> Path:
    """A tokenized two-utterance corpus with the id the docs fetch (``spk1/utt3``)."""
    from focalcodec.audio import load_audio
    from focalcodec.corpus import tokenize_corpus

    (root / "audio" / "spk1").mkdir(parents=True)
    for name, path in (("utt1", speech_files()[0]), ("utt3", speech_files()[1])):
        sf.write(root / "audio" / "spk1" / f"{name}.flac", load_audio(path).numpy()[:8000], 16000)
    tokenize_corpus(root / "audio", root / "tokens", fixture_model("tiny_50hz"), num_workers=0, progress=False)
    return root / "tokens"


@pytest.mark.usefixtures("one_thread")
def test_token_corpus_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's and docs/tokenize.md's TokenCorpus snippets on a tokenized corpus."""
    _tokens_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    scope = run_snippet("README.md", 'TokenCorpus("tokens/")')
    batch = next(iter(scope["loader"]))
    assert batch["tokens"].shape[0] == 2 and batch["ids"] == ["spk1/utt1", "spk1/utt3"]
    scope = run_snippet("docs/tokenize.md", 'TokenCorpus("tokens/", verify=True)')
    batch = next(iter(scope["loader"]))
    n = fixture_model("tiny_50hz").num_tokens(8000)  # 0.5 s each
    assert batch["tokens"].ndim == 2 and batch["lengths"].tolist() == [n, n]
    assert scope["corpus"]["spk1/utt3"].tokens.shape == (n,)


def test_reduced_precision_snippet_runs() -> None:
    """The README's autocast snippet (on CPU, with a fixture model) gives float32 audio and
    int64 tokens close to the float32 ones."""
    import torch

    from focalcodec import FocalCodec

    block = snippet("README.md", "torch.autocast")
    codec = FocalCodec.from_pretrained(str(FIXTURES / "tiny_50hz"))
    sig = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(0))
    scope: dict = {"torch": torch, "codec": codec, "sig": sig}
    exec(compile(block.replace('"cuda"', '"cpu"'), "README.md", "exec"), scope)
    with torch.inference_mode():
        ref = codec.sig_to_toks(sig)
    assert scope["toks"].dtype == torch.int64 and scope["audio"].dtype == torch.float32
    assert (scope["toks"] == ref).float().mean() > 0.9


@pytest.mark.usefixtures("one_thread")
def test_stream_engine_snippet_runs() -> None:
    """The README's StreamEngine snippet (tiny causal fixture, the example speech): each stream
    gets what it gets alone."""
    import torch

    from focalcodec import FocalCodec
    from focalcodec.streaming import StreamCodec, StreamEncoder

    codec = FocalCodec.from_pretrained(str(FIXTURES / "tiny_causal_4k"))
    scope = run_snippet(
        "README.md", 'alice = engine.open(mode="resynth")', {"codec": codec}, {"examples/speech.flac": EXAMPLE}
    )
    speech, got, alice, bob = scope["speech"], scope["got"], scope["alice"], scope["bob"]
    assert got[alice][-1].flushed and not any(out.flushed for out in got[bob])
    solo = StreamCodec(codec)
    (t1, a1), (t2, a2) = solo.push(speech), solo.flush()
    assert torch.equal(torch.cat([out.tokens for out in got[alice]]), torch.cat([t1, t2]))
    torch.testing.assert_close(torch.cat([out.audio for out in got[alice]]), torch.cat([a1, a2]), atol=1e-5, rtol=0)
    pushed = speech[: (len(speech) + 1) // 2]
    bob_toks = torch.cat([out.tokens for out in got[bob]])
    assert torch.equal(bob_toks, StreamEncoder(codec).push(pushed)[: bob_toks.shape[0]])
    assert bob_toks.shape[0] == 4 * (len(pushed) // 1280)


# -- docs/*.md ------------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_frame_writer_snippet_runs(tmp_path: Path, tiny_causal) -> None:
    """docs/bitstream.md: frames written (and flushed) are read back while the writer is open."""
    import torch

    from focalcodec.streamfile import FrameReader

    tokens = torch.arange(12) * 300
    path = tmp_path / "x.fcs"
    with open(path, "wb") as f, open(path, "rb") as g:
        scope = run_snippet(
            "docs/bitstream.md", "FrameWriter(f,", {"f": f, "g": g, "codec": tiny_causal, "tokens": tokens}
        )
    np.testing.assert_array_equal(scope["tokens"], tokens[8:])  # the loop variable: the last frame read
    with open(path, "rb") as g:
        np.testing.assert_array_equal(np.concatenate(list(FrameReader(g))), tokens)


def test_compressed_audio_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny50) -> None:
    import focalcodec
    from focalcodec.bitstream import ModelMismatchError

    monkeypatch.chdir(tmp_path)
    focalcodec.compress(EXAMPLE, tiny50, "speech.fc")
    scope = run_snippet("docs/bitstream.md", "stream.check_model(codec)", {"codec": tiny50})
    assert scope["data"] == (tmp_path / "speech.fc").read_bytes()
    other = focalcodec.FocalCodec.from_pretrained(FIXTURES / "tiny_25hz")
    with pytest.raises(ModelMismatchError):
        run_snippet("docs/bitstream.md", "stream.check_model(codec)", {"codec": other})


@pytest.mark.usefixtures("one_thread")
def test_stream_halves_snippet_runs(tiny_causal) -> None:
    """docs/streaming.md: the encoder and decoder halves, piece by piece, then flushed."""
    import torch

    from focalcodec.audio import load_audio
    from focalcodec.streaming import StreamCodec

    wav = load_audio(EXAMPLE)[:5000]
    scope = run_snippet("docs/streaming.md", "for piece in mic_pieces:", {"mic_pieces": [wav[:0], wav[:1], wav[1:]]})
    solo = StreamCodec(tiny_causal)
    solo.push(wav)
    toks, audio = solo.flush()
    assert torch.equal(scope["toks"], toks) and scope["audio"].shape == (1920 * (toks.shape[0] // 4),)


@pytest.mark.usefixtures("one_thread")
def test_engine_api_snippet_runs(tiny_causal) -> None:
    from focalcodec.audio import load_audio

    samples = load_audio(EXAMPLE)[:3000]
    scope = run_snippet("docs/streaming.md", "EngineFull, StreamEngine", {"codec": tiny_causal, "samples": samples})
    engine, out = scope["engine"], scope["out"]
    assert out.flushed and out.tokens.shape == (4,) and out.audio.shape == (1920,)  # 3000 samples: 3 chunks
    assert engine.num_open == 0  # closed


@pytest.mark.usefixtures("one_thread")
def test_vc_page_snippet_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/vc.md: a voice built once, saved, loaded for offline conversion, and streamed."""
    import torch

    from focalcodec.vc import SpeakerSet

    for name, path in (("alice_1.wav", speech_files()[1]), ("alice_2.wav", speech_files()[2])):
        shutil.copy(path, tmp_path / f"{name}.flac")
    monkeypatch.chdir(tmp_path)
    files = {"alice_1.wav": tmp_path / "alice_1.wav.flac", "alice_2.wav": tmp_path / "alice_2.wav.flac"}
    files["bob.wav"] = speech_files()[0]
    chunk = torch.zeros(3000)
    scope = run_snippet("docs/vc.md", 'speaker.save("alice.safetensors")', {"chunk": chunk}, files)
    assert torch.equal(SpeakerSet.load(tmp_path / "alice.safetensors").feats, scope["speaker"].feats)
    assert scope["wav"].shape == (sf.info(str(speech_files()[0])).frames,)
    assert scope["toks"].shape == (8,) and scope["audio"].shape == (2 * 1920,)
