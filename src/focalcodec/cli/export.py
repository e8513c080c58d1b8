"""``focalcodec export``: write the encode/decode graphs (and, for causal models, the streaming
steps ``stream_encode``/``stream_decode``) as ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..export import GRAPHS
from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export encode/decode (or streaming-step) graphs to ONNX or TorchScript")
    add_model_options(p)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument(
        "--graphs",
        "--graph",
        nargs="+",
        choices=GRAPHS,
        default=["encode", "decode"],
        help="graphs to write (default: encode decode); stream_encode / stream_decode are the "
        "streaming steps of a causal model, with explicit state tensors",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..export import export_onnx, export_torchscript
    from ..outputs import check_targets, output_path

    out = Path(args.output)
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    targets = [out / f"{g}{suffix}" for g in args.graphs]
    check_targets(targets, force=args.force)
    codec = load_model(args)
    for graph, target in zip(args.graphs, targets, strict=True):
        with output_path(target, force=args.force) as tmp:
            if args.format == "onnx":
                export_onnx(codec, tmp, graph, args.opset)
            else:
                export_torchscript(codec, tmp, graph)
        print(f"{graph}: {target}")
    return 0
