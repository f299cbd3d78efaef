"""Which model, data and training the main job can afford: accuracy and cost of each candidate.

The main job (``bash scripts/main.sh``) must train a baseline and a smooth model to at least 0.89 on
the full Fashion-MNIST test split and run the five notebooks in 5 minutes on a 2-core CPU. For each
candidate in ``CANDIDATES`` this trains (or loads from the checkpoint cache) both trainings and
records, side by side in one process:

- the uncompressed test accuracy of each (all 10,000 test images);
- the training time the run recorded (sum of its per-epoch ``seconds``; only meaningful when the
  trainings ran on an idle machine, see ``--retime``);
- the time of one forward pass over the 10,000 test images (median of 3), which is what every cell
  of the report's compression sweep costs, and the parameter count;
- the test accuracy at 70 % fewer parameters (the headline's key target) with every method in
  ``smoothviz.compress.METHODS``, no fine-tuning.

Writes ``benchmarks/results/main_job_model.{json,md}``.

    .venv/bin/python benchmarks/main_job_model.py            # trains what is not cached
    .venv/bin/python benchmarks/main_job_model.py --retime   # also re-times each training afresh
    .venv/bin/python benchmarks/main_job_model.py --render-only JSON --out DIR  # only the .md
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from _common import Results, add_render_only, provenance, render_source

from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.measure import count_params, evaluate
from smoothviz.sweep import sweep
from smoothviz.training import train

SMOOTH = {"first_order": 0.02}  # the benchmark model's smooth training (lambda_sweep.md)
# name -> (model/data/epochs fields, smooth regulariser weights)
CANDIDATES: dict[str, tuple[dict, dict]] = {
    "resnet18 w16, 20k x 4 (benchmark model)": (
        {"model": "resnet18", "width": 16, "train_subset": 20000, "epochs": 4},
        SMOOTH,
    ),
    "resnet18 w8, 30k x 4": (
        {"model": "resnet18", "width": 8, "train_subset": 30000, "epochs": 4},
        SMOOTH,
    ),
    "resnet18 w8, 60k x 2": (
        {"model": "resnet18", "width": 8, "train_subset": None, "epochs": 2},
        SMOOTH,
    ),
    "resnet18 w8, 30k x 4, first-order 0.01": (
        {"model": "resnet18", "width": 8, "train_subset": 30000, "epochs": 4},
        {"first_order": 0.01},
    ),
    "resnet18 w8, 24k x 5": (
        {"model": "resnet18", "width": 8, "train_subset": 24000, "epochs": 5},
        SMOOTH,
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", default=None, help="candidate names to run (default: all)")
    p.add_argument(
        "--retime", action="store_true", help="train again without the cache to time each training"
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    return p.parse_args(argv)


def _acc(value) -> str:
    return "—" if value is None or value != value else f"{value:.4f}"


def forward_seconds(model: torch.nn.Module, data, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        evaluate(model, data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def markdown(payload: dict) -> str:
    """The table of a stored result: one row per candidate and training, one column per method
    measured at 70 % (the methods of ``METHODS`` when the rows were measured)."""
    env, rows = payload["environment"], payload["rows"]
    methods = list(dict.fromkeys(m for r in rows for m in r["test_acc_at_70"])) or list(METHODS)
    lines = [
        "# Main-job candidates: accuracy and cost (full Fashion-MNIST, 10,000 test images)",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']}",
        "",
        "The smooth training's weights are in the candidate's name (default first-order 0.02). "
        "`train s` is the training's own wall time (per-epoch "
        "`seconds` summed, or a fresh re-run with `--retime`); `fwd 10k s` is one forward pass "
        "over the test split, the unit cost of every cell of the report's sweep. Timings taken "
        "while other jobs loaded the CPU are only comparable within one run.",
        "",
        "| candidate | training | params | test acc | "
        + " | ".join(f"{m} at 70 %" for m in methods)
        + " | train s | fwd 10k s |",
        "|---|---|---:|---:|" + "---:|" * len(methods) + "---:|---:|",
    ]
    for r in rows:
        accs = " | ".join(_acc(r["test_acc_at_70"].get(m)) for m in methods)
        lines.append(
            f"| {r['candidate']} | {r['training']} | {r['params']:,} | {r['test_acc']:.4f} | "
            f"{accs} | {r['train_seconds']:.0f} | {r['forward_10k_seconds']:.2f} |"
        )
    lines += ["", "Reproduce: `.venv/bin/python benchmarks/main_job_model.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, "main_job_model")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    data = load_dataset("fashion-mnist")
    rows = []
    for name, (fields, smooth) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        base = TrainConfig(dataset="fashion-mnist", **fields)
        for training, cfg in (("baseline", base), ("smooth", base.replace(**smooth))):
            print(f"== {name} / {training}", flush=True)
            run = train(cfg)
            seconds = float(run.history.seconds.sum())
            if args.retime:
                t0 = time.perf_counter()
                train(cfg, use_cache=False, progress=False)
                seconds = time.perf_counter() - t0
            at70 = sweep(
                {training: run.model},
                list(METHODS),
                [0.7],
                data,
                bn_reestimate=False,
                progress=False,
            ).set_index("method")["test_acc"]
            rows.append(
                {
                    "candidate": name,
                    "training": training,
                    **cfg.to_dict(),
                    "config_hash": cfg.config_hash(),
                    "params": count_params(run.model),
                    "test_acc": float(run.history.test_acc.iloc[-1]),
                    "test_acc_at_70": {m: float(a) for m, a in at70.items()},
                    "train_seconds": seconds,
                    "retimed": bool(args.retime),
                    "forward_10k_seconds": forward_seconds(run.model, data),
                }
            )
    payload = {"environment": provenance("cpu", script=__file__, argv=argv), "rows": rows}
    results.write_json(payload)
    results.write_markdown(markdown(payload))
    print(markdown(payload))


if __name__ == "__main__":
    main()
