"""``focalcodec vc SOURCE --reference REF... -o OUT``: kNN voice conversion (SPEC §3.4).

The target voice comes from reference audio (files or folders), encoded with ``--model`` (the
non-causal 50 Hz model when ``--model`` is causal; ``--features-model`` overrides), or from a
speaker set saved earlier (``--speaker-set``, which must have been built by that same features
model: architecture and weights, unless ``--allow-other-weights``); ``--save-speaker-set`` writes it for reuse
(SOURCE may then be omitted). Long sources are converted window by window (bounded memory);
every output is checked before any work.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .common import (
    add_command,
    add_features_model_options,
    add_force_option,
    add_model_options,
    add_output_option,
    add_output_rate_option,
    add_quiet_option,
    add_window_option,
    check_device,
    features_model,
    load_model,
    positive_int,
    windowing,
)

# vc --stream reads and pushes the source this many model chunks at a time (32 x 80 ms).
STREAM_BLOCK_CHUNKS = 32


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "vc",
        help="convert speech to a target voice (kNN-VC)",
        description="Convert SOURCE to the voice of reference recordings (kNN-VC): every frame is replaced by the "
        "mean of its nearest reference frames. Long sources are converted window by window (--window).",
    )
    p.add_argument("source", nargs="?", metavar="SOURCE", help="speech to convert")
    add_output_option(p, "converted audio file (.wav/.flac)", required=False)
    add_force_option(p, "existing output files (the converted audio and --save-speaker-set)")
    p.add_argument("--reference", nargs="+", metavar="REF", help="target-voice audio files or folders")
    p.add_argument("--speaker-set", metavar="FILE", help="load the target voice from a saved speaker set")
    p.add_argument("--save-speaker-set", metavar="FILE", help="save the target voice built from --reference")
    add_model_options(p)
    add_features_model_options(p, "--speaker-set")
    p.add_argument("--topk", type=positive_int, default=4, help="nearest reference frames averaged per frame")
    p.add_argument(
        "--num-splits",
        type=positive_int,
        default=None,
        help="split the matching set to bound memory (default: automatic)",
    )
    p.add_argument("--stream", action="store_true", help="convert through the streaming decoder (causal models)")
    add_window_option(p)
    add_output_rate_option(p, allow_input=False)
    add_quiet_option(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..outputs import check_targets

    if bool(args.reference) == bool(args.speaker_set):
        raise InputError("give the target voice with either --reference or --speaker-set")
    if args.source and not args.output:
        raise InputError("give the output file with -o/--output")
    if args.output and not args.source:
        raise InputError("-o/--output needs a SOURCE to convert")
    if not args.source and not args.save_speaker_set:
        raise InputError("nothing to do: give SOURCE -o OUT and/or --save-speaker-set")
    if args.save_speaker_set and not args.reference:
        raise InputError("--save-speaker-set needs --reference (a loaded --speaker-set is already saved)")
    inputs = [p for p in [args.source, args.speaker_set, *(args.reference or [])] if p]
    targets = [p for p in (args.output, args.save_speaker_set) if p]
    check_targets(targets, inputs, args.force)
    if args.output and not args.output.lower().endswith((".wav", ".flac")):
        raise InputError(f"cannot write {args.output}: use a .wav or .flac file name")
    win = windowing(args)
    check_device(args.device)  # before any work, also when only a speaker set is built
    codec = load_model(args) if args.source else None
    if codec is not None and args.stream and not codec.causal:
        raise InputError("--stream needs a causal model (e.g. lucadellalib/focalcodec_50hz_4k_causal)")

    from ..vc import SpeakerSet, build_speaker_set

    feat_model = features_model(args, codec)
    if args.speaker_set:
        # The set must come from the features model a --reference would use now (same
        # architecture and weights), as a .fc file must come from its decoder.
        speaker = SpeakerSet.load(args.speaker_set, model=feat_model, check_weights=not args.allow_other_weights)
    else:
        speaker = build_speaker_set(feat_model, args.reference)
        if not args.quiet:
            print(f"target voice: {len(speaker.sources)} file(s), {speaker.seconds:.1f} s, {speaker.num_frames} frames")
        if args.save_speaker_set:
            speaker.save(args.save_speaker_set, force=args.force, inputs=inputs)
            if not args.quiet:
                print(f"speaker set -> {args.save_speaker_set}")
    del feat_model  # not needed for the conversion (unless it is the codec itself)
    if codec is None:
        return 0
    if args.stream:
        num, rate = _stream(codec, speaker, args)
    else:
        from ..vc import convert_to_file
        from .batch import progress_bar
        from .encode import _seconds

        seconds = _seconds(Path(args.source))
        with progress_bar(2 * seconds, args, f"vc {Path(args.source).name}", 2 * win.window) as update:
            _, num, rate = convert_to_file(
                codec,
                args.source,
                speaker,
                args.output,
                topk=args.topk,
                num_splits=args.num_splits,
                windowing=win,
                output_rate=args.output_rate,
                overwrite=args.force,
                progress=update,
            )
    if not args.quiet:
        print(f"{args.source} -> {args.output}: {num} samples at {rate} Hz")
    return 0


def _stream(codec, speaker, args: argparse.Namespace) -> tuple[int, int]:
    """Convert through the streaming decoder, reading the source piece by piece
    (:class:`focalcodec.audio.AudioReader`, as ``stream-encode`` does) and writing as it goes:
    memory does not grow with the source. The output has ``floor(N * sr_out / sr_in)`` samples
    for the source's ``N`` samples at 16 kHz (``floor(frames * 16000 / rate)``), as offline."""
    import torch

    from ..audio import AudioReader, audio_info, fit_blocks, resample_blocks, save_audio
    from ..streaming import StreamCodec

    reader = AudioReader(args.source, codec.sample_rate_input, STREAM_BLOCK_CHUNKS * codec.chunk_size)
    n = audio_info(args.source).frames * codec.sample_rate_input // reader.rate
    if n < 1:
        raise InputError(f"{args.source} has no audio samples to convert")
    sc = StreamCodec(codec, matching_set=speaker.feats, topk=args.topk, num_splits=args.num_splits or 1)
    num = codec.num_output_samples(n)

    def blocks():
        for piece in reader:
            yield sc.push(torch.from_numpy(piece))[1].numpy()
        yield sc.flush()[1].numpy()

    audio, rate = fit_blocks(blocks(), num), codec.sample_rate_output
    if args.output_rate is not None and args.output_rate != rate:
        num = num * args.output_rate // rate
        audio, rate = resample_blocks(audio, rate, args.output_rate, num), args.output_rate
    save_audio(args.output, audio, rate, force=args.force, inputs=[args.source])
    return num, rate
