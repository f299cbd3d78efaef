"""Compression speed: seconds per method per target, and as evaluations of the same model.

Issue 25: compression must stay fast as methods (``hybrid``), calibration sets and targets grow.
For every method of ``smoothviz.compress.METHODS`` this compresses the benchmark model (resnet18
width 16, 4 epochs on 20,000 Fashion-MNIST images; trained or loaded from the checkpoint cache)
at each target in turn through :func:`smoothviz.sweep.compress` with one per-model cache, as a
sweep does: the first target pays for the factors, a further target reuses them. Each call is
reported in seconds and as a multiple of one evaluation of the same uncompressed model on the
10,000 test images (the median of ``--evaluations`` timed evaluations), which is comparable
across machines. The guard: every method's first target within 3 evaluations and each further
target within 1.

The machine's load (1-minute load average and cores) is recorded before and after. A run that
starts on a loaded machine (load average per core above ``--max-load``) is refused, unless
``--allow-loaded`` is given; a run whose load afterwards, less its own torch threads, is above
it too is flagged: its Markdown says the timings are not to be trusted.
Torch's thread count is recorded too (:func:`smoothviz.threads.share_threads` sets it).

Run from the repository root on an idle machine: ``PYTHONPATH=. python
benchmarks/compression_speed.py``. Writes ``<out>/<name>.{json,md}``; ``--render-only [JSON]``
rewrites the Markdown from a stored result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _common import Results, add_render_only, machine_load, provenance, render_source

from smoothviz.compress import METHODS, BudgetError
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.measure import count_params, evaluate
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.sweep import compress
from smoothviz.training import resolve_device, train

TARGETS = (0.7, 0.85, 0.9, 0.95)
FIRST_LIMIT, FURTHER_LIMIT = 3.0, 1.0  # evaluations of the uncompressed model (issue 25)
MAX_LOAD = 0.25  # 1-minute load average per core above which a run is refused


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    p.add_argument("--dataset", default=BENCHMARK_MODEL["dataset"])
    p.add_argument("--model", default=BENCHMARK_MODEL["model"])
    p.add_argument("--width", type=int, default=BENCHMARK_MODEL["width"])
    p.add_argument("--epochs", type=int, default=BENCHMARK_MODEL["epochs"])
    p.add_argument("--train-subset", type=int, default=BENCHMARK_MODEL["train_subset"])
    p.add_argument("--test-images", type=int, default=None, help="default: the whole test split")
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument("--evaluations", type=int, default=3, help="timed evaluations (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-load", type=float, default=MAX_LOAD)
    p.add_argument(
        "--allow-loaded",
        action="store_true",
        help="measure even on a loaded machine (the result is flagged as untrustworthy)",
    )
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="compression_speed")
    add_render_only(p)
    return p.parse_args(argv)


def guard(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: the first target within :data:`FIRST_LIMIT` evaluations and every further
    one within :data:`FURTHER_LIMIT` (targets that could not be reached are not timed)."""
    out = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        timed = [r for r in rows if r["method"] == method and r["evaluations"] is not None]
        first = [r["evaluations"] for r in timed if r["call"] == "first"]
        further = [r["evaluations"] for r in timed if r["call"] == "further"]
        out[method] = {
            "first": first[0] if first else None,
            "further_max": max(further) if further else None,
            "met": bool(
                first and first[0] <= FIRST_LIMIT and all(e <= FURTHER_LIMIT for e in further)
            ),
        }
    return out


