"""Widget latency: the time one slider move takes, while dragging and once released.

For :class:`~smoothviz.widgets.RankExplorer` (the global reduction slider and one per-layer rank
slider) and :class:`~smoothviz.widgets.PruneExplorer` (the ratio slider, magnitude and structured),
on two set-ups, on the CPU:

- ``default``: the exploration notebook's defaults, read from
  :class:`smoothviz.notebook_params.ExploreParams` (its model, dataset, test subset, drag subset and
  initial sliders), with both of its trainings as the notebook loads them;
- ``resnet18``: the shared cached ``TrainConfig(dataset="fashion-mnist", model="resnet18",
  width=16, epochs=4, train_subset=20000)`` on the full 10,000-image test set, with the notebook's
  drag subset.

A *drag* move is one value set on a slider, as a browser sends it while the slider moves: the
observers run, the drag subset is evaluated and the readouts and the figure are refreshed. A
*release* is what runs once the slider has been still for ``settle_seconds``: the full test set
(the settle delay itself is not counted). Each gesture is ``--moves`` drag moves of one step, then
a release; the table gives the median and the maximum over ``--gestures`` gestures.

The same gestures are run with the widgets as they were before issue 14 (``smoothviz/widgets.py``
read from git at ``--before-ref``, executed against today's package) and with the current ones, in
the same process, so the ratio is measured side by side. Wall time and process CPU time (all
threads) are both recorded: on a loaded machine the CPU time is the steadier of the two.

Run from the repository root::

    PYTHONPATH=. python benchmarks/widget_latency.py            # both set-ups, before and after
    PYTHONPATH=. python benchmarks/widget_latency.py --setups resnet18 --skip-before

Writes ``benchmarks/results/widget_latency.json`` and ``.md`` (``--render-only [JSON]``: only the
``.md``, from a stored result).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from _common import Results, add_render_only, provenance, render_source

from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.measure import evaluate
from smoothviz.notebook_params import ExploreParams
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.provenance import REPO_ROOT
from smoothviz.training import train

# The last commit before the widgets were reworked for issue 14.
BEFORE_REF = "5c851634287308524033d5acb23bb2d4e5d22358"
RESNET18 = TrainConfig(**BENCHMARK_MODEL)
# Targets of issue 14 on the 2-core CPU: (drag, release) in seconds.
TARGETS = {"default": (0.2, 1.0), "resnet18": (0.5, 3.0)}
SETTLE_NEVER = 3600.0  # timers never fire by themselves; the benchmark releases by hand


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", nargs="+", default=["default", "resnet18"], choices=list(TARGETS))
    p.add_argument("--gestures", type=int, default=3, help="gestures per slider")
    p.add_argument("--moves", type=int, default=5, help="drag moves per gesture")
    p.add_argument("--before-ref", default=BEFORE_REF, help="git commit of the 'before' widgets")
    p.add_argument("--skip-before", action="store_true", help="time the current widgets only")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="widget_latency")
    add_render_only(p)
    return p.parse_args(argv)


def load_before(ref: str) -> types.ModuleType:
    """``smoothviz/widgets.py`` as it was at ``ref``, imported as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{ref}:smoothviz/widgets.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec = importlib.util.spec_from_loader("smoothviz_widgets_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    exec(compile(source, f"{ref[:10]}:smoothviz/widgets.py", "exec"), module.__dict__)
    return module


def setup(name: str) -> dict[str, Any]:
    """Models, data and explorer arguments of one set-up (as the notebook builds them)."""
    params = ExploreParams()
    common = {"drag_subset": params.drag_subset, "seed": params.seeds[0]}
    if name == "default":
        runs = params.train_runs()
        models = {"smooth": runs["smooth"].model, "baseline": runs["baseline"].model}
        data = params.load_data()
        describe = (
            f"{params.model} (width {params.width}) on {params.dataset}, "
            f"{len(data.y_test)} test images (ExploreParams defaults)"
        )
    else:
        models = {"baseline": train(RESNET18, progress=False).model}
        data = load_dataset(RESNET18.dataset)
        describe = f"resnet18 (width 16) on {RESNET18.dataset}, {len(data.y_test)} test images"
    return {
        "models": models,
        "data": data,
        "describe": describe,
        "rank": {**common, "param_reduction": params.param_reduction},
        "prune": common,
        "prune_reduction": params.prune_ratio,
        "drag_subset": params.drag_subset,
    }


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def _steps(current: float, step: float, moves: int, lo: float, hi: float, down: bool):
    values, v = [], current
    for _ in range(moves):
        nxt = v - step if down else v + step
        if not lo <= nxt <= hi:
            down = not down
            nxt = v - step if down else v + step
        v = round(nxt, 6)
        values.append(v)
    return values


async def run_gestures(explorer, slider, step, lo, hi, gestures: int, moves: int, quiet: bool):
    """Drag ``slider`` in ``gestures`` gestures of ``moves`` steps, releasing after each one."""
    drags, releases = [], []
    out = io.StringIO()
    for g in range(gestures):
        for value in _steps(slider.value, step, moves, lo, hi, down=g % 2 == 0):
            with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
                with Timer() as t:
                    slider.value = value
            drags.append((t.wall, t.cpu))
            check(explorer)
        with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
            with Timer() as t:
                await release(explorer)
        releases.append((t.wall, t.cpu))
        check(explorer, full=True)
    return drags, releases


async def release(explorer) -> None:
    """What the settle timer does once the slider is still: the full test set (the current
    widgets measure it one batch per event-loop turn; wait until that is done)."""
    if hasattr(explorer, "settle"):  # the current explorers' public seam
        explorer.settle(stepwise=True)
        while explorer.pending is not None:
            await asyncio.sleep(0)
        return
    # The widgets before issue 14 (read from git) had no public seam: what their timer did.
    if explorer._timer is not None:
        explorer._timer.cancel()
        explorer._timer = None
    explorer._settled()
    while getattr(explorer, "_release", None) is not None:
        await asyncio.sleep(0)


def check(explorer, full: bool = False) -> None:
    if "error" in explorer.last:
        raise RuntimeError(f"the explorer failed: {explorer.last['error']}")
    if full and not explorer.last.get("full"):
        raise RuntimeError("the release did not evaluate the full test set")


def stats(samples: list[tuple[float, float]]) -> dict[str, Any]:
    walls = [w for w, _ in samples]
    cpus = [c for _, c in samples]
    return {
        "n": len(samples),
        "median_s": statistics.median(walls),
        "max_s": max(walls),
        "cpu_median_s": statistics.median(cpus),
        "cpu_max_s": max(cpus),
        "samples_s": [round(w, 4) for w in walls],
    }


async def time_version(version: str, module, s: dict, args) -> list[dict[str, Any]]:
    """Every slider of both explorers, for one version of the widgets."""
    quiet = version == "before"  # the old code display()s into stdout outside a kernel
    rows = []
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        with Timer() as opened:
            rank = module.RankExplorer(
                s["models"], s["data"], settle_seconds=SETTLE_NEVER, **s["rank"]
            )
            await release(rank)  # the first full evaluation, as after the settle delay
    layer = list(rank.rank_sliders)[len(rank.rank_sliders) // 2]
    sliders = [
        ("reduction", rank.reduction, 0.01, 0.05, 0.9),
        (f"rank of {layer}", rank.rank_sliders[layer], 1, 1, rank.rank_sliders[layer].max),
    ]
    for label, slider, step, lo, hi in sliders:
        drags, releases = await run_gestures(
            rank, slider, step, lo, hi, args.gestures, args.moves, quiet
        )
        rows.append(_row(version, "RankExplorer", label, drags, releases, opened))
    for method in module.PRUNE_METHODS:
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            with Timer() as opened:
                # The initial reduction was called ratio= before the one vocabulary.
                initial = {
                    "ratio" if version == "before" else "param_reduction": s["prune_reduction"]
                }
                prune = module.PruneExplorer(
                    s["models"], s["data"], settle_seconds=SETTLE_NEVER, **s["prune"], **initial
                )
                prune.method.value = method
                await release(prune)
        drags, releases = await run_gestures(
            prune,
            prune.ratio if version == "before" else prune.reduction,
            0.01,
            0.05,
            0.9,
            args.gestures,
            args.moves,
            quiet,
        )
        rows.append(_row(version, "PruneExplorer", f"ratio · {method}", drags, releases, opened))
    return rows


def _row(version, explorer, slider, drags, releases, opened) -> dict[str, Any]:
    return {
        "version": version,
        "explorer": explorer,
        "slider": slider,
        "drag": stats(drags),
        "release": stats(releases),
        "open_s": opened.wall,
    }


def raw_forward(s: dict) -> dict[str, dict[str, float]]:
    """What a release cannot beat: one forward pass over the full test set of each uncompressed
    model, through plain ``evaluate`` and through the widgets' ``IncrementalEvaluator`` (folded
    BatchNorm, channels-last, batches of 128; no cached activations)."""
    from smoothviz.incremental import IncrementalEvaluator

    out = {}
    data = s["data"]
    for name, model in s["models"].items():
        evaluate(model, (data.x_test[:500], data.y_test[:500]))  # warm-up
        with Timer() as plain:
            evaluate(model, (data.x_test, data.y_test))
        ev = IncrementalEvaluator(model, cache_mb=0)
        ev.add_inputs("full", data.x_test, data.y_test)
        with Timer() as fast:
            ev.evaluate("full")
        out[name] = {
            "n_test": len(data.y_test),
            "evaluate_wall_s": plain.wall,
            "evaluate_cpu_s": plain.cpu,
            "evaluator_wall_s": fast.wall,
            "evaluator_cpu_s": fast.cpu,
        }
    return out


async def run_setup(name: str, before, args) -> dict[str, Any]:
    import smoothviz.widgets as after

    s = setup(name)
    result = {
        "setup": name,
        "describe": s["describe"],
        "models": list(s["models"]),
        "drag_subset": s["drag_subset"],
        "target_drag_s": TARGETS[name][0],
        "target_release_s": TARGETS[name][1],
        "raw_forward": raw_forward(s),
        "rows": [],
    }
    if before is not None:
        result["rows"] += await time_version("before", before, s, args)
    result["rows"] += await time_version("after", after, s, args)
    return result


def markdown(results: list[dict], env: dict, meta: dict) -> str:
    """The tables of one run: per set-up, each slider's drag and release, before and after."""
    cpus = meta.get("cpu_count") or os.cpu_count()  # results before it was kept: this machine's
    lines = [
        "# Widget latency: one slider move, dragging (subset) and released (full test set)",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}.",
        f"Load average (1 min) before / after the run: {meta['load_before'][0]:.2f} / "
        f"{meta['load_after'][0]:.2f} on {cpus} CPUs"
        + (
            " — **timed while other work loaded the CPU: absolute times are inflated**"
            # the run itself keeps about its torch threads busy: only more than that is others'
            if meta["load_before"][0] > 1.0
            or meta["load_after"][0] > (meta.get("threads") or cpus or 1) + 0.5
            else ""
        )
        + ".",
        (
            f"Before: `smoothviz/widgets.py` at {meta['before_ref'][:10]}; after: this commit. "
            if meta["before_ref"]
            else "Current widgets only. "
        )
        + f"{meta['threads']} torch thread(s). "
        f"{meta['gestures']} gestures of {meta['moves']} drag moves each; median (max) of the "
        "wall time per move, seconds; CPU = process CPU time (all threads), steadier under load.",
        "",
    ]
    for r in results:
        lines += [
            f"## {r['setup']}: {r['describe']}",
            "",
            f"Targets: drag ≤ {r['target_drag_s']} s, release ≤ {r['target_release_s']} s. "
            f"Drag subset: {r['drag_subset']} images.",
            "",
            "One forward pass over the full test set, uncompressed model (wall / CPU seconds): "
            + "; ".join(
                f"{k}: plain `evaluate` {v['evaluate_wall_s']:.2f} / {v['evaluate_cpu_s']:.2f}, "
                f"`IncrementalEvaluator` {v['evaluator_wall_s']:.2f} / {v['evaluator_cpu_s']:.2f}"
                for k, v in r["raw_forward"].items()
            )
            + ".",
            "",
            "| explorer | slider | phase | before | after | after CPU | before / after | target met |",
            "|---|---|---|---:|---:|---:|---:|:---:|",
        ]
        by = {(x["version"], x["explorer"], x["slider"]): x for x in r["rows"]}
        for (version, explorer, slider), row in by.items():
            if version != "after":
                continue
            old = by.get(("before", explorer, slider))
            for phase, target in (("drag", r["target_drag_s"]), ("release", r["target_release_s"])):
                a = row[phase]
                b = old[phase] if old else None
                ratio = f"{b['median_s'] / a['median_s']:.1f}×" if b else "—"
                before = f"{b['median_s']:.3f} ({b['max_s']:.3f})" if b else "—"
                lines.append(
                    f"| {explorer} | {slider} | {phase} | {before} | "
                    f"{a['median_s']:.3f} ({a['max_s']:.3f}) | {a['cpu_median_s']:.3f} | "
                    f"{ratio} | {'yes' if a['median_s'] <= target else 'no'} |"
                )
        lines.append("")
    lines += [
        "Reproduce: `PYTHONPATH=. python benchmarks/widget_latency.py` (from the repository root).",
        "",
    ]
    return "\n".join(lines)


async def main_async(args, argv=None) -> None:
    before = None if args.skip_before else load_before(args.before_ref)
    meta = {
        "before_ref": args.before_ref if before else None,
        "gestures": args.gestures,
        "moves": args.moves,
        "threads": torch.get_num_threads(),
        "load_before": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    results = []
    for name in args.setups:
        results.append(await run_setup(name, before, args))
    meta["load_after"] = os.getloadavg()
    env = provenance("cpu", script=__file__, argv=argv)
    payload = {"environment": env, **meta, "results": results}
    out = Results(args.out, args.name)
    out.write_json(payload, indent=2, final_newline=True)
    out.write_markdown(markdown(results, env, meta))
    print(markdown(results, env, meta))


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        stored = json.loads(source.read_text())
        results.write_markdown(markdown(stored["results"], stored["environment"], stored))
        print(results.path("md").read_text())
        return
    if args.gestures < 1 or args.moves < 1:
        raise SystemExit("--gestures and --moves must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    asyncio.run(main_async(args, argv))  # callbacks find a running loop, as in a kernel


if __name__ == "__main__":
    main()
