"""Shared test helpers: paths to ../shared and cached fixture models.

Most tests need the read-only test data in ``../shared`` (fixture models with the reference
outputs, real speech); ``FOCALCODEC_SHARED`` points elsewhere. Without it, those tests are
skipped with a message saying so (see :func:`pytest_collection_modifyitems`) and the rest run.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import re
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread, here and in the processes tests start: the fixture models are tiny, and on two
# shared cores a second intra-op thread mostly spins (measured on this suite's CPU-bound files:
# 80 s with 2 threads, 39 s with 1, half the CPU time; no file was faster with 2).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SPEECH = SHARED / "speech"
FIXTURE_NAMES = ("tiny_50hz", "tiny_25hz", "tiny_12_5hz", "tiny_causal_4k")
SHARED_MISSING = (
    f"needs the shared test data, not found at {SHARED}: put it at ../shared beside the repository "
    "or set FOCALCODEC_SHARED (see the README, Tests)"
)
_SHARED_HELPERS = ("SHARED", "FIXTURES", "SPEECH", "fixture_model", "fixture_io", "speech_files")


def _pattern(names: set[str]) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(map(re.escape, sorted(names))) + r")\b")


@functools.cache
def _shared_names(module) -> frozenset[str]:
    """Names in a test module that stand for ../shared: the helpers, module constants holding
    paths inside it (e.g. ``CLIP = SPEECH / ...``) and module functions that use any of them."""
    names = set(_SHARED_HELPERS)
    root = str(SHARED)
    helpers = {}
    for name, value in vars(module).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, (str, Path)) and str(v).startswith(root) for v in values):
            names.add(name)
        elif inspect.isfunction(value) and value.__module__ == module.__name__:
            try:
                helpers[name] = inspect.getsource(value)
            except (OSError, TypeError):
                pass
    grown = True
    while grown:  # helpers calling helpers
        pattern = _pattern(names)
        new = {n for n, src in helpers.items() if n not in names and pattern.search(src)}
        names |= new
        grown = bool(new)
    return frozenset(names)


def _needs_shared(item) -> bool:
    """Whether a test (its function or any fixture it uses) refers to ../shared."""
    pattern = _pattern(set(_shared_names(item.module)))
    functions = [item.function]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        functions += [d.func for d in defs]
    for fn in functions:
        try:
            source = inspect.getsource(fn)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def pytest_collection_modifyitems(config, items) -> None:
    if FIXTURES.is_dir() and SPEECH.is_dir():
        return
    skip = pytest.mark.skip(reason=SHARED_MISSING)
    for item in items:
        if _needs_shared(item):
            item.add_marker(skip)


@functools.cache
def fixture_model(name: str):
    """A fixture model loaded with ``from_pretrained`` (cached; do not modify it)."""
    from focalcodec import FocalCodec

    return FocalCodec.from_pretrained(FIXTURES / name)


@functools.cache
def fixture_io(name: str):
    """The reference outputs stored beside a fixture (legacy shares tiny_50hz's)."""
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name.replace("_legacy", "") / "io.safetensors"))


def speech_files(subset: str = "eval"):
    return sorted((SPEECH / subset).glob("*.flac"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the device checks of tests/test_device.py, e.g. cuda or cuda:1 (default: cpu)",
    )


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--device")
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise pytest.UsageError(f"--device {name!r} is not a torch device; use e.g. cpu, cuda or cuda:1") from None


def _device_problem(name: str) -> str | None:
    """Why ``name`` cannot run the device checks here (None when it can)."""
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return (
                f"--device {name}: no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is "
                "False); the device checks run on a GPU machine (benchmarks/gpu_suite.py, docs/benchmarks.md#gpu)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
        return None
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError) as exc:
        return f"--device {name}: unavailable here ({exc})"
    return None


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The device of ``pytest --device`` (default ``cpu``); the tests that use it are skipped,
    with the reason, when that device is not available here."""
    name = request.config.getoption("--device")
    problem = _device_problem(name)
    if problem:
        pytest.skip(problem)
    return name


@functools.cache
def device_model(name: str, device: str):
    """A fixture model on ``device`` (a copy when the device is not the CPU; cached, do not modify)."""
    model = fixture_model(name)
    return model if torch.device(device) == torch.device("cpu") else copy.deepcopy(model).to(device)


@pytest.fixture(scope="session")
def tiny50():
    return fixture_model("tiny_50hz")


@pytest.fixture(scope="session")
def tiny_causal():
    return fixture_model("tiny_causal_4k")


@pytest.fixture
def one_thread():
    """One thread for the test, whatever the process was set to (the suite runs on one thread,
    see the top of this file; tests that change it restore it through this fixture)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
