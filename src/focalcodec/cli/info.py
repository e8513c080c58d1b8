"""``focalcodec info``: model facts (the bitstream part is added with the file format)."""

from __future__ import annotations

import argparse
import json

from .common import add_model_options, load_model


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("info", help="show a model's rates, bitrate and size")
    add_model_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    print(json.dumps(load_model(args).info(), indent=2))
    return 0
