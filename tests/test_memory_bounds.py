"""Memory must not depend on what an input *says*: crafted ``.fc`` headers (with recomputed
CRCs) decode within a fixed memory budget or fail with a documented error, before any large
allocation. Runs in a subprocess with an address-space limit, so a bomb fails the test
instead of exhausting the machine, and measures the peak resident memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import FIXTURES

BUDGET_MB = 256  # peak RSS growth allowed over the warmed-up process

SCRIPT = textwrap.dedent(
    r"""
    import json, os, random, resource, struct, sys, tempfile, zlib
    from pathlib import Path

    import numpy as np
    import torch

    torch.set_num_threads(1)
    import focalcodec
    from focalcodec import FocalCodec
    from focalcodec.bitstream import MAGIC, payload_size
    from focalcodec.compression import decompress_to_file
    from focalcodec.errors import FocalCodecError

    codec = FocalCodec.from_pretrained(sys.argv[1])
    seed, cases = int(sys.argv[2]), int(sys.argv[3])
    tmp = Path(tempfile.mkdtemp())
    sig = 0.1 * torch.randn(2 * 16000, generator=torch.Generator().manual_seed(seed))
    good = focalcodec.compress(sig.numpy(), codec)
    focalcodec.decompress(good, codec)  # warm up every code path once
    decompress_to_file(good, codec, tmp / "warm.wav")

    def vm_kb():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1])

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limit = vm_kb() * 1024 + 1536 * 2**20  # a 1.5 GiB cushion: a bomb hits it and fails
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    version, name_len = good[4], good[7]
    fields_at = 8 + name_len + (16 if version >= 2 else 8)
    fmt = "<IIIIQQI"
    rate_in, rate_out, spt, orig, n, t, _ = struct.unpack_from(fmt, good, fields_at)

    def craft(values, code_dim, payload=None):
        ri, ro, hop, org, num, toks = values
        head = bytearray(good[:fields_at])
        head[6] = code_dim
        size = payload_size(toks, max(code_dim, 1))
        if payload is None:
            payload = bytes(random.getrandbits(8) for _ in range(size)) if size <= 1 << 16 else good[fields_at + 40 :]
            spare = 8 * len(payload) - toks * code_dim
            if payload and 0 < spare < 8:
                payload = payload[:-1] + bytes([payload[-1] & (0xFF << spare) & 0xFF])
        head += struct.pack(fmt, ri, ro, hop, org, num, toks, zlib.crc32(payload))
        return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + payload

    rates = [0, 1, 2, 999, 1000, 8000, 16000, 22050, 24000, 48000, 768000, 768001, 2**31, 2**32 - 1]
    hops = [0, 1, 2, 160, 320, 640, 65536, 65537, 2**32 - 1]
    counts = [0, 1, 400, n, 32000, 10**6, 2**31, 2**40, 2**63, 2**64 - 1]
    random.seed(seed)
    # The issue's bomb first: every rate 1 Hz, the length kept, so the tokens still fit.
    files = [craft((1, 1, spt, 1, n, t), good[6], good[fields_at + 40 :])]
    files.append(craft((rate_in, rate_out, spt, 1, n, t), good[6], good[fields_at + 40 :]))
    for _ in range(cases):
        if random.random() < 0.5:  # near a valid header: one or two fields changed
            values = [rate_in, rate_out, spt, orig, n, t]
            for _ in range(random.randint(1, 2)):
                k = random.randrange(6)
                values[k] = random.choice([rates, rates, hops, rates, counts, counts][k])
            if random.random() < 0.5 and values[3]:  # keep the duration: a plausible original rate
                values[4] = n * values[3] // 16000
            files.append(craft(tuple(values), good[6], good[fields_at + 40 :] if values[5] == t else None))
            continue
        ri, ro, org = (random.choice(rates + [rate_in, rate_out, orig]) for _ in range(3))
        hop = random.choice(hops + [spt] * 3)
        num = random.choice(counts)
        if ri and org and hop and random.random() < 0.7:  # a token count consistent with the header
            toks = max(0, min(num * ri // org // hop, 2**63))
        else:
            toks = random.choice(counts)
        toks = min(toks, 2**64 - 1)
        files.append(craft((ri, ro, hop, org, num, toks), random.choice([good[6]] * 4 + [0, 1, 8, 16, 32, 33])))

    outcomes, failures = {}, []
    for i, data in enumerate(files):
        for how in ("memory", "memory-input-rate", "file", "file-input-rate"):
            rate = "input" if how.endswith("input-rate") else None
            try:
                if how.startswith("memory"):
                    audio, r = focalcodec.decompress(data, codec, output_rate=rate)
                    assert audio.shape[0] * 4 < 64 * 2**20, audio.shape
                else:
                    decompress_to_file(data, codec, tmp / f"{i}.wav", output_rate=rate, overwrite=True)
                    assert (tmp / f"{i}.wav").stat().st_size < 64 * 2**20
                key = "decoded"
            except FocalCodecError as exc:
                key = type(exc).__name__
            except BaseException as exc:  # MemoryError, allocator failures, anything else
                key = "FAIL"
                failures.append(f"case {i} ({how}): {type(exc).__name__}: {str(exc)[:200]}")
            outcomes[key] = outcomes.get(key, 0) + 1
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"outcomes": outcomes, "failures": failures[:10], "growth_mb": growth}))
    """
)


def run_script(seed: int, cases: int) -> dict:
    import focalcodec

    src = str(Path(focalcodec.__file__).resolve().parents[1])  # the package under test
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    env.update(MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(FIXTURES / "tiny_50hz"), str(seed), str(cases)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("seed", [7])
def test_crafted_headers_decode_in_bounded_memory(seed: int) -> None:
    """300 headers with arbitrary rates, hops, lengths and token counts (CRCs recomputed, the
    payload sized to match where small): each decodes (in memory and to a file, at the
    model's rate and at the 'original' rate) or raises a FocalCodecError; the peak memory
    grows by less than the budget. Before the header was checked against the model, the first
    case (every rate 1 Hz) asked for 512 M samples."""
    result = run_script(seed, 300)
    print(result)
    assert not result["failures"], result
    assert result["outcomes"].get("decoded", 0) > 0 and len(result["outcomes"]) > 2, result
    assert result["growth_mb"] < BUDGET_MB, result


# -- inputs that declare absurd sizes: refused before any work -----------------------------------
def _wav_with_rate(path: Path, rate: int, seconds: float = 2.0) -> Path:
    """A 16-bit WAV of ``seconds`` at 16 kHz whose header then claims ``rate`` Hz."""
    import struct

    import numpy as np
    import soundfile as sf

    sf.write(str(path), np.zeros(int(16000 * seconds), dtype=np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    struct.pack_into("<II", data, 24, rate, min(rate * 2, 2**32 - 1))  # sample rate, byte rate
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [1, 999, 2**31 - 1])
def test_audio_declaring_an_absurd_rate_is_refused(rate: int, tmp_path) -> None:
    """A 64 KB WAV declaring 1 Hz used to be resampled to 1000 s (24 GB with vc)."""
    from conftest import fixture_model

    import focalcodec
    from focalcodec.audio import AudioError, load_audio
    from focalcodec.vc import convert

    path = _wav_with_rate(tmp_path / "x.wav", rate)
    for run in (
        lambda: load_audio(path),
        lambda: focalcodec.compress(path, fixture_model("tiny_50hz")),
        lambda: convert(fixture_model("tiny_50hz"), path, fixture_model("tiny_50hz").encoder.feature_proj.weight.T),
    ):
        with pytest.raises(AudioError, match=f"sample rate of {rate} Hz"):
            run()
    with pytest.raises(focalcodec.InputError, match="sample_rate"):
        focalcodec.compress(np_zeros(1000), fixture_model("tiny_50hz"), sample_rate=1)


def np_zeros(n: int):
    import numpy as np

    return np.zeros(n, dtype=np.float32)


def test_wav_shorter_than_its_header_says_raises(tmp_path) -> None:
    import numpy as np
    import soundfile as sf

    from focalcodec.audio import AudioError, AudioFileSamples, read_audio

    path = tmp_path / "cut.wav"
    sf.write(str(path), np.zeros(32000, dtype=np.float32), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:40000])  # a download cut in half; libsndfile reads what is there
    for run in (lambda: read_audio(path), lambda: AudioFileSamples(path)):
        with pytest.raises(AudioError, match="truncated: its header promises 64000 bytes"):
            run()


def test_npy_declaring_a_huge_shape_is_refused(tmp_path, capsys) -> None:
    """A .npy header claiming 2^40 tokens used to be allocated (8 TB) before reading."""
    import numpy as np

    from focalcodec.cli import main

    path = tmp_path / "huge.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<i8", "fortran_order": False, "shape": (2**40,)})
        f.write(b"\0" * 80)  # ten tokens are all there is
    for argv in (
        ["decode", str(path), "-o", str(tmp_path / "x.wav"), "--model", str(FIXTURES / "tiny_50hz")],
        ["info", str(path)],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "huge.npy" in err[0] and "internal error" not in err[0], err
    assert not (tmp_path / "x.wav").exists()


def test_channels_last_batch_is_named() -> None:
    """(N, 2) used to run as N items of 2 samples (minutes of CPU)."""
    import numpy as np
    from conftest import fixture_model

    import focalcodec

    codec = fixture_model("tiny_50hz")
    stereo = np.zeros((48000, 2), dtype=np.float32)
    with pytest.raises(focalcodec.InputError, match=r"\(samples, channels\)"):
        codec.encode(stereo)
    with pytest.raises(focalcodec.InputError, match=r"\(samples, channels\)"):
        focalcodec.compress(stereo, codec)
    assert codec.encode(np.zeros((3, 16000), dtype=np.float32)).tokens.shape == (3, 49)  # a real batch


def test_in_memory_decode_is_bounded(tmp_path) -> None:
    from conftest import fixture_model

    import focalcodec
    from focalcodec.compression import decompress_to_file

    codec = fixture_model("tiny_50hz")
    data = focalcodec.compress(np_zeros(32000), codec)
    with pytest.raises(focalcodec.InputError, match="decompress_to_file"):
        focalcodec.decompress(data, codec, max_bytes=100_000)  # 2 s at 16 kHz = 128 kB
    _, n, _ = decompress_to_file(data, codec, tmp_path / "x.wav")
    assert n == 32000
