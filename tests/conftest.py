"""Shared test helpers: paths to ../shared and cached fixture models."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FOCALCODEC_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SPEECH = SHARED / "speech"
FIXTURE_NAMES = ("tiny_50hz", "tiny_25hz", "tiny_12_5hz", "tiny_causal_4k")


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


@pytest.fixture(scope="session")
def tiny50():
    return fixture_model("tiny_50hz")


@pytest.fixture(scope="session")
def tiny_causal():
    return fixture_model("tiny_causal_4k")


@pytest.fixture
def one_thread():
    """Tiny models and streaming steps run far faster on one thread on busy shared cores
    (thread hand-off stalls); use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
