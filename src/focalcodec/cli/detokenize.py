"""``focalcodec detokenize``: utterances of a tokenized corpus -> audio files."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path, PurePosixPath

from ..errors import InputError
from .common import add_model_options


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "detokenize",
        help="decode chosen utterances of a tokenized corpus back to audio",
        description="Decode utterances of a `focalcodec tokenize` output folder to audio files named after their ids.",
    )
    p.add_argument("corpus", help="output folder of focalcodec tokenize (holding index.json)")
    p.add_argument("--ids", nargs="+", default=[], metavar="ID", help="utterance ids to decode")
    p.add_argument("--ids-file", default=None, help="file with one utterance id a line")
    p.add_argument("--all", action="store_true", help="decode every utterance")
    p.add_argument("--out", required=True, help="folder for the audio files (ID.wav; ids with / make sub-folders)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="audio file format (default: wav)")
    p.add_argument(
        "--output-rate", type=int, default=None, help="resample the output to this rate (default: the model's)"
    )
    add_model_options(p, default=None)
    p.set_defaults(func=run)
    return p


def _out_path(folder: Path, uid: str, fmt: str) -> Path:
    parts = [q for q in PurePosixPath(uid.replace("\\", "/")).parts if q not in ("", ".", "..", "/")]
    if not parts:
        raise InputError(f"utterance id {uid!r} cannot be used as a file name")
    return folder.joinpath(*parts[:-1], f"{parts[-1]}.{fmt}")


def _weights_differ(model, identity: dict) -> bool:
    from ..corpus import model_identity

    return (
        bool(identity.get("weights_sha256")) and model_identity(model)["weights_sha256"] != identity["weights_sha256"]
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..audio import save_audio
    from ..codec import FocalCodec
    from ..corpus import TokenCorpus

    corpus = TokenCorpus(args.corpus)
    ids = list(args.ids)
    if args.ids_file:
        ids += [line.strip() for line in Path(args.ids_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.all:
        ids = corpus.ids()
    if not ids:
        raise InputError("choose utterances with --ids, --ids-file or --all")
    missing = [u for u in ids if u not in corpus]
    if missing:
        raise InputError(f"{len(missing)} id(s) not in {args.corpus}, e.g. {missing[:3]}")
    source = args.model or corpus.model["source"]
    model = FocalCodec.from_pretrained(source, map_location=args.device)
    if model.fingerprint != corpus.model["fingerprint"]:
        raise InputError(
            f"the tokens were made by {corpus.model['model_id']} ({corpus.model['source']}), "
            f"not by {model.model_id} ({source}); pass that model with --model"
        )
    if _weights_differ(model, corpus.model):
        warnings.warn(
            f"{source} has other weights than the model that made these tokens; the audio may differ", stacklevel=2
        )
    out = Path(args.out)
    with torch.inference_mode():
        for uid in ids:
            utt = corpus[uid]
            audio = model.decode(utt.tokens).audio
            target = _out_path(out, uid, args.format)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_audio(target, audio, model.sample_rate_output, output_rate=args.output_rate)
            print(target)
    return 0
