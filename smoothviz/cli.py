"""Command line: ``python -m smoothviz {train, quickstart, report} ...``.

Bad values exit with status 2 and a one-line message naming the option; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from typing import Any, Union, get_args, get_origin

from smoothviz.config import ConfigError, TrainConfig
from smoothviz.notebook_params import NOTEBOOKS
from smoothviz.presets import PRESETS


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


def _parse_seed_count(text: str) -> int:
    """``--seeds N``: a whole number of seeds >= 1 (the seeds 0..N-1)."""
    try:
        n = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of seeds >= 1 (seeds 0..N-1), got {text!r}"
        ) from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (seeds 0..N-1), got {n}")
    return n


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

    _add_report_parser(sub)
    return parser


def _add_report_parser(sub: Any) -> None:
    """The ``report`` subcommand (:func:`smoothviz.report.run_report`)."""
    p = sub.add_parser(
        "report",
        help="run the notebooks through papermill into an HTML report",
        description="Execute notebooks/ with papermill into reports/<run-id>/ (one folder per "
        "grid point), render them to HTML and write index.html; prints its path.",
    )
    p.add_argument(
        "--preset",
        default="default",
        choices=list(PRESETS),
        help="parameter set to start from (default: default)",
    )
    p.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a notebook parameter (repeatable)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run every combination of these values (repeatable)",
    )
    p.add_argument(
        "--seeds",
        type=_parse_seed_count,
        default=None,
        metavar="N",
        help="train and compare both models at seeds 0..N-1 and report means with 95 %% "
        "intervals over seeds (the same as -p seeds=[0,...,N-1]; default: the preset's, one seed)",
    )
    p.add_argument("--out", default="reports", help="parent folder of the run (default: reports)")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: time-based)")
    p.add_argument(
        "--notebooks",
        default=None,
        metavar="NAME,NAME",
        help=f"run only these notebooks (default: all of {list(NOTEBOOKS)})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the grid points in parallel on a local Dask cluster of N worker processes",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the grid points on the existing Dask cluster at ADDRESS (tcp://host:8786; "
        "default: $SMOOTHVIZ_SCHEDULER when set)",
    )
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    """Run the report; prints the path of index.html, returns the exit status."""
    from smoothviz.report import parse_grid, parse_parameters, run_report

    notebooks = [n.strip() for n in args.notebooks.split(",")] if args.notebooks else None
    parameters, grid = parse_parameters(args.parameters), parse_grid(args.grid)
    if args.seeds is not None:
        given = sorted({"seed", "seeds"} & (set(parameters) | set(grid)))
        if given:
            raise ConfigError(f"give --seeds or -p/--grid {'/'.join(given)}, not both")
        parameters["seeds"] = list(range(args.seeds))
    if "seed" in parameters or "seed" in grid:
        print(
            "smoothviz report: warning: the parameter 'seed' is deprecated (it still works for "
            "one release, as seeds=[N]); use --seeds N or -p seeds=[...]",
            file=sys.stderr,
        )
    result = run_report(
        args.preset,
        parameters,
        grid,
        out_dir=args.out,
        notebooks=notebooks,
        run_id=args.run_id,
        command="python -m smoothviz " + " ".join(sys.argv[1:]),
        log=None if args.quiet else sys.stderr,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print(result.index)
    if not result.ok:
        failed = [
            f"{p.folder}/{nb.name}"
            for p in result.points
            for nb in p.notebooks
            if nb.status == "failed"
        ]
        print(
            f"smoothviz report: failed notebook(s) {failed}; partial output linked from "
            f"{result.index}",
            file=sys.stderr,
        )
        return 1
    return 0


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
