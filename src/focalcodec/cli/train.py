"""``focalcodec train --config RECIPE.yaml [key.path=value ...]``: train one stage
(single process, or under ``torchrun --nproc_per_node N -m focalcodec train ...``);
``focalcodec train --export OUT --model ARCH SOURCES...``: assemble an official checkpoint."""

from __future__ import annotations

import argparse

from .common import add_command, add_force_option


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = add_command(
        sub,
        "train",
        help="train a stage from a YAML recipe, or export trained stages as a checkpoint",
        description="Train one FocalCodec stage (quantizer, decoder, pos_conv, encoder, joint). Overrides are "
        "key.path=value pairs, e.g. data.train=train.jsonl optim.lr=2e-4 train.precision=bf16. "
        "Run under torchrun for several GPUs or nodes. With --export, combine trained stages into "
        "config.json + model.safetensors.",
    )
    p.add_argument("--config", help="recipe YAML file or the name of a shipped recipe (see --list)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (training) or sources (export)")
    p.add_argument("--list", action="store_true", help="list the shipped recipes and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--export", metavar="OUT_DIR", help="export mode: write a checkpoint folder from the given sources")
    p.add_argument("--model", help="export mode: architecture (preset, config .json or checkpoint folder)")
    p.add_argument(
        "--checkpoint",
        choices=("auto", "best", "latest"),
        default="auto",
        help="export mode: which checkpoint of a run folder to take; auto = as the recipes keep: the latest "
        "for decoder runs, the best-validation one for the other stages (default: auto)",
    )
    add_force_option(p, "an existing --export folder, or the training run already in output_dir")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..train.config import builtin_configs, load_train_config

    if args.list:
        for name, path in sorted(builtin_configs().items()):
            print(f"{name}\t{path}")
        return 0
    if args.export:
        from ..outputs import check_targets, output_path
        from ..train.export import export_checkpoint

        if not args.model:
            raise ConfigError("--export needs --model (the architecture, e.g. focalcodec_50hz or a config.json)")
        sources = [o.split("=", 1)[-1] for o in args.overrides]
        check_targets([args.export], sources, args.force)
        with output_path(args.export, force=args.force, folder=True) as tmp:
            export_checkpoint(args.model, args.overrides, tmp, checkpoint=args.checkpoint)
        print(f"wrote {args.export}")
        return 0
    if not args.config:
        raise ConfigError("give --config RECIPE.yaml (or --list to see the shipped recipes)")
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    from ..train.trainer import train

    metrics = train(cfg, force=args.force)
    import os

    if int(os.environ.get("RANK", "0")) == 0 and metrics:
        print(" ".join(f"{k}={v:.5g}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float))))
    return 0
