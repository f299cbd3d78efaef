"""What each compression method costs the main job's trade-off notebook, on the default trainings.

Runs, one method at a time, the same sweep as ``notebooks/04_tradeoff.ipynb`` with the report's
``default`` preset (both trainings, every target, plain and BatchNorm-re-estimated accuracy on the
whole test split, the notebook's BN-image and latency settings) and records each method's wall time,
its compression time (``compress_seconds``, summed) and its accuracies. This is what decides which
methods the default report runs within the main job's 5 minutes (``TradeoffParams.methods``).

Trains nothing: the two default trainings must be in the checkpoint cache (``bash scripts/main.sh``
or ``python -m smoothviz train`` puts them there); otherwise it exits saying so. Writes
``benchmarks/results/report_methods_cost.{json,md}``. Timings taken while other work loads the CPU
are only comparable within one run (the Markdown gives the load average).

    .venv/bin/python benchmarks/report_methods_cost.py
    .venv/bin/python benchmarks/report_methods_cost.py --render-only JSON --out DIR  # only the .md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd
from _common import Results, add_render_only, provenance, render_source

from smoothviz.compress import METHODS
from smoothviz.data import load_dataset
from smoothviz.notebook_params import TradeoffParams
from smoothviz.sweep import sweep
from smoothviz.training import load_cached, resolve_device

# The notebook's own sweep settings (notebooks/04_tradeoff.ipynb).
BN_IMAGES = 1024
LATENCY_REPEATS = 5


def markdown(payload: dict) -> str:
    """The table of a result JSON: each method's cost and its accuracies at 70 %."""
    env, params, rows = payload["provenance"], payload["parameters"], payload["methods"]
    load_before, load_after = payload["load_average_before_after"]
    test_images = payload.get("test_images")
    if test_images is None:  # results written before the JSON kept it: count them again
        test_images = len(load_dataset(params["dataset"]).y_test)
    results = pd.DataFrame(payload["results"])
    at70 = results[results.target_reduction == 0.7].pivot_table(
        index="method", columns="training", values="test_acc", sort=False
    )
    lines = [
        "# Cost of each compression method in the default report's trade-off notebook",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']}; "
        f"1-min load average {load_before:.2f} before, {load_after:.2f} after (above the core "
        "count: other work shared the CPU and the seconds are upper bounds).",
        "",
        f"Both default trainings ({params['model']} width {params['width']}), targets "
        f"{', '.join(f'{r:.0%}' for r in params['reductions'])}, plain and BN-re-estimated "
        f"accuracy on the {params['dataset']} test split ({test_images:,} images).",
        "",
        "| method | wall s (all cells) | compression s | baseline at 70 % | smooth at 70 % |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = at70.loc[r["method"]] if r["method"] in at70.index else {}
        cells = [f"{acc.get(t, float('nan')):.4f}" for t in ("baseline", "smooth")]
        lines.append(
            f"| {r['method']} | {r['wall_seconds']:.1f} | {r['compress_seconds']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/report_methods_cost.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    args = p.parse_args(argv)
    results = Results(args.out, "report_methods_cost")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    params = TradeoffParams()
    device = resolve_device(params.device)
    models = {}
    for training, cfg in params.training_configs().items():
        run = load_cached(cfg)
        if run is None:
            raise SystemExit(
                f"the default {training} training is not cached: run the main job first"
            )
        models[training] = run.model.eval()
    data = load_dataset(params.dataset, device=device)
    load_before = os.getloadavg()[0]
    rows, tables = [], []
    for method in args.methods:
        t0 = time.perf_counter()
        table = sweep(
            models,
            [method],
            params.reductions,
            data,
            bn_reestimate=params.bn_reestimate,
            bn_images=BN_IMAGES,
            latency_repeats=LATENCY_REPEATS,
            progress=True,
        )
        seconds = time.perf_counter() - t0
        tables.append(table)
        rows.append(
            {
                "method": method,
                "wall_seconds": seconds,
                "compress_seconds": float(table["compress_seconds"].sum()),
                "cells": len(table),
            }
        )
        print(f"{method}: {seconds:.1f} s", flush=True)
    load_after = os.getloadavg()[0]
    payload = {
        "provenance": provenance(device, script=__file__, argv=argv),
        "preset": "default",
        "parameters": {k: v for k, v in params.__dict__.items()},
        "load_average_before_after": [load_before, load_after],
        "test_images": len(data.y_test),
        "methods": rows,
        "results": json.loads(pd.concat(tables, ignore_index=True).to_json(orient="records")),
    }
    results.write_json(payload, default=str)
    payload = json.loads(results.path("json").read_text())  # the parameters as the JSON has them
    results.write_markdown(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
