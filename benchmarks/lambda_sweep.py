"""Each regulariser's weight, swept: uncompressed accuracy and accuracy after compression, no fine-tuning.

For every regulariser (nuclear, first-order, second-order, proximal) and each of its log-spaced weights
in ``GRID``, trains the benchmark model (``resnet18`` width 16, 4 epochs on 20,000 full Fashion-MNIST
training images; the baseline is the same config with every weight 0), then compresses it with every
method in ``smoothviz.compress.METHODS`` to 50 / 70 / 85 % fewer parameters and measures the test
accuracy (plain, and after BatchNorm re-estimation as its own column). Writes, under ``--out``:

- ``lambda_sweep.csv``: one row per (regulariser, weight, method, target);
- ``lambda_sweep.json``: the rows, the configs and their hashes, the chosen weight per regulariser
  and provenance (device, versions, git SHA, date);
- ``lambda_sweep.md``: the tables and the chosen weights;
- ``lambda_sweep.png``: accuracy at 70 % fewer parameters vs the weight, one line per regulariser,
  one panel per method.

Resumable: trainings land in the shared checkpoint cache (``train`` loads a finished one), and each
model's compression rows are kept in the resume store ``<cache>/lambda_sweep/rows.jsonl`` (one
record per training, keyed by its cache key; ``benchmarks/_common.py``), so a restarted run redoes
only what is missing (a method added to ``METHODS`` later is the only new work).

    .venv/bin/python benchmarks/lambda_sweep.py              # 17 trainings: hours on 2 CPU cores
    .venv/bin/python benchmarks/lambda_sweep.py --workers 8  # one Dask task per training (one GPU)
    .venv/bin/python benchmarks/lambda_sweep.py --report     # rewrite the results from the cache only
    .venv/bin/python benchmarks/lambda_sweep.py --render-only JSON --out DIR  # only the Markdown

With ``--workers N`` (a local Dask cluster) or ``--scheduler ADDRESS`` the grid points that miss
rows are trained and compressed on the cluster, one task per training (smoothviz.distributed);
the data stay on the CPU and each worker compresses on its training's device. ``--train-only``
trains the grid into the checkpoint cache and measures nothing (to compress elsewhere later).

A run that has not measured every grid point (stopped early, or ``--report`` before every training
is cached) writes partial results and says so: ``"complete": false`` and the ``missing`` points in
the JSON, a "Partial results" section at the top of the Markdown, and per regulariser which weights
its chosen weight was picked from.

The choice of weights, the Markdown and the plot are in ``lambda_sweep_analysis.py``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import pandas as pd
import torch
from _common import Results, ResumeStore, add_render_only, provenance, render_source
from lambda_sweep_analysis import best_per_method, choose_weights, figure, render

from smoothviz import distributed
from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import default_cache_dir, load_dataset
from smoothviz.notebook_params import DEFAULT_METHODS, NotebookParams
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.provenance import environment_info
from smoothviz.sweep import sweep
from smoothviz.training import cache_key, load_cached, resolve_device, train

# Half-decade steps (×√10) around where each term starts to act on this model (docs/methods.md).
# The nuclear norm uses the amortised subgradient (refreshed every 20 steps), the setting whose cost
# benchmarks/results/regularizer_overhead.md measures at 1.3× the baseline's instead of 5×.
GRID: dict[str, tuple[float, ...]] = {
    "first_order": (6.3e-3, 2e-2, 6.3e-2, 2e-1),
    "second_order": (6.3e-3, 2e-2, 6.3e-2, 2e-1),
    "nuclear": (3e-4, 1e-3, 3e-3, 1e-2),
    "proximal": (1e-2, 3e-2, 1e-1, 3e-1),
}
# The main job's narrower model pays more for the same weight: on it the benchmark grid's 0.02
# costs 0.8 pp uncompressed (over the 0.5 pp limit) and 0.0063 nothing, so the rule's boundary lies
# between two grid points; its sweep adds the round weight between them (geometric middle 0.011).
MAIN_JOB_GRID: dict[str, tuple[float, ...]] = {"first_order": (6.3e-3, 1e-2, 2e-2, 6.3e-2, 2e-1)}
EXTRA = {"nuclear": {"nuclear_every": 20}}
REDUCTIONS = (0.5, 0.7, 0.85)


def main_job_model() -> dict:
    """The main job's training fields (the report's default preset), so its cached trainings serve."""
    cfg = NotebookParams().training_configs()["baseline"]
    return {k: getattr(cfg, k) for k in ("dataset", "model", "width", "epochs", "train_subset")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        choices=["benchmark", "main_job"],
        default="benchmark",
        help="benchmark: resnet18 w16, every regulariser and method (default); main_job: the "
        "report's default trainings, first-order only, the report's default methods",
    )
    p.add_argument(
        "--regularisers", nargs="+", default=None, choices=list(GRID), help="which to sweep"
    )
    p.add_argument("--methods", nargs="+", default=None, choices=list(METHODS))
    p.add_argument("--reductions", type=float, nargs="+", default=list(REDUCTIONS))
    p.add_argument(
        "--report", action="store_true", help="train nothing: write the results from the cache"
    )
    p.add_argument(
        "--depth-first",
        action="store_true",
        help="train one regulariser's whole grid before the next (default: breadth-first, middle "
        "weights first, so a run stopped early has covered every regulariser)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="train and compress the missing grid points on a local Dask cluster of N workers",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="... on the existing Dask cluster at ADDRESS (default: $SMOOTHVIZ_SCHEDULER when set)",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train every grid point into the checkpoint cache; measure and write nothing",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default=None, help="file names (default: lambda_sweep[_main_job])")
    add_render_only(p)
    args = p.parse_args(argv)
    main_job = args.model == "main_job"
    if args.regularisers is None:
        args.regularisers = ["first_order"] if main_job else list(GRID)
    if main_job and set(args.regularisers) - set(MAIN_JOB_GRID):
        p.error(f"--model main_job sweeps only {list(MAIN_JOB_GRID)}, got {args.regularisers}")
    if args.methods is None:
        args.methods = list(DEFAULT_METHODS) if main_job else list(METHODS)
    if args.name is None:
        args.name = "lambda_sweep_main_job" if main_job else "lambda_sweep"
    return args


def configs(
    regularisers, *, breadth_first: bool = True, model: dict | None = None, grid=None
) -> list[tuple[str, float, TrainConfig]]:
    """``(regulariser, weight, config)`` for the baseline (weight 0) and every grid point.

    Breadth-first visits the grids' middle weights of every regulariser, then the outer ones, so
    that a run stopped early (each training takes minutes) has measured every regulariser.
    """
    base = TrainConfig(**(BENCHMARK_MODEL if model is None else model))
    grid = GRID if grid is None else grid
    points = [(reg, i, value) for reg in regularisers for i, value in enumerate(grid[reg])]
    if breadth_first:
        # distance from the grid's middle, then the regulariser's position: 1, 2, 0, 3 for 4 values
        points.sort(key=lambda p: (abs(p[1] - (len(grid[p[0]]) - 1) / 2), p[1]))
    out = [("baseline", 0.0, base)]
    for reg, _, value in points:
        out.append((reg, value, base.replace(**{reg: value}, **EXTRA.get(reg, {}))))
    return out


def _rows_store() -> ResumeStore:
    """Each training's compression rows, in the checkpoint cache (wherever it is now)."""
    path = default_cache_dir() / "lambda_sweep" / "rows.jsonl"
    return ResumeStore(path, key=lambda record: record["cache_key"])


