"""Two smoothviz processes side by side, before and after torch's threads are shared out.

Issue 25: three jobs on a 2-core CPU made each compression call 10x slower, because every process
runs as many torch threads as the machine has cores. :mod:`smoothviz.threads` gives each smoothviz
process its share. This script measures what that changes, on the same workload, in three runs:

- ``alone``: one process (what the workload costs without company);
- ``before``: ``--processes`` processes at once with ``SMOOTHVIZ_THREADS=off`` (torch's default
  thread count in each, as before issue 25);
- ``after``: the same processes with sharing on (each takes its share of the cores).

Each process (this script with ``--worker``) loads the model (checkpoint cache), registers,
waits until all have started, then times the workload: one ``svd_data_aware`` compression to
``--target`` from a fresh cache (its factors, allocation and sequential refit) and one evaluation
of the result on the test split. The runs report each process's seconds and torch threads, and
the machine's load before and after (which includes the runs' own processes). Run on an
otherwise idle machine: a start whose load per core exceeds ``--max-load`` is refused unless
``--allow-loaded`` is given, and then flagged.

Run from the repository root: ``PYTHONPATH=. python benchmarks/thread_sharing.py``. Writes
``<out>/<name>.{json,md}``; ``--render-only [JSON]`` rewrites the Markdown.
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

from _common import Results, add_render_only, machine_load, provenance, render_source

from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.threads import available_cores

MODES = ("alone", "before", "after")
MAX_LOAD = 0.25


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--dataset", default=BENCHMARK_MODEL["dataset"])
    p.add_argument("--model", default=BENCHMARK_MODEL["model"])
    p.add_argument("--width", type=int, default=BENCHMARK_MODEL["width"])
    p.add_argument("--epochs", type=int, default=BENCHMARK_MODEL["epochs"])
    p.add_argument("--train-subset", type=int, default=BENCHMARK_MODEL["train_subset"])
    p.add_argument("--test-images", type=int, default=None, help="default: the whole test split")
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument("--target", type=float, default=0.85)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-load", type=float, default=MAX_LOAD)
    p.add_argument("--allow-loaded", action="store_true")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="thread_sharing")
    p.add_argument("--worker", nargs=2, metavar=("BARRIER", "RESULT"), help=argparse.SUPPRESS)
    add_render_only(p)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------- one process
def worker(args) -> None:
    """One process of a run: load, register, wait for the others, time the workload."""
    import torch

    from smoothviz.config import TrainConfig
    from smoothviz.data import load_dataset
    from smoothviz.measure import evaluate
    from smoothviz.sweep import compress
    from smoothviz.threads import share_threads
    from smoothviz.training import train

    barrier, result = Path(args.worker[0]), Path(args.worker[1])
    cfg = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        width=args.width,
        epochs=args.epochs,
        train_subset=args.train_subset,
        seed=args.seed,
        device="cpu",
    )
    model = train(cfg, progress=False).model.eval()
    data = load_dataset(args.dataset)
    if args.test_images is not None:
        data = data.subset(n_test=args.test_images, seed=args.seed)
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(args.seed))
    calibration = data.x_train[perm[: args.calibration_size]]
    share_threads()  # registers (when sharing is on) before the others start timing
    (barrier / f"ready-{os.getpid()}").write_text("")
    while len(list(barrier.glob("ready-*"))) < int((barrier / "expected").read_text()):
        time.sleep(0.05)
    share_threads()  # now every process of the run is registered
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    small = compress(model, "svd_data_aware", args.target, calibration=calibration, cache={})
    accuracy = evaluate(small, data)["accuracy"]
    seconds = time.perf_counter() - t0
    result.write_text(json.dumps({"seconds": seconds, "threads": threads, "accuracy": accuracy}))


# ---------------------------------------------------------------------------------------- a run
def run(mode: str, processes: int, args, argv: list[str]) -> dict:
    """``processes`` workers at once, sharing on or off; their results and the load."""
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    if mode == "before":
        env["SMOOTHVIZ_THREADS"] = "off"
    else:
        env.pop("SMOOTHVIZ_THREADS", None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["SMOOTHVIZ_THREADS_DIR"] = str(tmp / "registry")  # only this run's processes
        (tmp / "expected").write_text(str(processes))
        before = machine_load()
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, *argv, "--worker", str(tmp), str(tmp / f"result-{i}")],
                env=env,
            )
            for i in range(processes)
        ]
        codes = [p.wait(timeout=args.timeout) for p in procs]
        after = machine_load()
        if any(codes):
            raise SystemExit(f"{mode}: a worker failed (exit codes {codes})")
        workers = [json.loads((tmp / f"result-{i}").read_text()) for i in range(processes)]
    return {"mode": mode, "processes": processes, "workers": workers, "load_before": before,
            "load_after": after}  # fmt: skip


def render(payload: dict) -> str:
    """The Markdown of a stored result."""
    env, args = payload["provenance"], payload["arguments"]
    lines = [
        "# Two processes side by side: torch's threads before and after sharing",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}.",
        "",
        f"Workload per process: `svd_data_aware` to {args['target']:.0%} fewer parameters from a "
        f"fresh cache ({args['calibration_size']} calibration images) and one evaluation, on "
        f"{args['model']} width {args['width']} ({args['dataset']}). `alone`: one process; "
        "`before`: every process with torch's default threads (`SMOOTHVIZ_THREADS=off`); "
        "`after`: each with its share (`smoothviz.threads`).",
        "",
    ]
    if payload["flagged"]:
        lines += [
            f"**Loaded machine**: the load per core at the start exceeded {args['max_load']}; "
            "these timings are not to be trusted.",
            "",
        ]
    lines += [
        "The load columns are 1-minute load averages; they include the runs' own processes (and, "
        "for about a minute, the previous run's).",
        "",
        "| run | processes | torch threads each | seconds each | median | load before | "
        "load after |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for r in payload["runs"]:
        secs = [w["seconds"] for w in r["workers"]]
        lines.append(
            f"| {r['mode']} | {r['processes']} | "
            f"{', '.join(str(w['threads']) for w in r['workers'])} | "
            f"{', '.join(f'{s:.1f}' for s in secs)} | {statistics.median(secs):.1f} | "
            f"{r['load_before']['load_1']:.2f} | {r['load_after']['load_1']:.2f} |"
        )
    runs = {
        r["mode"]: statistics.median(w["seconds"] for w in r["workers"]) for r in payload["runs"]
    }
    if {"before", "after"} <= set(runs):
        lines += [
            "",
            f"Sharing changes the median time per process from {runs['before']:.1f} s to "
            f"{runs['after']:.1f} s ({runs['before'] / runs['after']:.2f}x); one process alone "
            f"takes {runs.get('alone', float('nan')):.1f} s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    start = machine_load()
    if start["per_core"] > args.max_load and not args.allow_loaded:
        raise SystemExit(
            f"the machine is loaded (1-minute load average {start['load_1']:.2f} on "
            f"{start['cores']} cores); run on an idle machine or pass --allow-loaded"
        )
    env = provenance("cpu", script=__file__, argv=argv)
    runs = [run("alone", 1, args, argv)]
    runs += [run(mode, args.processes, args, argv) for mode in ("before", "after")]
    # The load during and after a run includes the run's own processes (and, for a minute, the
    # previous run's): only the load at the start says whether something else was running.
    flagged = start["per_core"] > args.max_load
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cores": available_cores(),  # what the sharing divides
        "load_at_start": start,
        "flagged": bool(flagged),
        "runs": runs,
    }
    results.write_json(payload)
    results.write_markdown(render(payload))
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
