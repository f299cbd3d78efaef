"""Where the trade-off notebook's time goes, and what one extra target costs, before and after reuse.

Runs the sweep of ``notebooks/04_tradeoff.ipynb`` (the main job's default methods and targets, its
sweep settings, ``TradeoffParams.sweep_options()``) on the main job's two trainings at seed 0 and
the whole test split, four times:

- ``default``: the default targets, evaluation reuse on (each compressed model evaluated from its
  first changed layer on, ``sweep(..., incremental=True)``);
- ``default, no reuse``: the same with every evaluation plain (``incremental=False``), i.e. before;
- ``extra``, ``extra, no reuse``: the same with one more target (``--extra``, default 0.75).

For each run: the wall time, the seconds spent in each phase (compression, evaluations, BatchNorm
re-estimation, latency, FLOPs; timers around those calls), how many evaluations went through the
cached prefix, and the 1-minute load average before and after. The cost of one extra target is
``extra`` minus ``default``, with and without reuse. ``--profile`` also writes cProfile's top
functions of the ``default`` run (proportions; they hold under load, the seconds do not).

Trains nothing: the two trainings must be in the checkpoint cache (``bash scripts/main.sh``);
otherwise it exits saying so. Time only on an idle machine: it refuses to start when the 1-minute
load average is above half the core count, unless ``--force`` (then the Markdown says so).

    .venv/bin/python benchmarks/main_job_profile.py [--extra 0.75] [--profile]
    .venv/bin/python benchmarks/main_job_profile.py --render-only JSON --out DIR  # only the .md
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import time
from collections.abc import Iterator
from pathlib import Path

from _common import Results, add_render_only, provenance, render_source

import smoothviz.sweep as sweep_module
from smoothviz.notebook_params import TradeoffParams
from smoothviz.training import load_cached, resolve_device
from smoothviz.variant_eval import VariantEvaluator

PHASES = {  # phase name -> (object, attribute) timed
    "compression": (sweep_module, "compress"),
    "evaluation (plain and BN re-estimated)": (VariantEvaluator, "evaluate"),
    "BN re-estimation (forward passes)": (sweep_module, "_bn_reestimate"),
    "latency": (sweep_module, "measure_latency"),
    "FLOPs": (sweep_module, "count_flops"),
}


@contextlib.contextmanager
def timed_phases(seconds: dict[str, float]) -> Iterator[None]:
    """Add the wall time of every call of each phase's function to ``seconds[phase]``."""
    saved = {}
    for phase, (owner, name) in PHASES.items():
        original = getattr(owner, name)
        saved[phase] = original
        seconds[phase] = 0.0

        def wrapper(*args, _original=original, _phase=phase, **kwargs):
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                seconds[_phase] += time.perf_counter() - t0

        setattr(owner, name, wrapper)
    try:
        yield
    finally:
        for phase, (owner, name) in PHASES.items():
            setattr(owner, name, saved[phase])


def one_run(models, params, data, reductions, incremental: bool, profile: bool) -> dict:
    """One sweep as the notebook runs it; its wall time, phases and evaluation counts."""
    seconds: dict[str, float] = {}
    counts = {"incremental": 0, "plain": 0}
    skipped: list[float] = []  # per evaluation: share of the multiply-adds not run again
    original_evaluate = VariantEvaluator.evaluate

    def counting(self, *args, **kwargs):
        before = self.plain_runs
        out = original_evaluate(self, *args, **kwargs)
        plain = self.plain_runs > before
        counts["plain" if plain else "incremental"] += 1
        info = None if plain else self.cache_info
        start = info.last_start if info is not None else 0
        skipped.append(info.work_before.get(start, 0.0) if info is not None and start else 0.0)
        return out

    profiler = cProfile.Profile() if profile else None
    load_before = os.getloadavg()[0]
    VariantEvaluator.evaluate = counting
    try:
        with timed_phases(seconds):
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            options = params.sweep_options() | {"incremental": incremental}
            sweep_module.sweep(models, params.method_list, reductions, data, **options)
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - t0
    finally:
        VariantEvaluator.evaluate = original_evaluate
    run = {
        "targets": list(reductions),
        "incremental": incremental,
        "wall_seconds": wall,
        "phase_seconds": seconds,
        "evaluations": counts,
        "skipped_share": skipped,
        "load_average_before_after": [load_before, os.getloadavg()[0]],
    }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        run["profile_top"] = text.getvalue()
    return run


