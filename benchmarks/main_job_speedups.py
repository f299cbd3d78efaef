"""Would the main job's two trainings get faster without changing what they train? Side by side.

The main job spends two thirds of its time training the baseline and the smooth model one after
the other, each with every CPU core. This runs, in one process tree and one sitting, one epoch of
both of its trainings (``NotebookParams`` defaults) three ways:

- ``sequential``: one after the other in this process (what the main job does);
- ``dask``: at the same time, one training per worker of a Dask LocalCluster with the cores shared
  out (``smoothviz.distributed.submit_trainings``);
- ``channels_last``: the training step's speed with the model and batch in channels-last memory
  format against the default, on random batches (the layout the CUDA path uses).

Writes ``benchmarks/results/main_job_speedups.{json,md}`` (``--out`` elsewhere).

    .venv/bin/python benchmarks/main_job_speedups.py
    .venv/bin/python benchmarks/main_job_speedups.py --render-only JSON --out DIR  # only the .md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import Results, add_render_only, provenance, render_source

from smoothviz import distributed
from smoothviz.models import build_model
from smoothviz.notebook_params import NotebookParams
from smoothviz.training import train


def _one_epoch_configs():
    return [c.replace(epochs=1) for c in NotebookParams().training_configs().values()]


def time_sequential() -> float:
    os.environ["SMOOTHVIZ_CACHE"] = tempfile.mkdtemp()
    t0 = time.perf_counter()
    for cfg in _one_epoch_configs():
        train(cfg, progress=False)
    return time.perf_counter() - t0


def time_dask(workers: int = 2) -> float:
    os.environ["SMOOTHVIZ_CACHE"] = tempfile.mkdtemp()  # the workers inherit it
    t0 = time.perf_counter()
    with distributed.connect(distributed.ClusterRequest(workers=workers), log=None) as client:
        futures = distributed.submit_trainings(client, _one_epoch_configs())
        errors = [f.result() for f in futures.values()]
    if any(errors):
        raise RuntimeError(f"a training failed: {errors}")
    return time.perf_counter() - t0


def step_ms(channels_last: bool, steps: int = 40) -> float:
    params = NotebookParams()
    torch.manual_seed(0)
    model = build_model(params.model, 1, 10, width=params.width, image_size=28)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(steps + 5):
        if i == 5:  # warm-up steps excluded
            t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def markdown(payload: dict) -> str:
    """The two tables of a result JSON (best of each way, every run beside it)."""
    env, runs = payload["provenance"], payload["runs"]
    seq, dask = min(runs["sequential"]), min(runs["dask"])
    d, cl = min(runs["step_ms_default"]), min(runs["step_ms_channels_last"])
    md = [
        "# Main job trainings: sequential vs side by side on Dask, and channels-last steps",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']} · "
        f"1-min load before/after {payload['load_before']:.2f}/{payload['load_after']:.2f}",
        "",
        "One epoch of each of the main job's two trainings (`NotebookParams` defaults, "
        "`epochs=1`), empty cache, each way measured twice alternating (best shown, all in the "
        "JSON).",
        "",
        "| way | seconds (best of 2) | all runs | vs sequential |",
        "|---|---:|---|---:|",
        f"| sequential, 2 threads each | {seq:.1f} | "
        f"{', '.join(f'{v:.1f}' for v in runs['sequential'])} | 1.00× |",
        f"| side by side, 2 Dask workers, 1 thread each | {dask:.1f} | "
        f"{', '.join(f'{v:.1f}' for v in runs['dask'])} | {seq / dask:.2f}× |",
        "",
        "| training step (batch 128, random data) | ms (best of 2) | all runs |",
        "|---|---:|---|",
        f"| default memory format | {d:.1f} | "
        f"{', '.join(f'{v:.1f}' for v in runs['step_ms_default'])} |",
        f"| channels_last | {cl:.1f} | "
        f"{', '.join(f'{v:.1f}' for v in runs['step_ms_channels_last'])} |",
        "",
        "Reproduce: `.venv/bin/python benchmarks/main_job_speedups.py`",
        "",
    ]
    return "\n".join(md)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    args = p.parse_args(argv)
    results = Results(args.out, "main_job_speedups")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    load_before = os.getloadavg()[0]
    # Each measured twice, alternating, so a drift of the machine's speed shows as spread.
    runs = {"sequential": [], "dask": [], "step_ms_default": [], "step_ms_channels_last": []}
    for _ in range(2):
        runs["sequential"].append(time_sequential())
        runs["dask"].append(time_dask())
        runs["step_ms_default"].append(step_ms(False))
        runs["step_ms_channels_last"].append(step_ms(True))
    payload = {
        "provenance": provenance("cpu", script=__file__, argv=argv),
        "what": "one epoch of each of the main job's two trainings; seconds (steps: ms)",
        "configs": [c.to_dict() for c in _one_epoch_configs()],
        "runs": runs,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    results.write_json(payload)
    results.write_markdown(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
