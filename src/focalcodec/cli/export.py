"""``focalcodec export``: write the encode/decode graphs (and, for causal models, the streaming
steps ``stream_encode``/``stream_decode``) as ONNX or TorchScript."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    add_command,
    add_force_option,
    add_model_options,
    add_output_option,
    load_model,
    positive_int,
    require,
)

GRAPHS = ("encode", "decode", "stream_encode", "stream_decode")  # focalcodec.export.GRAPHS (torch-free copy)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "export",
        help="export encode/decode (or streaming-step) graphs to ONNX or TorchScript",
        description="Write the model's encode/decode graphs (and, for causal models, the streaming steps "
        "stream_encode/stream_decode with explicit state tensors) as ONNX (needs the onnx package) or "
        "TorchScript files named GRAPH.onnx / GRAPH.pt in the output folder.",
    )
    add_model_options(p)
    add_output_option(p, "output folder")
    p.add_argument(
        "--format",
        choices=("onnx", "torchscript"),
        default="onnx",
        help="ONNX (GRAPH.onnx, for onnxruntime) or TorchScript (GRAPH.pt, for torch.jit.load)",
    )
    p.add_argument(
        "--graphs",
        "--graph",
        nargs="+",
        choices=GRAPHS,
        default=["encode", "decode"],
        help="graphs to write; stream_encode / stream_decode are the streaming steps of a causal model, with "
        "explicit state tensors",
    )
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset (18 or later)")
    add_force_option(p, "existing graph files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..outputs import check_targets, output_path

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        from ..errors import OutputError

        raise OutputError(f"{out} is a file; -o must be a folder")
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    targets = [out / f"{g}{suffix}" for g in args.graphs]
    check_targets(targets, force=args.force)
    if args.format == "onnx":
        require("onnx", "export", "ONNX export")
        from ..export import check_opset

        check_opset(args.opset)
    codec = load_model(args)

    from ..export import export_onnx, export_torchscript

    for graph, target in zip(args.graphs, targets, strict=True):
        with output_path(target, force=args.force) as tmp:
            if args.format == "onnx":
                export_onnx(codec, tmp, graph, args.opset)
            else:
                export_torchscript(codec, tmp, graph)
        print(f"{graph}: {target}")
    return 0
