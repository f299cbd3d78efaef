"""Wall time per epoch of each regulariser, side by side in one run, and whether each keeps its effect.

For every training (baseline, exact and amortised nuclear norm, first- and second-order smoothness,
proximal low-rank) the same model is trained on the same data and seed; the epoch time is the median
over epochs after the first (warm-up). Effect columns: mean effective rank and mean normalised first
difference of the regularised layers, and test accuracy. Two seeds per training give the seed-to-seed
spread ("noise") against which exact and amortised are compared.

    .venv/bin/python benchmarks/regularizer_overhead.py                 # MLP on the CPU (default)
    .venv/bin/python benchmarks/regularizer_overhead.py --model resnet18 --dataset fashion-mnist --device cuda

Writes benchmarks/results/regularizer_overhead[_<model>_<device>].{json,md}; ``--render-only
[JSON]`` rewrites only the .md from a stored result (same ``--model``/``--device`` for its name).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from _common import Results, add_render_only, provenance, render_source

from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.quickstart import summarize_model
from smoothviz.training import resolve_device, train

TRAININGS = {
    "baseline": {},
    "nuclear_exact": {"nuclear": 2e-3},
    "nuclear_amortised_k10": {"nuclear": 2e-3, "nuclear_every": 10},
    "nuclear_amortised_k20": {"nuclear": 2e-3, "nuclear_every": 20},
    "nuclear_amortised_k50": {"nuclear": 2e-3, "nuclear_every": 50},
    "first_order": {"first_order": 2e-2},
    "second_order": {"second_order": 2e-2},
    "proximal_k1": {"proximal": 0.05},
    "proximal_k10": {"proximal": 0.05, "proximal_every": 10},
}


def markdown(payload: dict) -> str:
    """The summary table of a result JSON, with its set-up and the command that made it."""
    config, env = payload["config"], payload["environment"]
    summary = pd.DataFrame(payload["summary"])
    lines = [
        f"# Regulariser overhead: {config['model']} on {config['dataset']}",
        "",
        f"Device: {env['device']} · torch {env['torch']} · git {env['git_sha']} · {env['date']}",
        f"Epochs {config['epochs']}, batch {config['batch_size']}, seeds {config['seeds']}; epoch "
        "time is the median over epochs 2.. of each run, the ratio is per seed against the "
        "baseline of the same seed (median over seeds). Spread = max − min over seeds.",
        "",
        summary.to_markdown(index=False, floatfmt=".3g"),
        "",
        f"Reproduce: `{payload['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--dataset", default="fashion-mnist-mini")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(parser)
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    suffix = "" if (args.model, device.type) == ("mlp", "cpu") else f"_{args.model}_{device.type}"
    results = Results(args.out, f"regularizer_overhead{suffix}")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    n_train = len(load_dataset(args.dataset).y_train)
    rows = []
    t_start = time.perf_counter()
    # Warm-up run (not recorded): the first training in a process pays one-off start-up costs
    # (allocator, kernel selection) that would otherwise inflate whichever training runs first.
    train(
        TrainConfig(
            dataset=args.dataset,
            model=args.model,
            width=args.width,
            epochs=1,
            batch_size=args.batch_size,
            device=str(device),
        ),
        use_cache=False,
        progress=False,
    )
    for seed in args.seeds:
        for name, weights in TRAININGS.items():
            cfg = TrainConfig(
                dataset=args.dataset,
                model=args.model,
                width=args.width,
                epochs=args.epochs,
                batch_size=args.batch_size,
                seed=seed,
                device=str(device),
                compile=args.compile,
                **weights,
            )
            run = train(cfg, use_cache=False, progress=False)  # timings need a real run
            epoch_s = run.history.seconds.tolist()
            median_s = statistics.median(epoch_s[1:] if len(epoch_s) > 1 else epoch_s)
            rows.append(
                {
                    "training": name,
                    "seed": seed,
                    "epoch_seconds": median_s,
                    # images seen per epoch (ragged last batch dropped) / epoch time; includes the
                    # end-of-epoch test evaluation, so it slightly understates the pure training rate
                    "images_per_second": (n_train // args.batch_size) * args.batch_size / median_s,
                    "test_acc": float(run.history.test_acc.iloc[-1]),
                    **summarize_model(run.model),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    base = df[df.training == "baseline"].set_index("seed").epoch_seconds
    df["time_vs_baseline"] = df.apply(lambda r: r.epoch_seconds / base[r.seed], axis=1)
    summary = (
        df.groupby("training", sort=False)
        .agg(
            epoch_seconds=("epoch_seconds", "median"),
            time_vs_baseline=("time_vs_baseline", "median"),
            images_per_second=("images_per_second", "median"),
            test_acc=("test_acc", "mean"),
            test_acc_spread=("test_acc", lambda s: s.max() - s.min()),
            mean_effective_rank=("mean_effective_rank", "mean"),
            effective_rank_spread=("mean_effective_rank", lambda s: s.max() - s.min()),
            mean_first_difference=("mean_first_difference", "mean"),
        )
        .reset_index()
    )

    arguments = sys.argv[1:] if argv is None else argv
    meta = {
        "command": "python benchmarks/regularizer_overhead.py " + " ".join(arguments),
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "render_only")},
        "trainings": TRAININGS,
        "environment": provenance(device, script=__file__, argv=argv),
        "total_seconds": time.perf_counter() - t_start,
    }
    payload = {
        **meta,
        "summary": summary.to_dict(orient="records"),
        "runs": df.to_dict(orient="records"),
    }
    results.write_json(payload, indent=2, default=str)
    results.write_markdown(markdown(payload))
    print(markdown(payload), end="")


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    main()
