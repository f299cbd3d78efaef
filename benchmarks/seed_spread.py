"""The seed spread: both trainings at several seeds, compressed, smooth minus baseline paired by seed.

Trains the report's two trainings (the ``default`` preset unless ``--preset``/``-p`` say otherwise)
at seeds 0..N-1 through the checkpoint cache (trained elsewhere already: loaded), compresses each
seed's pair with the trade-off notebook's methods at its targets (the notebook's own sweep,
``sweep(..., seed=seed, **TradeoffParams.sweep_options())``: a seed's two trainings share their
calibration images, every seed the same test images), and writes ``<out>/<name>.{json,md,png}``:

- the uncompressed accuracy of each training per seed, its mean and 95 % Student-t interval;
- per method and target, smooth minus baseline per seed, its mean, the t interval of the per-seed
  differences and the verdict (benefit / harm / unclear, ``smoothviz.headline.differences``);
- a plot of the per-seed differences (points) with their mean and interval.

The report's headline quotes ``seed_spread.json`` (the default configuration) when a one-seed run
has the same configuration (``smoothviz.headline.load_seed_spread``). Each finished seed is kept
in ``<out>/<name>.partial.jsonl`` (``_common.ResumeStore``), so a stopped run resumes with the next
seed; ``--fresh`` measures everything again (after a change to the code, say). Trainings can run
on a Dask cluster (``--workers N`` or ``--scheduler ADDRESS``); the sweeps run here.

The search of issue 23 item 7 (a configuration whose verdict at 70 % is clear) is
``--search NAME=V1,V2 ...``: every combination of the values (any notebook parameter: ``first_order``,
``width``, ``epochs``, ``train_subset``, ``methods``...) is measured the same way and the summary
(``<name>.{json,md,png}``, default name ``seed_spread_search``) gives per configuration and
method the difference at each target with its interval and verdict, the uncompressed accuracies,
and the seconds each seed's two trainings and its sweep took (what the main job's 300 s must fit).

    python benchmarks/seed_spread.py --seeds 5                       # seed_spread.*
    python benchmarks/seed_spread.py --preset full --seeds 3         # seed_spread_full.*
    python benchmarks/seed_spread.py --seeds 5 --search first_order=0.005,0.02 --search width=8,12
    python benchmarks/seed_spread.py --render-only JSON --out DIR    # only the .md
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from _common import Results, ResumeStore, add_render_only, provenance, render_source  # noqa: E402

from smoothviz import distributed  # noqa: E402
from smoothviz.config import ConfigError  # noqa: E402
from smoothviz.headline import (  # noqa: E402
    KEY_REDUCTION,
    comparison_configuration,
    differences,
    headline_table,
)
from smoothviz.notebook_params import TradeoffParams  # noqa: E402
from smoothviz.presets import PRESETS  # noqa: E402
from smoothviz.report.plan import (  # noqa: E402
    parse_grid,
    parse_parameters,
    parse_value,
    resolve_preset,
)
from smoothviz.stats import t_interval  # noqa: E402
from smoothviz.sweep import sweep  # noqa: E402
from smoothviz.training import resolve_device, train  # noqa: E402

TRAININGS = ("baseline", "smooth")


# --------------------------------------------------------------------------- configuration
def make_params(preset: str, overrides: dict[str, Any]) -> TradeoffParams:
    """The trade-off notebook's parameters for ``preset`` with ``overrides`` (as the report plans
    them: the embedded-data fallback applies when the full Fashion-MNIST is not installed)."""
    values, _ = resolve_preset(preset, named=set(overrides))
    values = {**values, **overrides}
    types = TradeoffParams.field_types()
    for name, value in values.items():  # "-p methods=svd,svd_data_aware", as the report reads it
        if isinstance(value, str) and str(types.get(name, "")).startswith("tuple"):
            values[name] = [parse_value(v) for v in value.split(",") if v.strip()]
    fields = set(TradeoffParams.field_names())
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}; allowed: {sorted(fields)}")
    if "seeds" in values or "seed" in values:
        raise ConfigError("give the seeds with --seeds, not -p seeds/seed")
    return TradeoffParams.from_dict(values)


def config_key(params: TradeoffParams, data_name: str, test_images: int) -> str:
    """A short name of what a seed's record must match to be reused: the trainings (any seed),
    the test split, methods and targets."""
    what = comparison_configuration(params.training_configs(), data_name, test_images)
    what |= {"methods": params.method_list, "targets": list(params.reductions)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- measuring
def train_all(params: TradeoffParams, seeds: list[int], client, log) -> None:
    """Every seed's two trainings into the checkpoint cache (on the cluster when there is one)."""
    configs = [cfg for s in seeds for cfg in params.training_configs(s).values()]
    if client is None:
        for cfg in configs:
            print(f"  training seed {cfg.seed} ({cfg.config_hash()}) ...", file=log, flush=True)
            train(cfg, progress=False)
        return
    futures = distributed.submit_trainings(client, configs)
    for cfg, future in futures.items():
        error = future.result()
        if error is not None:
            raise SystemExit(f"training {cfg.config_hash()} (seed {cfg.seed}) failed: {error}")


