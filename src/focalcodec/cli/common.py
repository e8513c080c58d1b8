"""Options and helpers shared by the sub-commands: one flag for one idea everywhere.

======================  =================================================================
``-o/--output``         what a command writes (file, or folder for several outputs)
``-f/--force``          replace existing outputs (never an input)
``-q/--quiet``          no progress bar and no per-file lines
``--window``            seconds of audio per window for long inputs (bounded memory)
``--model``             preset, Hugging Face repo id or local checkpoint folder
``--device``            torch device, checked before any work (:func:`check_device`)
``--output-rate``       sample rate of written audio (Hz, or ``input`` where it makes sense)
``--features-model``    the model whose features make a kNN-VC speaker set (``vc``, ``serve``)
======================  =================================================================

This module imports neither torch nor numpy at import time, so ``focalcodec --help`` and
``focalcodec X --help`` stay fast.
"""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..limits import SAMPLE_RATE_RANGE, check_sample_rate, check_seconds
from ..runtime import check_device  # the --device check (commands import it from here)
from ..windowing import Windowing

DEFAULT_MODEL = "lucadellalib/focalcodec_50hz"
# The features model of kNN-VC when the converting model is causal (SPEC §3.4).
FEATURES_MODEL = "lucadellalib/focalcodec_50hz"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` for every option with a meaningful default (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or "default:" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def add_command(sub: argparse._SubParsersAction, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A sub-command parser with a one-line ``help`` (the command list) and a ``description``
    (its own ``--help``), showing defaults."""
    return sub.add_parser(name, help=help, description=description, formatter_class=HelpFormatter)


def add_output_option(parser: argparse.ArgumentParser, help: str, required: bool = True, **kwargs) -> None:
    parser.add_argument("-o", "--output", required=required, help=help, **kwargs)


def add_force_option(parser: argparse.ArgumentParser, what: str = "existing outputs") -> None:
    parser.add_argument("-f", "--force", action="store_true", help=f"replace {what} (inputs are never replaced)")


def add_quiet_option(parser: argparse.ArgumentParser, help: str = "no progress bar and no per-file lines") -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help=help)
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # old name


def window_seconds(text: str) -> float:
    """``--window`` values: a finite number of seconds, at least 1."""
    try:
        return check_seconds(text, "--window", minimum=1.0, strict=False)
    except InputError:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds, at least 1, got {text!r}") from None


def add_window_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=window_seconds,
        default=Windowing().window,
        metavar="SECONDS",
        help="seconds of audio per window for long inputs (non-causal models): inputs up to the window + 4 s of "
        "context go in one pass; memory grows with its square (60: about 3 GB on CPU with the full-size models; "
        "lower it to save memory, see docs/longform.md)",
    )


def windowing(args: argparse.Namespace) -> Windowing:
    return Windowing(window=args.window)


def positive_seconds(text: str) -> float:
    """A finite number of seconds (or milliseconds) above 0."""
    try:
        return check_seconds(text, "the value", minimum=0.0)
    except InputError:
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}") from None


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A whole number of at least 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
    return value


def output_rate(text: str) -> object:
    """``--output-rate`` values: Hz in :data:`focalcodec.limits.SAMPLE_RATE_RANGE`, or ``input``."""
    if text == "input":
        return text
    try:
        return check_sample_rate(text, "--output-rate")
    except InputError:
        lo, hi = SAMPLE_RATE_RANGE
        raise argparse.ArgumentTypeError(
            f"expected a sample rate in Hz in [{lo}, {hi}] or 'input', got {text!r}"
        ) from None


def hz(text: str) -> int:
    """A sample rate in Hz in :data:`focalcodec.limits.SAMPLE_RATE_RANGE` (no ``input``)."""
    try:
        return check_sample_rate(text, "the sample rate")
    except InputError:
        lo, hi = SAMPLE_RATE_RANGE
        raise argparse.ArgumentTypeError(f"expected a sample rate in Hz in [{lo}, {hi}], got {text!r}") from None


def add_output_rate_option(parser: argparse.ArgumentParser, allow_input: bool = True) -> None:
    parser.add_argument(
        "--output-rate",
        type=output_rate if allow_input else hz,
        default=None,
        metavar="HZ" if not allow_input else "HZ|input",
        help="sample rate of the written audio"
        + (", or 'input' for the original file's rate" if allow_input else "")
        + " (default: the model's output rate)",
    )


def add_model_options(parser: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    parser.add_argument("--model", default=default, help="preset name, Hugging Face repo id or local checkpoint folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")


def load_model(args: argparse.Namespace, source: str | None = None):
    """The model named by ``source`` (default ``--model``) on ``--device``, in eval mode."""
    from ..codec import FocalCodec

    device = check_device(args.device)
    return FocalCodec.from_pretrained(source or args.model, map_location=device)


def add_features_model_options(parser: argparse.ArgumentParser, speaker_sets: str) -> None:
    """``--features-model`` and ``--allow-other-weights``, with one meaning in ``vc`` and
    ``serve``: the model whose features make (or made) a speaker set, and whether a set
    built by other weights of that architecture is used anyway. ``speaker_sets`` names the
    command's speaker-set option in the help."""
    parser.add_argument(
        "--features-model",
        default=None,
        help=f"model whose continuous features make the matching set; {speaker_sets} must have been built by "
        f"it (default: --model, or {FEATURES_MODEL} when --model is causal)",
    )
    parser.add_argument(
        "--allow-other-weights",
        action="store_true",
        help=f"use {speaker_sets} even if built by other weights (same architecture) than the features model",
    )


def features_model(args: argparse.Namespace, codec=None):
    """The features model of kNN-VC (:func:`add_features_model_options`): ``--features-model``,
    else ``--model`` unless it is causal (then :data:`FEATURES_MODEL`). ``codec`` is ``--model``
    when the command has loaded it already (it is returned, not loaded twice, when it is the
    features model). The choice does not depend on what the run does, so a voice saved alone
    equals one built while converting, and a set ``vc`` built serves in ``serve``."""
    if args.features_model not in (None, args.model):
        return load_model(args, args.features_model)
    model = codec if codec is not None else load_model(args)
    if model.causal:
        model = load_model(args, args.features_model or FEATURES_MODEL)
    return model


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`InputError` now (before any work) when an optional package is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"{what} needs the optional package {module!r}: pip install 'focalcodec[{extra}]'")
