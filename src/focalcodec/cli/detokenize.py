"""``focalcodec detokenize``: utterances of a tokenized corpus -> audio files."""

from __future__ import annotations

import argparse
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .common import (
    add_command,
    add_force_option,
    add_model_options,
    add_output_option,
    add_output_rate_option,
    add_quiet_option,
    add_window_option,
    load_model,
    windowing,
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "detokenize",
        help="decode chosen utterances of a tokenized corpus back to audio",
        description="Decode utterances of a `focalcodec tokenize` output folder to audio files named after their "
        "ids, with the model that made the tokens (same weights) unless --model says otherwise.",
    )
    p.add_argument("corpus", help="output folder of focalcodec tokenize (holding index.json)")
    p.add_argument("--ids", nargs="+", default=[], metavar="ID", help="utterance ids to decode")
    p.add_argument("--ids-file", default=None, help="file with one utterance id a line")
    p.add_argument("--all", action="store_true", help="decode every utterance")
    add_output_option(p, "folder for the audio files (ID.wav; ids with / make sub-folders)", required=False)
    p.add_argument("--out", dest="output", help=argparse.SUPPRESS)  # old name
    add_force_option(p, "existing audio files")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio file format")
    add_output_rate_option(p, allow_input=False)
    add_model_options(p, default=None)
    p.add_argument(
        "--allow-other-weights",
        action="store_true",
        help="decode with --model even if its weights differ from the model that made the tokens",
    )
    add_window_option(p)
    add_quiet_option(p)
    p.set_defaults(func=run)
    return p


def _out_path(folder: Path, uid: str, fmt: str) -> Path:
    parts = [q for q in PurePosixPath(uid.replace("\\", "/")).parts if q not in ("", ".", "..", "/")]
    if not parts:
        raise InputError(f"utterance id {uid!r} cannot be used as a file name")
    return folder.joinpath(*parts[:-1], f"{parts[-1]}.{fmt}")


def _read_ids(path: str) -> list[str]:
    from ..limits import read_text_input

    return [line.strip() for line in read_text_input(path, "--ids-file").splitlines() if line.strip()]


def run(args: argparse.Namespace) -> int:
    from ..compression import tokens_to_file
    from ..corpus import TokenCorpus
    from ..outputs import check_targets

    if not args.output:
        raise InputError("give the output folder with -o/--output")
    corpus = TokenCorpus(args.corpus)
    ids = list(args.ids)
    if args.ids_file:
        ids += _read_ids(args.ids_file)
    if args.all:
        ids = corpus.ids()
    if not ids:
        raise InputError("choose utterances with --ids, --ids-file or --all")
    missing = [u for u in ids if u not in corpus]
    if missing:
        raise InputError(f"{len(missing)} id(s) not in {args.corpus}, e.g. {missing[:3]}")
    out = Path(args.output)
    targets = [_out_path(out, uid, args.format) for uid in ids]
    check_targets(targets, force=args.force)
    win = windowing(args)
    source = args.model or corpus.model["source"]
    model = load_model(args, source)
    made_by = corpus.model
    if model.fingerprint != made_by["fingerprint"]:
        raise InputError(
            f"the tokens were made by {made_by['model_id']} ({made_by['source']}), "
            f"not by {model.model_id} ({source}); pass that model with --model"
        )
    if made_by.get("weights_sha256") and model.weights_sha256 != made_by["weights_sha256"]:
        if not args.allow_other_weights:
            raise InputError(
                f"{source} has other weights (weights {model.weights_sha256[:16]}) than the model that made these "
                f"tokens ({made_by['model_id']}, weights {made_by['weights_sha256'][:16]}); pass that model with "
                "--model, or --allow-other-weights to decode with these weights anyway"
            )
    for uid, target in zip(ids, targets, strict=True):
        utt = corpus[uid]
        tokens_to_file(  # the original length, as a .fc file decodes (not T * hop)
            utt.tokens,
            model,
            target,
            output_rate=args.output_rate,
            overwrite=args.force,
            windowing=win,
            num_samples=utt.num_samples,
        )
        if not args.quiet:
            print(target)
    return 0