def _cached(cfg: TrainConfig) -> dict:
    return _rows_store().get(cache_key(cfg)) or {"rows": []}


def _todo(cached: dict, methods, reductions) -> list[str]:
    """The methods with at least one target not yet in ``cached``."""
    done = {(r["method"], r["target_reduction"]) for r in cached["rows"]}
    return [m for m in methods if any((m, t) not in done for t in reductions)]


def _store(cfg: TrainConfig, cached: dict, run, methods, table: pd.DataFrame) -> dict:
    """``cached`` with ``methods``' rows replaced by ``table``'s, kept in the resume store."""
    new = json.loads(table.drop(columns="training").to_json(orient="records"))
    keep = [r for r in cached["rows"] if r["method"] not in methods]
    out = {
        "cache_key": cache_key(cfg),
        "config": cfg.to_dict(),
        "history": run.history.to_dict(orient="records"),
        # where the rows were measured (each row's `device` is where it was compressed and timed)
        "measured": _code_at_start() | {"rows_device": sorted(set(table.device.dropna()))},
        "rows": keep + new,
    }
    _rows_store().put(out)
    return out


@functools.cache
def _code_at_start() -> dict:
    """Versions and git SHA when this process started measuring: the code it runs was read then,
    whatever is committed while it runs."""
    return {k: v for k, v in environment_info().items() if k != "device"}


