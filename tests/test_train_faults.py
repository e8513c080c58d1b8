"""tools/planted_faults.py stays applicable: every planted fault's edit still matches the
current source exactly as often as the tool expects (so the fault table in docs/training.md
can be reproduced), and applying it really changes the code."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("planted_faults", ROOT / "tools" / "planted_faults.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_fault_applies_to_the_current_source(tool, tmp_path):
    names = [f.name for f in tool.FAULTS]
    assert len(names) == len(set(names)) >= 7
    for required in (
        "unquantised-latents",
        "cut-adversarial-gradient",
        "zeroed-discriminator-loss",
        "dropped-entropy-loss",
        "misaligned-crops",
        "wrong-mel-scale",
        "swapped-loss-weights",
    ):
        assert required in names
    for fault in tool.FAULTS:
        copy = tmp_path / fault.name / "focalcodec"
        (copy / fault.file).parent.mkdir(parents=True)
        shutil.copy(ROOT / "src" / "focalcodec" / fault.file, copy / fault.file)
        before = (copy / fault.file).read_text()
        tool.apply(fault, copy)
        after = (copy / fault.file).read_text()
        assert after != before and fault.new in after and after.count(fault.old) == 0, fault.name
        compile(after, fault.file, "exec")  # still valid Python
