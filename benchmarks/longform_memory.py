"""Peak memory and speed of long-form compression on CPU (docs/longform.md).

    python -P benchmarks/longform_memory.py make  /tmp/long.wav --minutes 60
    /usr/bin/time -v python -P benchmarks/longform_memory.py encode /tmp/long.wav /tmp/long.fc
    /usr/bin/time -v python -P benchmarks/longform_memory.py decode /tmp/long.fc /tmp/long_out.wav

(``-P`` keeps benchmarks/ off ``sys.path``: benchmarks/tokenization.py would shadow the
standard library.) The model is the full-size ``focalcodec_50hz`` architecture with random weights
(``FocalCodec.from_config``): memory and speed do not depend on the weights' values.
``make`` tiles the real speech of ../shared/speech/eval to the requested length.
Each window prints its position, the elapsed time and the peak RSS so far.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make(out: Path, minutes: float, speech: Path) -> None:
    import soundfile as sf

    target = int(minutes * 60 * 16000)
    files = sorted(speech.glob("*.flac"))
    with sf.SoundFile(str(out), "w", 16000, 1, "PCM_16") as f:
        written = 0
        while written < target:
            for p in files:
                x, _ = sf.read(str(p), dtype="float32")
                x = x[: target - written]
                f.write(x)
                written += len(x)
                if written >= target:
                    break
    print(f"wrote {out}: {target / 16000 / 60:.1f} min")


def instrument(codec, every: int) -> None:
    """Print progress every ``every`` window calls of encode / decode."""
    start = time.time()
    for name in ("encode", "decode"):
        original = getattr(codec, name)
        calls = [0]

        def wrapped(*a, _orig=original, _name=name, _calls=calls, **k):
            out = _orig(*a, **k)
            _calls[0] += 1
            if _calls[0] % every == 0:
                print(
                    f"{_name} window {_calls[0]}: {time.time() - start:.0f} s, peak RSS {peak_mb():.0f} MB", flush=True
                )
            return out

        setattr(codec, name, wrapped)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=("make", "encode", "decode"))
    ap.add_argument("input")
    ap.add_argument("output", nargs="?")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--speech", default=str(Path(__file__).resolve().parents[2] / "shared" / "speech" / "eval"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=10)
    args = ap.parse_args()
    if args.mode == "make":
        make(Path(args.input), args.minutes, Path(args.speech))
        return
    torch.set_num_threads(args.threads)
    import focalcodec
    from focalcodec import FocalCodec

    torch.manual_seed(0)  # the same random weights in the encode and the decode process
    codec = FocalCodec.from_config("focalcodec_50hz")
    print(f"model loaded: peak RSS {peak_mb():.0f} MB", flush=True)
    instrument(codec, args.every)
    t0 = time.time()
    if args.mode == "encode":
        data = focalcodec.compress(args.input, codec, args.output, overwrite=True)
        stream = focalcodec.CompressedAudio.from_bytes(data)
        what = f"{stream.duration / 60:.1f} min -> {len(data)} bytes ({stream.num_tokens} tokens)"
        audio_s = stream.duration
    else:
        from focalcodec.compression import decompress_to_file

        _, num, rate = decompress_to_file(args.input, codec, args.output, overwrite=True)
        what = f"{num} samples at {rate} Hz"
        audio_s = num / rate
    wall = time.time() - t0
    print(f"{args.mode}: {what}; {wall:.0f} s wall ({audio_s / wall:.1f}x real time); peak RSS {peak_mb():.0f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
