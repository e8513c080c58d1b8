"""The weight-traffic accounting of benchmarks/bandwidth.py (the floor it reports is only as
honest as the bytes it counts)."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import ROOT, fixture_model


@pytest.fixture(scope="module")
def bandwidth():
    spec = importlib.util.spec_from_file_location("bench_bandwidth", ROOT / "benchmarks" / "bandwidth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_float32_copy_reads_every_parameter_once(bandwidth):
    codec = fixture_model("tiny_causal_4k")
    params = sum(p.numel() for p in codec.parameters())
    counted = bandwidth.variant_bytes(codec, "float32")
    # The streaming copy's per-group linear layers are views of the conv weights: one read.
    assert counted == {"float32": 4 * params, "float16": 0, "int8": 0}


@pytest.mark.parametrize("variant", ["float16", "int8", "float16+int8"])
def test_reduced_copies_count_each_weight_at_its_stored_width(bandwidth, variant):
    codec = fixture_model("tiny_causal_4k")
    full = bandwidth.variant_bytes(codec, "float32")["float32"]
    counted = bandwidth.variant_bytes(codec, variant)
    # Widening every quantised weight back to float32 gives the float32 total exactly.
    assert 2 * counted["float16"] + 4 * counted["int8"] + counted["float32"] == full
    assert (counted["float16"] > 0) == variant.startswith("float16")
    assert (counted["int8"] > 0) == variant.endswith("int8")
    assert counted["float32"] < full / 2