def _selected(cached: dict, methods, reductions) -> list[dict]:
    return [
        r for r in cached["rows"] if r["method"] in methods and r["target_reduction"] in reductions
    ]


def measure(cfg: TrainConfig, methods, reductions, data, *, train_missing: bool) -> list[dict]:
    """The compression rows of one training, computing only the (method, target) pairs not cached."""
    cached = _cached(cfg)
    todo_methods = _todo(cached, methods, reductions)
    if todo_methods:
        run = train(cfg, progress=True) if train_missing else load_cached(cfg)
        if run is None:
            return _selected(cached, methods, reductions)
        table = sweep(
            {"model": run.model.eval()},
            todo_methods,
            reductions,
            data,
            bn_reestimate=False,
            latency_repeats=3,
            progress=True,
        )
        cached = _store(cfg, cached, run, todo_methods, table)
    return _selected(cached, methods, reductions)


def measure_on_cluster(cfgs: list[TrainConfig], methods, reductions, data, request) -> None:
    """Train and compress every config that misses rows, one Dask task per training.

    Each task recomputes the methods any of the pending configs miss (a stale cache is the only
    case where those differ). A training whose task failed is reported and left unmeasured, so a
    re-run retries it.
    """
    from smoothviz.distributed import sweep_on_cluster

    pending = {}
    for cfg in cfgs:
        todo = _todo(_cached(cfg), methods, reductions)
        if todo:
            pending[cache_key(cfg)] = (cfg, todo)
    if not pending:
        return
    union = [m for m in methods if any(m in todo for _, todo in pending.values())]
    print(f"measuring {len(pending)} training(s) on the {request.describe()}", flush=True)

    def keep(key: str, part: pd.DataFrame) -> None:  # as each training ends: a stop loses none
        cfg = pending[key][0]
        if part.test_acc_uncompressed.isna().all():  # the task itself failed: nothing measured
            print(f"FAILED {cfg.config_hash()}: {part.error.dropna().iloc[0]}", flush=True)
            return
        _store(cfg, _cached(cfg), load_cached(cfg), union, part)

    sweep_on_cluster(
        {key: cfg for key, (cfg, _) in pending.items()},
        union,
        reductions,
        data,
        workers=request.workers,
        scheduler=request.scheduler,
        on_result=keep,
        bn_reestimate=False,
        latency_repeats=3,
    )


def train_all(cfgs: list[TrainConfig], request) -> None:
    """Every config into the checkpoint cache (on the cluster when one is asked for)."""
    if request is None:
        for cfg in cfgs:
            train(cfg, progress=True)
        return
    from smoothviz.distributed import as_completed_with_progress, connect, submit_trainings

    with connect(request) as client:
        futures = submit_trainings(client, cfgs)
        for future in as_completed_with_progress(list(futures.values()), desc="trainings"):
            if future.result() is not None:
                print(f"FAILED training: {future.result()}", flush=True)


def training_seconds(cfgs: dict[str, tuple[str, float, TrainConfig]]) -> list[float]:
    """Wall seconds of each measured training (its epochs' sum, from the cached history)."""
    out = []
    for _, _, cfg in cfgs.values():
        history = _cached(cfg).get("history") or []
        if history and all("seconds" in h for h in history):
            out.append(sum(h["seconds"] for h in history))
    return out


def measured_where(cfgs: dict[str, tuple[str, float, TrainConfig]]) -> dict[str, list[str]]:
    """Where the numbers come from: the trainings' devices and versions (checkpoint sidecars), and
    the compressions' (each cached rows file), as sorted lists of distinct values."""
    trained, compressed, code = set(), set(), set()
    for _, _, cfg in cfgs.values():
        sidecar = default_cache_dir() / "checkpoints" / f"{cache_key(cfg)}.json"
        if sidecar.is_file():
            env = json.loads(sidecar.read_text()).get("environment", {})
            trained.add(f"{env.get('device', '?')} (torch {env.get('torch', '?')})")
        cached = _cached(cfg)
        for r in cached["rows"]:
            if r.get("device"):
                compressed.add(r["device"])
        if "measured" in cached:
            m = cached["measured"]
            code.add(f"git {m.get('git_sha', '?')}, torch {m.get('torch', '?')}")
    return {
        "trainings": sorted(trained),
        "compression": sorted(compressed),
        "compression_code": sorted(code) or ["not recorded (rows cached before this was kept)"],
    }


