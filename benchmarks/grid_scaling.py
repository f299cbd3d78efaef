"""Wall time of a 4-point report grid run serially and on a 2-worker Dask LocalCluster, side by side.

Both runs are the same ``python -m smoothviz report`` command (the second with ``--workers 2``),
each with its own empty checkpoint cache, so every point trains its two models in both. The
serial run's kernels use torch's default thread count (all cores); each Dask worker gets
``cores // workers`` torch threads. The wall times include everything a user waits for: the
local cluster's start and shutdown, kernel starts, training, compression and HTML rendering.
Runs alternate (serial, dask, serial, dask, ...) so slow drifts in machine load hit both alike.
Writes benchmarks/results/grid_scaling.{json,md} (``--out`` elsewhere).

    .venv/bin/python benchmarks/grid_scaling.py [--repeats 1] [--workers 2]
    .venv/bin/python benchmarks/grid_scaling.py --render-only [JSON] [--out DIR]  # only the .md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Results, add_render_only, provenance, render_source

from smoothviz.distributed import torch_threads_per_worker
from smoothviz.provenance import REPO_ROOT

# Four points (seeds), two notebooks each: train baseline + smooth, then the compression trade-off.
GRID = ["--grid", "seed=0,1,2,3"]
PARAMETERS = [
    "--notebooks=01_train,04_tradeoff",
    "-p", "model=cnn",
    "-p", "width=8",
    "-p", "epochs=2",
    "-p", "train_subset=2000",
    "-p", "eval_subset=500",
    "-p", "methods=svd,prune_magnitude",
    "-p", "reductions=[0.3,0.5]",
]  # fmt: skip


def run(extra: list[str], out: Path) -> dict:
    """One report run with an empty cache; its wall time and per-point statuses."""
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "SMOOTHVIZ_SCHEDULER"}
        env["SMOOTHVIZ_CACHE"] = cache
        cmd = [sys.executable, "-m", "smoothviz", "report", "--out", str(out), "--quiet"]
        cmd += PARAMETERS + GRID + extra
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    record = json.loads(
        (Path(proc.stdout.strip().splitlines()[-1]).parent / "report.json").read_text()
    )
    return {
        "seconds": seconds,
        "statuses": [p["status"] for p in record["points"]],
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
    }


def markdown(payload: dict) -> str:
    """The Markdown table of a result JSON (also: ``--render-only`` re-renders a stored one)."""
    env_info, runs = payload["environment"], payload["runs"]
    cores, workers = payload["cpu_cores"], payload["workers"]
    rows = [
        f"| {mode} | {r['seconds']:.1f} | {'/'.join(r['statuses'])} | "
        f"{r['load_average_before']:.2f} → {r['load_average_after']:.2f} |"
        for mode, mode_runs in runs.items()
        for r in mode_runs
    ]
    peak_load = max(
        max(r["load_average_before"], r["load_average_after"]) for rs in runs.values() for r in rs
    )
    quiet_load = min(r["load_average_before"] for rs in runs.values() for r in rs)
    load_note = (
        f"**Taken under load**: the 1-min load average reached {peak_load:.1f} on {cores} cores "
        "(other jobs shared the CPU, unevenly over time), so these times and their ratio are "
        "noisy; re-run on an idle machine before quoting them."
        # Each run keeps every core busy itself (load ~ cores): only more than that, or load
        # already there before the quietest start, is other work.
        if peak_load > cores + 0.5 or quiet_load > 1.0
        else f"The machine was idle (1-min load average at most {peak_load:.1f} on {cores} cores)."
    )
    lines = [
        f"# Report grid: 4 points serial vs a {workers}-worker Dask LocalCluster",
        "",
        f"Device: {env_info['device']} ({cores} cores) · torch {env_info['torch']} · "
        f"git {env_info['git_sha']} · {env_info['date']}",
        "",
        "Each point: `01_train` + `04_tradeoff`; both runs start from an empty checkpoint cache. "
        f"Dask: {workers} worker processes, {payload['torch_threads_per_worker']} torch thread(s) "
        "each; serial: torch's default threads.",
        "",
        "| mode | wall time (s) | point statuses | 1-min load average before → after |",
        "|---|---:|---|---|",
        *rows,
        "",
        f"Median serial / median Dask wall time: **{payload['speedup_serial_over_dask']:.2f}×**.",
        "",
        load_note,
        "",
        f"Serial: `{payload['command_serial']}`  ",
        f"Dask: `{payload['command_dask']}`",
        "",
        "Reproduce: `.venv/bin/python benchmarks/grid_scaling.py --repeats 1`",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs of each mode (alternating)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(parser)
    args = parser.parse_args(argv)
    results = Results(args.out, "grid_scaling")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        return
    results: dict[str, list[dict]] = {"serial": [], "dask": []}
    with tempfile.TemporaryDirectory() as reports:
        for i in range(args.repeats):
            for mode, extra in (("serial", []), ("dask", ["--workers", str(args.workers)])):
                results[mode].append(run(extra, Path(reports) / f"{mode}-{i}"))
                print(f"{mode} run {i + 1}: {results[mode][-1]['seconds']:.1f} s", flush=True)
    median = {m: statistics.median(r["seconds"] for r in runs) for m, runs in results.items()}
    speedup = median["serial"] / median["dask"]
    env_info = provenance("cpu", script=__file__, argv=argv)
    cores = os.cpu_count()
    command = "python -m smoothviz report --quiet " + " ".join(PARAMETERS + GRID)
    payload = {
        "command_serial": command,
        "command_dask": command + f" --workers {args.workers}",
        "workers": args.workers,
        "cpu_cores": cores,
        "torch_threads_per_worker": torch_threads_per_worker(args.workers),
        "runs": results,
        "median_seconds": median,
        "speedup_serial_over_dask": speedup,
        "environment": env_info,
        "note": "timed on a shared machine unless the load averages say otherwise",
    }
    results.write_json(payload, indent=2)
    results.write_markdown(markdown(payload))
    print(f"serial {median['serial']:.1f} s, dask {median['dask']:.1f} s: {speedup:.2f}x")


if __name__ == "__main__":
    main()
