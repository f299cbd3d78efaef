"""Command line: ``python -m smoothviz {train, quickstart, report} ...``.

Bad values exit with status 2 and a one-line message naming the option; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Union, get_args, get_origin

from smoothviz.config import ConfigError, TrainConfig


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_optional(inner):
    def parse(text: str):
        return None if text.strip().lower() == "none" else inner(text)

    parse.__name__ = getattr(inner, "__name__", "value")
    return parse


def _parse_layers(text: str):
    if text.strip().lower() == "none":
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per TrainConfig field, typed, with its documented default."""
    docs = TrainConfig.field_help()
    for name, hint in TrainConfig.field_types().items():
        options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        base = next(o for o in options if o is not type(None))
        if name == "layers":
            parse = _parse_layers
            metavar = "NAME,NAME,..."
        elif base is bool:
            parse, metavar = _parse_bool, "{true,false}"
        else:
            parse, metavar = base, base.__name__.upper()
        if type(None) in options and name != "layers":
            parse = _parse_optional(parse)
        default = TrainConfig.default(name)
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=parse,
            default=default,
            metavar=metavar,
            help=f"{docs[name]} (default: {default})",
        )


def _config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{name: getattr(args, name) for name in TrainConfig.field_names()})


def _cmd_train(args: argparse.Namespace) -> int:
    from smoothviz.training import train

    cfg = _config_from_args(args)
    run = train(cfg, cache_dir=args.cache_dir, progress=not args.quiet)
    # Under torchrun every rank runs this command; rank 0 speaks for the job.
    if int(os.environ.get("RANK", "0")) == 0:
        print(run.history.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"checkpoint: {run.checkpoint}" + (" (from cache)" if run.from_cache else ""))
    return 0


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from smoothviz.quickstart import run_quickstart

    table = run_quickstart(epochs=args.epochs, cache_dir=args.cache_dir, progress=not args.quiet)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m smoothviz",
        description="Train smooth and baseline models, compress them without fine-tuning, report.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_train = sub.add_parser(
        "train",
        help="train one model (or load it from the cache)",
        description="Train one model as configured; cached by config hash. Under "
        "torchrun --nproc_per_node=N it trains data-parallel (DistributedDataParallel; "
        "--batch-size is then the global batch).",
    )
    add_train_options(p_train)
    p_train.add_argument(
        "--cache-dir",
        default=None,
        help="checkpoint cache (default: $SMOOTHVIZ_CACHE or ~/.cache/smoothviz)",
    )
    p_train.add_argument("--quiet", action="store_true", help="no progress bar")
    p_train.set_defaults(func=_cmd_train)

    p_quick = sub.add_parser(
        "quickstart",
        help="train a baseline and smooth models on the default data and print a summary",
        description="Train a baseline, a nuclear-norm and a first-order smooth cnn on the embedded data; print a summary table.",
    )
    p_quick.add_argument("--epochs", type=int, default=4, help="epochs per model (default: 4)")
    p_quick.add_argument("--cache-dir", default=None, help="checkpoint cache")
    p_quick.add_argument("--quiet", action="store_true", help="no progress bars")
    p_quick.set_defaults(func=_cmd_quickstart)

    # --- report subcommand (smoothviz.report) is registered here ---
    from smoothviz.report import add_report_parser

    add_report_parser(sub)
    # --- end of report subcommand ---
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, TypeError, OSError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"smoothviz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished epochs are kept and resume on the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