def missing_points(cfgs: dict[str, tuple[str, float, TrainConfig]], df: pd.DataFrame) -> list[dict]:
    """The grid points without compression rows, each with why (not trained, or not compressed)."""
    measured = set(zip(df.regulariser, df.weight)) if len(df) else set()
    out = []
    in_grid_order = sorted(cfgs.values(), key=lambda p: ([*GRID, p[0]].index(p[0]), p[1]))
    for reg, weight, cfg in in_grid_order:
        if (reg, weight) in measured:
            continue
        trained = load_cached(cfg) is not None
        out.append(
            {
                "regulariser": reg,
                "weight": weight,
                "config_hash": cfg.config_hash(),
                "why": "trained, not yet compressed" if trained else "not trained yet",
            }
        )
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    t0 = time.perf_counter()
    _code_at_start()
    request = distributed.resolve(args.workers, args.scheduler)
    model = main_job_model() if args.model == "main_job" else BENCHMARK_MODEL
    grid = MAIN_JOB_GRID if args.model == "main_job" else GRID
    points = configs(args.regularisers, breadth_first=not args.depth_first, model=model, grid=grid)
    if args.train_only:
        train_all([cfg for _, _, cfg in points], request)
        return
    device = resolve_device("auto")
    # A cluster's workers get the data through Dask: CPU tensors travel, CUDA ones need not.
    data = load_dataset(model["dataset"], device="cpu" if request else device)
    torch.manual_seed(0)
    if request is not None and not args.report:
        measure_on_cluster(
            [cfg for _, _, cfg in points], args.methods, args.reductions, data, request
        )
    rows, cfgs = [], {}
    for reg, weight, cfg in points:
        print(f"== {reg} {weight:g} ({cfg.config_hash()})", flush=True)
        train_here = not args.report and request is None
        for r in measure(cfg, args.methods, args.reductions, data, train_missing=train_here):
            rows.append({"regulariser": reg, "weight": weight, **r})
        cfgs[f"{reg}={weight:g}"] = (reg, weight, cfg)
    df = pd.DataFrame(rows)
    if len(df):  # tables and plot in grid order, whatever order the trainings ran in
        order = {reg: i for i, reg in enumerate(["baseline", *GRID])}
        df = df.sort_values(
            ["regulariser", "weight"],
            key=lambda c: c.map(order) if c.name == "regulariser" else c,
            kind="stable",
        ).reset_index(drop=True)
    if df.empty:
        raise SystemExit("nothing measured yet: run without --report first")
    chosen = choose_weights(df, grid)
    missing = missing_points(cfgs, df)
    where = measured_where(cfgs)
    seconds = time.perf_counter() - t0
    env = provenance(device, script=__file__, argv=argv)
    results.write_csv(df)
    payload = {
        "provenance": env,
        "model_preset": args.model,
        "benchmark_model": model,
        "best_weight_per_method": best_per_method(df),
        "grid": {reg: grid[reg] for reg in args.regularisers},
        "extra": EXTRA,
        "reductions": args.reductions,
        "methods": args.methods,
        "measured_where": where,
        "complete": not missing,
        "missing": missing,
        "invocation_seconds": seconds,
        "training_seconds": training_seconds(cfgs),
        "chosen": chosen,
        "configs": {k: c.to_dict() for k, (_, _, c) in cfgs.items()},
        "config_hashes": {k: c.config_hash() for k, (_, _, c) in cfgs.items()},
        "rows": json.loads(df.to_json(orient="records")),
    }
    results.write_json(payload)
    results.write_markdown(render(payload))
    write_plot(results, df, missing)
    print(results.path("md").read_text())


def write_plot(results: Results, df: pd.DataFrame, missing: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(df, missing)
    results.write_png(fig, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