def measure_seed(params: TradeoffParams, seed: int, data) -> dict[str, Any]:
    """One seed: its two trainings (from the cache) swept as the notebook sweeps them."""
    runs = {name: train(cfg, progress=False) for name, cfg in params.training_configs(seed).items()}
    models = {name: run.model for name, run in runs.items()}
    options = params.sweep_options() | {"per_image": False}
    t0 = time.perf_counter()
    rows = sweep(models, params.method_list, params.reductions, data, seed=seed, **options)
    return {
        "seed": seed,
        "rows": json.loads(rows.to_json(orient="records")),
        "train_seconds": {n: float(r.history["seconds"].sum()) for n, r in runs.items()},
        "sweep_seconds": time.perf_counter() - t0,
    }


def summarise(params: TradeoffParams, records: list[dict], data_name: str, n_test: int) -> dict:
    """The payload of one configuration from its per-seed records."""
    rows = pd.DataFrame([r for rec in records for r in rec["rows"]])
    seeds = [rec["seed"] for rec in records]
    uncompressed = {}
    for training in TRAININGS:
        per_seed = rows[rows.training == training].groupby("seed")["test_acc_uncompressed"].first()
        ci = t_interval(per_seed.to_numpy())
        uncompressed[training] = {
            "per_seed": {str(k): float(v) for k, v in per_seed.items()},
            "mean": ci.mean,
            "ci95": [ci.low, ci.high],
        }
    diffs = []
    for d in differences(rows).to_dict("records"):
        at = rows[(rows.method == d["method"]) & (rows.target_reduction == d["target_reduction"])]
        pivot = at.pivot_table(index="seed", columns="training", values="test_acc")
        per_seed = (pivot["smooth"] - pivot["baseline"]).dropna() if len(pivot) else pd.Series()
        diffs.append(
            {
                "method": d["method"],
                "target_reduction": d["target_reduction"],
                "per_seed": {str(k): float(v) for k, v in per_seed.items()},
                "difference_mean": d["difference_mean"],
                "difference_ci95": [d["difference_ci95_low"], d["difference_ci95_high"]],
                "n_seeds": int(d["n_seeds"]),
                "ci_source": d["ci_source"],
                "verdict": d["verdict"],
                "smooth_acc": d["smooth_acc"],
                "baseline_acc": d["baseline_acc"],
            }
        )
    return {
        "configuration": comparison_configuration(params.training_configs(), data_name, n_test),
        "parameters": params.to_dict() | {"seeds": seeds},
        "methods": params.method_list,
        "targets": list(params.reductions),
        "seeds": seeds,
        "uncompressed": uncompressed,
        "differences": diffs,
        "headline": json.loads(headline_table(rows).to_json(orient="records")),
        "train_seconds": {str(r["seed"]): r["train_seconds"] for r in records},
        "sweep_seconds": {str(r["seed"]): r["sweep_seconds"] for r in records},
        "rows": json.loads(rows.to_json(orient="records")),
    }


def measure_config(params, seeds, data, store: ResumeStore, client, log) -> dict:
    """Every seed of one configuration, resuming from the store; its payload."""
    key = config_key(params, data.name, len(data.y_test))
    done = store.records()
    todo = [s for s in seeds if (key, s) not in done]
    if todo:
        train_all(params, todo, client, log)
    for seed in todo:
        print(f"  sweeping seed {seed} ...", file=log, flush=True)
        store.put({"config": key} | measure_seed(params, seed, data))
    records = [store.get((key, s)) for s in seeds]
    return summarise(params, records, data.name, len(data.y_test))


# --------------------------------------------------------------------------- rendering
def _pp(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.1f}"