def markdown(payload: dict) -> str:
    """The report of a result JSON: each run's phases, and the cost of one extra target."""
    env, runs = payload["provenance"], payload["runs"]
    by = {(r["name"]): r for r in runs}
    lines = [
        "# Where the trade-off notebook's time goes (main job, seed 0)",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']}"
        f"{' · **run with --force on a loaded machine: the seconds are upper bounds**' if payload['forced'] else ''}",
        "",
        f"Methods {', '.join(payload['methods'])}; both trainings; plain and BN-re-estimated "
        f"accuracy on {payload['test_images']:,} test images; default targets "
        f"{', '.join(f'{t:.0%}' for t in payload['default_targets'])}, extra target "
        f"{payload['extra']:.0%}.",
        "",
        "| run | wall s | "
        + " | ".join(PHASES)
        + " | evaluations via cached prefix / plain | multiply-adds skipped | "
        "1-min load before / after |",
        "|---|---:|" + "---:|" * len(PHASES) + "---:|---:|---:|",
    ]
    for r in runs:
        phases = " | ".join(f"{r['phase_seconds'][p]:.1f}" for p in PHASES)
        lo, hi = r["load_average_before_after"]
        ev = r["evaluations"]
        share = sum(r["skipped_share"]) / max(1, len(r["skipped_share"]))
        lines.append(
            f"| {r['name']} | {r['wall_seconds']:.1f} | {phases} | "
            f"{ev['incremental']} / {ev['plain']} | {100 * share:.0f} % | {lo:.2f} / {hi:.2f} |"
        )
    before = by["extra, no reuse"]["wall_seconds"] - by["default, no reuse"]["wall_seconds"]
    after = by["extra"]["wall_seconds"] - by["default"]["wall_seconds"]
    lines += [
        "",
        f"One extra target ({payload['extra']:.0%}) costs {before:.1f} s without the evaluation "
        f"reuse and {after:.1f} s with it (each the difference of two runs above).",
        "",
        "Phases are timed around the calls the sweep makes; evaluations include the BN-re-"
        "estimated ones, and BN re-estimation is only its forward passes on training images. "
        "Multiply-adds skipped: per evaluation, the share of the network's convolution and linear "
        "multiply-adds that run before the point it resumed from (machine-independent), averaged "
        "over the run's evaluations.",
        "",
        f"Reproduce: `{env['command']}`",
        "",
    ]
    top = next((r["profile_top"] for r in runs if r.get("profile_top")), None)
    if top:
        lines += [
            "## cProfile of the default run (top 40 by cumulative time)",
            "",
            "```",
            top,
            "```",
            "",
        ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extra", type=float, default=0.75, help="the extra target (default 0.75)")
    p.add_argument("--profile", action="store_true", help="also cProfile the default run")
    p.add_argument("--force", action="store_true", help="run even on a loaded machine")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    args = p.parse_args(argv)
    results = Results(args.out, "main_job_profile")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        return
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores / 2 and not args.force:
        raise SystemExit(
            f"the 1-minute load average is {load:.2f} on {cores} cores: time on an idle machine "
            "(or pass --force, and the result says it was loaded)"
        )
    params = TradeoffParams()
    runs = {name: load_cached(cfg) for name, cfg in params.training_configs().items()}
    missing = [name for name, run in runs.items() if run is None]
    if missing:
        raise SystemExit(
            f"the main job's {missing} training(s) are not in the checkpoint cache; run "
            "bash scripts/main.sh first"
        )
    models = {name: run.model for name, run in runs.items()}
    data = params.load_data()
    default = list(params.reductions)
    if args.extra in default:
        raise SystemExit(f"--extra {args.extra} is already a default target ({default})")
    extra = sorted(default + [args.extra])
    plan = [
        ("default", default, True, args.profile),
        ("default, no reuse", default, False, False),
        ("extra", extra, True, False),
        ("extra, no reuse", extra, False, False),
    ]
    out = []
    for name, targets, incremental, profile in plan:
        print(f"{name} ...", flush=True)
        out.append({"name": name} | one_run(models, params, data, targets, incremental, profile))
    device = resolve_device(params.device)
    payload = {
        "methods": params.method_list,
        "default_targets": default,
        "extra": args.extra,
        "test_images": len(data.y_test),
        "forced": bool(args.force and load > cores / 2),
        "runs": out,
        "provenance": provenance(device, script=__file__, argv=argv),
    }
    results.write_json(payload, indent=1)
    results.write_markdown(markdown(payload))
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
