"""``focalcodec vc SOURCE --reference REF... -o OUT``: kNN voice conversion (SPEC §3.4).

The target voice comes from reference audio (files or directories), encoded with the
non-causal 50 Hz model (``--features-model``), or from a speaker set saved earlier
(``--speaker-set``); ``--save-speaker-set`` writes it for reuse (SOURCE may then be omitted).
"""

from __future__ import annotations

import argparse

import torch

from ..audio import load_audio, save_audio
from ..errors import InputError
from .common import add_model_options, load_model

FEATURES_MODEL = "lucadellalib/focalcodec_50hz"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("vc", help="convert speech to a target voice (kNN-VC)")
    p.add_argument("source", nargs="?", metavar="SOURCE", help="speech to convert")
    p.add_argument("-o", "--output", help="converted audio file (.wav/.flac)")
    p.add_argument("--reference", nargs="+", metavar="REF", help="target-voice audio files or directories")
    p.add_argument("--speaker-set", metavar="FILE", help="load the target voice from a saved speaker set")
    p.add_argument("--save-speaker-set", metavar="FILE", help="save the target voice built from --reference")
    add_model_options(p)
    p.add_argument(
        "--features-model",
        default=None,
        help=f"model whose continuous features make the matching set (default: {FEATURES_MODEL}, "
        "or --model when it is the same)",
    )
    p.add_argument("--topk", type=int, default=4, help="nearest reference frames averaged per frame (default: 4)")
    p.add_argument(
        "--num-splits", type=int, default=None, help="split the matching set to bound memory (default: automatic)"
    )
    p.add_argument("--stream", action="store_true", help="convert through the streaming decoder (causal models)")
    p.add_argument("--output-rate", type=int, help="resample the output to this rate")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..codec import FocalCodec
    from ..vc import SpeakerSet, build_speaker_set, convert

    if bool(args.reference) == bool(args.speaker_set):
        raise InputError("give the target voice with either --reference or --speaker-set")
    if args.source and not args.output:
        raise InputError("give the output file with -o/--output")
    if not args.source and not args.save_speaker_set:
        raise InputError("nothing to do: give SOURCE -o OUT and/or --save-speaker-set")
    if args.topk < 1:
        raise InputError("--topk must be at least 1")
    codec = load_model(args) if args.source else None
    features_name = args.features_model or FEATURES_MODEL
    if args.speaker_set:
        speaker = SpeakerSet.load(args.speaker_set)
    else:
        if codec is not None and args.features_model in (None, args.model) and not codec.causal:
            feat_model = codec
        else:
            feat_model = FocalCodec.from_pretrained(features_name, map_location=args.device)
        speaker = build_speaker_set(feat_model, args.reference)
        print(f"target voice: {len(speaker.sources)} file(s), {speaker.seconds:.1f} s, {speaker.num_frames} frames")
        if args.save_speaker_set:
            speaker.save(args.save_speaker_set)
            print(f"speaker set -> {args.save_speaker_set}")
    if codec is None:
        return 0
    if args.stream:
        from ..streaming import StreamCodec

        if not codec.causal:
            raise InputError("--stream needs a causal model (e.g. lucadellalib/focalcodec_50hz_4k_causal)")
        sig = load_audio(args.source, codec.sample_rate_input)
        sc = StreamCodec(codec, matching_set=speaker.feats, topk=args.topk, num_splits=args.num_splits or 1)
        _, a = sc.push(sig)
        _, b = sc.flush()
        out = torch.cat([a, b])[: sig.shape[0] * codec.sample_rate_output // codec.sample_rate_input]
    else:
        out = convert(codec, args.source, speaker, topk=args.topk, num_splits=args.num_splits)
    save_audio(args.output, out, codec.sample_rate_output, args.output_rate)
    print(
        f"{args.source} -> {args.output}: {out.shape[-1]} samples at {args.output_rate or codec.sample_rate_output} Hz"
    )
    return 0