def _acc(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _ci(ci: list, fmt=_pp) -> str:
    lo, hi = ci
    return "—" if lo is None or hi is None else f"{fmt(lo)} to {fmt(hi)}"


def describe(parameters: dict) -> str:
    """A configuration in words."""
    images = "all" if parameters["train_subset"] is None else f"{parameters['train_subset']:,}"
    regs = [
        f"{k.replace('_', '-')} {parameters[k]:g}"
        for k in ("first_order", "second_order", "nuclear")
        if parameters[k]
    ]
    return (
        f"{parameters['model']} width {parameters['width']}, {parameters['epochs']} epochs on "
        f"{images} {parameters['dataset']} training images; smooth: {', '.join(regs)}"
    )


def config_markdown(c: dict) -> list[str]:
    """The tables of one configuration's payload."""
    seeds = c["seeds"]
    lines = [
        f"Configuration: {describe(c['parameters'])}; methods {', '.join(c['methods'])}; test "
        f"split {c['configuration']['dataset']}, {c['configuration']['test_images']:,} images; "
        f"seeds {', '.join(map(str, seeds))} (each seed: initialisation, data order and the "
        "calibration images of both trainings).",
        "",
        "Uncompressed test accuracy (%):",
        "",
        "| training | mean | 95 % CI | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|---:|---:|" + "---:|" * len(seeds),
    ]
    for training, u in c["uncompressed"].items():
        per = " | ".join(_acc(u["per_seed"].get(str(s))) for s in seeds)
        lines.append(f"| {training} | {_acc(u['mean'])} | {_ci(u['ci95'], _acc)} | {per} |")
    lines += [
        "",
        "Smooth minus baseline after compression, no fine-tuning, paired by seed (pp; the "
        "interval is the Student-t interval of the per-seed differences):",
        "",
        "| method | target | mean | 95 % CI | verdict | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |",
        "|---|---:|---:|---:|---|" + "---:|" * len(seeds),
    ]
    for d in c["differences"]:
        per = " | ".join(_pp(d["per_seed"].get(str(s))) for s in seeds)
        lines.append(
            f"| {d['method']} | {100 * d['target_reduction']:.0f} % | {_pp(d['difference_mean'])} "
            f"| {_ci(d['difference_ci95'])} | {d['verdict']} | {per} |"
        )
    lines += ["", "Compressed test accuracy, mean over seeds (%) [95 % CI]:", ""]
    lines += ["| method | target | baseline | smooth |", "|---|---:|---:|---:|"]
    table = pd.DataFrame(c["headline"])
    for (method, target), g in table.groupby(["method", "target_reduction"], sort=False):
        cells = []
        for training in TRAININGS:
            r = g[g.training == training]
            if r.empty:
                cells.append("—")
                continue
            r = r.iloc[0]
            cells.append(
                f"{_acc(r['test_acc'])} [{_ci([r['test_acc_ci95_low'], r['test_acc_ci95_high']], _acc)}]"
            )
        lines.append(f"| {method} | {100 * target:.0f} % | {cells[0]} | {cells[1]} |")
    train_s = [sum(v.values()) for v in c["train_seconds"].values()]
    sweep_s = list(c["sweep_seconds"].values())
    lines += [
        "",
        f"Seconds per seed (this machine): both trainings {np.mean(train_s):.0f} (from their "
        f"histories; 0 when loaded from a cache made elsewhere), the sweep {np.mean(sweep_s):.0f}.",
        "",
    ]
    return lines


def markdown(payload: dict) -> str:
    """The report of a result JSON (one configuration, or a search's summary)."""
    env = payload["provenance"]
    head = [
        f"# {payload['title']}",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']}",
        "",
    ]
    if "configurations" not in payload:
        return "\n".join(head + config_markdown(payload) + [f"Reproduce: `{env['command']}`", ""])
    lines = head + [
        f"Search over {', '.join(f'{k} = {v}' for k, v in payload['search'].items())}; "
        f"{len(payload['configurations'][0]['seeds'])} seeds each. Per configuration and method "
        f"at {100 * KEY_REDUCTION:.0f} % fewer parameters: smooth minus baseline (pp) with the "
        "t interval of the per-seed differences; seconds per seed on this machine.",
        "",
        "| configuration | method | mean | 95 % CI | verdict | baseline / smooth uncompressed "
        "| trainings s | sweep s |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    for c in payload["configurations"]:
        for d in c["differences"]:
            if abs(d["target_reduction"] - KEY_REDUCTION) > 1e-9:
                continue
            u = c["uncompressed"]
            train_s = np.mean([sum(v.values()) for v in c["train_seconds"].values()])
            lines.append(
                f"| {c['label']} | {d['method']} | {_pp(d['difference_mean'])} | "
                f"{_ci(d['difference_ci95'])} | {d['verdict']} | {_acc(u['baseline']['mean'])} / "
                f"{_acc(u['smooth']['mean'])} | {train_s:.0f} | "
                f"{np.mean(list(c['sweep_seconds'].values())):.0f} |"
            )
    for c in payload["configurations"]:
        lines += ["", f"## {c['label']}", ""] + config_markdown(c)
    return "\n".join(lines + [f"Reproduce: `{env['command']}`", ""])


def figure(configs: list[dict]):
    """Per configuration (row) and method (column): the per-seed differences at each target as
    points, their mean and 95 % t interval as a bar, and zero."""
    methods = list(dict.fromkeys(d["method"] for c in configs for d in c["differences"]))
    fig, axes = plt.subplots(
        len(configs),
        len(methods),
        figsize=(3.6 * len(methods), 3.0 * len(configs)),
        squeeze=False,
        sharey="row",
        layout="constrained",
    )
    for row, c in zip(axes, configs):
        for ax, method in zip(row, methods):
            ds = [d for d in c["differences"] if d["method"] == method]
            for i, d in enumerate(ds):
                values = [100 * v for v in d["per_seed"].values()]
                jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
                ax.scatter(i + np.asarray(jitter), values, s=14, color="0.35", zorder=3)
                lo, hi = d["difference_ci95"]
                if lo is not None and hi is not None:
                    mean = 100 * d["difference_mean"]
                    ax.errorbar(
                        i + 0.3,
                        mean,
                        yerr=[[mean - 100 * lo], [100 * hi - mean]],
                        fmt="o",
                        color="C3",
                        capsize=3,
                    )
            ax.axhline(0, color="0.5", linewidth=0.8)
            ax.set_xticks(range(len(ds)), [f"{100 * d['target_reduction']:.0f} %" for d in ds])
            ax.set_title(f"{method}" + (f"\n{c['label']}" if len(configs) > 1 else ""), fontsize=9)
            ax.set_xlabel("parameters removed")
            ax.set_ylabel("smooth − baseline (pp)")
    fig.suptitle("Per-seed differences (grey), mean with 95 % t interval (red)")
    return fig


# --------------------------------------------------------------------------- main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("-p", dest="parameters", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--search", action="append", default=[], metavar="NAME=V1,V2")
    p.add_argument("--name", default=None, help="result files' stem (default from the options)")
    p.add_argument("--workers", type=int, default=None, help="train on a local Dask cluster")
    p.add_argument("--scheduler", default=None, help="train on the Dask cluster at ADDRESS")
    p.add_argument("--fresh", action="store_true", help="forget finished seeds and measure again")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    args = p.parse_args(argv)
    name = args.name or "seed_spread" + (
        "_search" if args.search else ("" if args.preset == "default" else f"_{args.preset}")
    )
    results = Results(args.out, name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        return
    if args.seeds < 2:
        raise SystemExit(f"--seeds must be >= 2 (a spread needs two seeds), got {args.seeds}")
    overrides = parse_parameters(args.parameters)
    grid = parse_grid(args.search)
    both = sorted(set(overrides) & set(grid))
    if both:
        raise SystemExit(f"{both} given with both -p and --search")
    combos = [dict(zip(grid, c)) for c in itertools.product(*grid.values())] if grid else [{}]
    try:
        plans = [(c, make_params(args.preset, overrides | c)) for c in combos]
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc
    seeds = list(range(args.seeds))
    store = ResumeStore(args.out / f"{name}.partial.jsonl", key=lambda r: (r["config"], r["seed"]))
    if args.fresh:
        store.clear()
    cluster = distributed.resolve(args.workers, args.scheduler)
    log = sys.stderr
    payloads = []
    with distributed.connect(cluster, log=log) if cluster else contextlib.nullcontext() as client:
        for combo, params in plans:
            label = ", ".join(f"{k}={v!r}" for k, v in combo.items()) or "configuration"
            print(f"{label}: seeds {seeds}", file=log, flush=True)
            data = params.load_data()
            payload = measure_config(params, seeds, data, store, client, log)
            payloads.append(payload | {"label": label})
    device = str(resolve_device(plans[0][1].device))
    env = provenance(device, script=__file__, argv=argv)
    if grid:
        payload = {
            "title": "Seed spread search: which configuration gives a clear verdict",
            "search": {k: [repr(v) for v in vs] for k, vs in grid.items()},
            "preset": args.preset,
            "overrides": overrides,
            "configurations": payloads,
        }
    else:
        what = (
            "default configuration"
            if args.preset == "default" and not overrides
            else (f"preset {args.preset}" + (f", {overrides}" if overrides else ""))
        )
        payload = payloads[0] | {
            "title": f"Seed spread: smooth minus baseline over {len(seeds)} seeds ({what})",
            "preset": args.preset,
            "overrides": overrides,
        }
    payload["provenance"] = env
    results.write_json(payload, indent=1)
    results.write_markdown(markdown(payload))
    fig = figure(payloads)
    results.write_png(fig, dpi=110)
    plt.close(fig)
    store.clear()
    print(results.path("md"))


if __name__ == "__main__":
    main()