def render(payload: dict) -> str:
    """The Markdown of a stored result."""
    env, load, args = payload["provenance"], payload["load"], payload["arguments"]
    lines = [
        "# Compression speed",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}; "
        f"torch threads {payload['threads']}.",
        "",
        f"Model: {args['model']} width {args['width']}, {args['epochs']} epochs on "
        f"{args['train_subset']} {args['dataset']} images; {args['calibration_size']} "
        f"calibration images; one evaluation = the uncompressed model on "
        f"{payload['test_images']} test images, {payload['evaluation_seconds']:.2f} s (median of "
        f"{len(payload['evaluation_runs'])}).",
        "",
        f"Machine load (1-minute average / cores): before {load['before']['load_1']:.2f} / "
        f"{load['before']['cores']}, after {load['after']['load_1']:.2f} / "
        f"{load['after']['cores']} (of which up to {payload['threads']} is this run's own "
        "threads).",
        "",
    ]
    if load["flagged"]:
        lines += [
            f"**Loaded machine**: the load per core before, or after less this run's own threads, "
            f"exceeded {args['max_load']}; these timings are not to be trusted (run again on an "
            "idle machine).",
            "",
        ]
    lines += [
        f"Guard (issue 25): first target <= {FIRST_LIMIT:g} evaluations, each further target "
        f"<= {FURTHER_LIMIT:g}.",
        "",
        "| method | first target (evaluations) | largest further target | guard |",
        "|---|---:|---:|---|",
    ]
    for method, g in payload["guard"].items():
        first = "" if g["first"] is None else f"{g['first']:.2f}"
        further = "" if g["further_max"] is None else f"{g['further_max']:.2f}"
        lines.append(f"| {method} | {first} | {further} | {'met' if g['met'] else 'NOT met'} |")
    lines += [
        "",
        "## Every call",
        "",
        "| method | target | call | seconds | evaluations | achieved |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in payload["rows"]:
        if r["error"]:
            lines.append(f"| {r['method']} | {r['target']:.2f} | {r['call']} | | | not reached |")
            continue
        lines.append(
            f"| {r['method']} | {r['target']:.2f} | {r['call']} | {r['seconds']:.2f} | "
            f"{r['evaluations']:.2f} | {r['param_reduction']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    before = machine_load()
    loaded = before["per_core"] > args.max_load
    if loaded and not args.allow_loaded:
        raise SystemExit(
            f"the machine is loaded (1-minute load average {before['load_1']:.2f} on "
            f"{before['cores']} cores > {args.max_load} per core): timings would not mean "
            "anything. Run on an idle machine, or pass --allow-loaded to measure and flag it."
        )
    device = resolve_device(args.device)
    env = provenance(device, script=__file__, argv=argv)
    cfg = TrainConfig(
        dataset=args.dataset,
        model=args.model,
        width=args.width,
        epochs=args.epochs,
        train_subset=args.train_subset,
        seed=args.seed,
        device=args.device,
    )
    model = train(cfg, progress=True).model.eval()  # train() shares the cores (smoothviz.threads)
    data = load_dataset(args.dataset, device=device)
    if args.test_images is not None:
        data = data.subset(n_test=args.test_images, seed=args.seed)
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(args.seed))
    calibration = data.x_train[perm[: args.calibration_size]]  # as smoothviz.sweep picks them
    evaluate(model, data)  # warm-up
    runs = []
    for _ in range(args.evaluations):
        t0 = time.perf_counter()
        evaluate(model, data)
        runs.append(time.perf_counter() - t0)
    one_eval = statistics.median(runs)
    base = count_params(model)
    rows = []
    for method in args.methods:
        cache: dict = {}
        for i, target in enumerate(args.targets):
            row = {"method": method, "target": target, "call": "first" if i == 0 else "further"}
            t0 = time.perf_counter()
            try:
                small = compress(model, method, target, calibration=calibration, cache=cache)
            except BudgetError as exc:
                rows.append({**row, "seconds": None, "evaluations": None, "error": str(exc)})
                continue
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    **row,
                    "seconds": seconds,
                    "evaluations": seconds / one_eval,
                    "param_reduction": 1 - count_params(small) / base,
                    "error": None,
                }
            )
            print(f"{method} {target:.2f}: {seconds:.2f} s ({seconds / one_eval:.2f} evaluations)")
    after = machine_load()
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "config": cfg.to_dict(),
        "threads": torch.get_num_threads(),
        "load": {
            "before": before,
            "after": after,
            # after a long run the 1-minute average includes this process's own threads
            "others_after": max(0.0, after["load_1"] - torch.get_num_threads()),
            "flagged": bool(
                loaded
                or max(0.0, after["load_1"] - torch.get_num_threads()) / after["cores"]
                > args.max_load
            ),
        },
        "test_images": len(data.y_test),
        "evaluation_runs": runs,
        "evaluation_seconds": one_eval,
        "rows": rows,
        "guard": guard(rows),
    }
    results.write_json(payload)
    results.write_markdown(render(payload))
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
