"""README snippets are tests: the Quick start runs as written (with a fixture model instead
of the Hub checkpoint, since tests are offline)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT


def python_blocks() -> list:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = next(b for b in python_blocks() if "from_pretrained" in b and "encode" in b)
    assert '"lucadellalib/focalcodec_50hz"' in block
    code = block.replace('"lucadellalib/focalcodec_50hz"', repr(str(FIXTURES / "tiny_50hz")))
    code = code.replace('"examples/speech.flac"', repr(str(ROOT / "examples" / "speech.flac")))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert (tmp_path / "speech_rec.wav").is_file()
    import torch

    codec, wav = scope["codec"], scope["wav"]
    assert scope["tokens"].shape[0] == 2 and scope["n_tokens"].tolist() == [len(codec.encode(wav).tokens), 62]
    assert torch.equal(scope["tokens"][1, :62], codec.encode(wav[:20000]).tokens)
