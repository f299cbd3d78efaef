"""Accuracy at 85 / 90 % fewer parameters against the calibration set's size, data-aware methods.

Issue 25: more calibration images cost time in every data-aware method; do they pay? On the
benchmark model (resnet18 width 16, 4 epochs on 20,000 Fashion-MNIST images), baseline and
first-order smooth (``first_order=0.02``), each data-aware method compresses to each target with
128, 512 and 2,048 calibration images (the first N of one seeded permutation of the training
images, as :func:`smoothviz.sweep.sweep` picks them, so the smaller sets are inside the larger
ones). Test accuracy straight after compression (no BN re-estimation, no fine-tuning), one seed.
The Markdown shows the accuracy per size and, per method, the smallest size whose mean accuracy
(over trainings and targets) is within ``--within`` pp of the best size's: a suggestion for the
default that the lead confirms from the data.

Run from the repository root: ``PYTHONPATH=. python benchmarks/calibration_size.py``. Each
finished (training, size) is kept in ``<name>.partial.jsonl`` (resume). Writes
``<out>/<name>.{csv,json,md}``; ``--render-only [JSON]`` rewrites the Markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from _common import Results, ResumeStore, add_render_only, provenance, render_source

from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.sweep import sweep
from smoothviz.training import resolve_device, train

DATA_AWARE = ("svd_data_aware", "interpolative", "prune_channels", "hybrid")
SIZES = (128, 512, 2048)
TARGETS = (0.85, 0.9)
TRAININGS = {"baseline": {}, "first_order": {"first_order": 0.02}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=list(DATA_AWARE), choices=list(DATA_AWARE))
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--targets", type=float, nargs="+", default=list(TARGETS))
    p.add_argument("--trainings", nargs="+", default=list(TRAININGS), choices=list(TRAININGS))
    p.add_argument("--dataset", default=BENCHMARK_MODEL["dataset"])
    p.add_argument("--model", default=BENCHMARK_MODEL["model"])
    p.add_argument("--width", type=int, default=BENCHMARK_MODEL["width"])
    p.add_argument("--epochs", type=int, default=BENCHMARK_MODEL["epochs"])
    p.add_argument("--train-subset", type=int, default=BENCHMARK_MODEL["train_subset"])
    p.add_argument("--test-images", type=int, default=None, help="default: the whole test split")
    p.add_argument("--within", type=float, default=0.2, help="pp, for the suggested size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="calibration_size")
    add_render_only(p)
    return p.parse_args(argv)


def suggest(df: pd.DataFrame, within_pp: float) -> dict[str, dict]:
    """Per method: mean accuracy per size (over trainings and targets) and the smallest size
    within ``within_pp`` of the best one (one seed: a suggestion, not a finding)."""
    out = {}
    ok = df[df.error.isna()]
    for method, rows in ok.groupby("method", sort=False):
        means = rows.groupby("calibration_size")["test_acc"].mean().sort_index()
        best = float(means.max())
        size = int(next(s for s, m in means.items() if m >= best - within_pp / 100))
        # str keys: the same whether read back from the JSON or not
        out[method] = {
            "mean_acc": {str(int(k)): float(v) for k, v in means.items()},
            "suggested": size,
        }
    return out


def render(payload: dict) -> str:
    """The Markdown of a stored result."""
    env, args = payload["provenance"], payload["arguments"]
    df = pd.DataFrame(payload["rows"])
    sizes = sorted(df.calibration_size.unique())
    lines = [
        "# Calibration set size against accuracy (no fine-tuning, one seed)",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}; "
        f"wall time {payload['seconds']:.0f} s.",
        "",
        f"Model: {args['model']} width {args['width']}, {args['epochs']} epochs on "
        f"{args['train_subset']} {args['dataset']} images; test accuracy on "
        f"{payload['test_images']} test images straight after compression (no BatchNorm "
        "re-estimation). Calibration images: the first N of one seeded permutation of the "
        "training images (smaller sets inside larger ones).",
        "",
        "| method | training | target | " + " | ".join(f"N={s}" for s in sizes) + " |",
        "|---|---|---:|" + "---:|" * len(sizes),
    ]
    for (method, training, target), rows in df.groupby(
        ["method", "training", "target_reduction"], sort=False
    ):
        by_size = rows.set_index("calibration_size")["test_acc"]
        cells = [
            "not reached" if pd.isna(by_size.get(s)) else f"{by_size.get(s):.4f}" for s in sizes
        ]
        lines.append(f"| {method} | {training} | {target:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Suggested default per method: the smallest N whose mean accuracy over trainings and "
        f"targets is within {args['within']} pp of the best N's (one seed; differences of a few "
        "tenths of a point are within what another seed or calibration draw may move).",
        "",
        "| method | " + " | ".join(f"mean N={s}" for s in sizes) + " | suggested N |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for method, s in payload["suggested"].items():
        cells = [f"{s['mean_acc'].get(str(int(n)), float('nan')):.4f}" for n in sizes]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {s['suggested']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    device = resolve_device(args.device)
    env = provenance(device, script=__file__, argv=argv)
    data = load_dataset(args.dataset, device=device)
    if args.test_images is not None:
        data = data.subset(n_test=args.test_images, seed=args.seed)
    store = ResumeStore(results.path("partial.jsonl"), key=lambda r: r["key"])
    done = {k: r["rows"] for k, r in store.records().items()}
    tables, configs = [], {}
    t0 = time.perf_counter()
    for training in args.trainings:
        cfg = TrainConfig(
            dataset=args.dataset,
            model=args.model,
            width=args.width,
            epochs=args.epochs,
            train_subset=args.train_subset,
            seed=args.seed,
            device=args.device,
            **TRAININGS[training],
        )
        configs[training] = cfg.to_dict()
        model = None
        for size in args.sizes:
            key = json.dumps(
                [training, size, env["git_sha"], args.methods, args.targets, cfg.config_hash()]
            )
            if key in done:
                tables.append(pd.DataFrame(done[key]))
                continue
            if model is None:
                model = train(cfg, progress=True).model.eval()
            df = sweep(
                {training: model},
                args.methods,
                args.targets,
                data,
                bn_reestimate=False,
                calibration_size=size,
                latency_repeats=1,
                seed=args.seed,
            ).assign(calibration_size=size)
            tables.append(df)
            store.put({"key": key, "rows": json.loads(df.to_json(orient="records"))})
    df = pd.concat(tables, ignore_index=True)
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": configs,
        "test_images": len(data.y_test),
        "seconds": time.perf_counter() - t0,
        "rows": json.loads(df.to_json(orient="records")),
        "suggested": suggest(df, args.within),
    }
    results.write_csv(df)
    results.write_json(payload)
    results.write_markdown(render(payload))
    store.clear()
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
