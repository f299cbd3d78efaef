"""Accuracy vs. parameter reduction, without fine-tuning, for baseline and regularised trainings.

Trains (or loads from the checkpoint cache) one model per training regime, compresses each with
every method at every target reduction, and writes, under ``--out``:

- ``compression_tradeoff.csv``: the tidy sweep table (one row per training, method, target);
- ``compression_tradeoff.json``: the same rows plus provenance (device, versions, git SHA, date),
  the training configs and the uncompressed accuracies;
- ``compression_tradeoff.md``: a short Markdown table and the headline number;
- ``compression_tradeoff.png``: accuracy vs. achieved parameter reduction, one panel per method.

Run from the repository root: ``python benchmarks/compression_tradeoff.py`` (CPU, ~minutes when the
checkpoints are cached).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from smoothviz.atomic import atomic_write, atomic_write_text
from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.provenance import environment_info
from smoothviz.sweep import sweep
from smoothviz.training import resolve_device, train

# Regulariser weights (ours; see docs/methods.md for the normalisation of the smoothness terms).
TRAININGS = {
    "baseline": {},
    "nuclear": {"nuclear": 5e-3},
    "first_order": {"first_order": 0.05},
    "second_order": {"second_order": 0.05},
    "proximal": {"proximal": 0.05},
}
REDUCTIONS = (0.3, 0.5, 0.7, 0.85, 0.9)
KEY_REDUCTION = 0.7


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--dataset", default="fashion-mnist-mini")
    p.add_argument("--device", default="auto")  # part of the config hash
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reductions", type=float, nargs="+", default=list(REDUCTIONS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="compression_tradeoff")
    return p.parse_args(argv)


def headline(df, key: float = KEY_REDUCTION):
    """Per method: the baseline's and the best regularised model's accuracy loss at ``key``."""
    at = df[(df.target_reduction == key) & df.error.isna()].copy()
    at["acc_loss"] = at.test_acc_uncompressed - at.test_acc
    out = []
    for method, g in at.groupby("method", sort=False):
        base = g[g.training == "baseline"]
        smooth = g[g.training != "baseline"].sort_values("acc_loss")
        if base.empty or smooth.empty:
            continue
        best = smooth.iloc[0]
        out.append(
            {
                "method": method,
                "baseline_acc_loss": float(base.acc_loss.iloc[0]),
                "baseline_test_acc": float(base.test_acc.iloc[0]),
                "best_regularised": best.training,
                "best_acc_loss": float(best.acc_loss),
                "best_test_acc": float(best.test_acc),
            }
        )
    return out


def markdown(df, env: dict, args, heads, seconds: float) -> str:
    ok = df[df.error.isna()]
    table = ok.pivot_table(
        index=["method", "training"], columns="target_reduction", values="test_acc", sort=False
    )
    table_bn = ok.pivot_table(
        index=["method", "training"],
        columns="target_reduction",
        values="test_acc_bn_reestimated",
        sort=False,
    )
    base = df.drop_duplicates("training").set_index("training").test_acc_uncompressed

    def fmt(t):
        cols = list(t.columns)
        lines = [
            "| method | training | " + " | ".join(f"{c:.2f}" for c in cols) + " |",
            "|---|---|" + "---:|" * len(cols),
        ]
        for (method, training), row in t.iterrows():
            cells = " | ".join("" if row[c] != row[c] else f"{row[c]:.3f}" for c in cols)
            lines.append(f"| {method} | {training} | {cells} |")
        return "\n".join(lines)

    failed = df[df.error.notna()]
    lines = [
        f"# Compression trade-off: {args.model} (width {args.width}, {args.epochs} epochs) "
        f"on {args.dataset}",
        "",
        f"Device: {env['device']}; torch {env['torch']}; torchvision {env['torchvision']}; "
        f"git {env['git_sha']}; {env['date']}; sweep wall time {seconds:.0f} s.",
        "",
        "No fine-tuning: test accuracy straight after compression. Columns are the target "
        "whole-network parameter reductions (achieved within 1 pp; see the CSV for the exact "
        "`param_reduction`, params, FLOPs and latency).",
        "",
        "Uncompressed test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in base.items()) + ".",
        "",
        f"## Key number: accuracy loss at {KEY_REDUCTION:.0%} fewer parameters",
        "",
        "| method | baseline loss (acc) | best regularised | its loss (acc) |",
        "|---|---:|---|---:|",
    ]
    for h in heads:
        lines.append(
            f"| {h['method']} | {h['baseline_acc_loss']:+.3f} ({h['baseline_test_acc']:.3f}) | "
            f"{h['best_regularised']} | {h['best_acc_loss']:+.3f} ({h['best_test_acc']:.3f}) |"
        )
    lines += [
        "",
        "## Test accuracy",
        "",
        fmt(table),
        "",
        "## Test accuracy after BatchNorm re-estimation (training images, no gradient step)",
        "",
        fmt(table_bn),
        "",
    ]
    if len(failed):
        lines += ["## Targets not reached", ""]
        lines += [
            f"- {r.training} / {r.method} / {r.target_reduction}: {r.error}"
            for r in failed.itertuples()
        ]
        lines.append("")
    return "\n".join(lines)


def plot(df, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    ok = df[df.error.isna()].copy()
    long = ok.melt(
        id_vars=["training", "method", "param_reduction"],
        value_vars=["test_acc", "test_acc_bn_reestimated"],
        var_name="evaluation",
        value_name="accuracy",
    )
    long["evaluation"] = long.evaluation.map(
        {"test_acc": "plain", "test_acc_bn_reestimated": "BN re-estimated"}
    )
    grid = sns.relplot(
        data=long,
        x="param_reduction",
        y="accuracy",
        hue="training",
        style="evaluation",
        col="method",
        kind="line",
        marker="o",
        height=3.2,
        aspect=1.0,
        facet_kws={"sharey": True},
    )
    grid.set_axis_labels("parameter reduction (achieved)", "test accuracy")
    grid.figure.suptitle("Accuracy without fine-tuning", y=1.03)
    atomic_write(path, lambda f: grid.figure.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    plt.close(grid.figure)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, device=device)
    configs = {
        name: TrainConfig(
            dataset=args.dataset,
            model=args.model,
            width=args.width,
            epochs=args.epochs,
            seed=args.seed,
            device=args.device,
            **reg,
        )
        for name, reg in TRAININGS.items()
    }
    runs = {name: train(cfg, progress=True) for name, cfg in configs.items()}
    models = {name: run.model.eval() for name, run in runs.items()}
    t0 = time.perf_counter()
    df = sweep(
        models,
        args.methods,
        args.reductions,
        data,
        calibration_size=args.calibration_size,
        seed=args.seed,
    )
    seconds = time.perf_counter() - t0
    env = environment_info(device)
    heads = headline(df)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{args.name}.csv", df.to_csv(index=False))
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
        "config_hashes": {name: cfg.config_hash() for name, cfg in configs.items()},
        "sweep_seconds": seconds,
        "headline": heads,
        "rows": json.loads(df.to_json(orient="records")),
    }
    atomic_write_text(out / f"{args.name}.json", json.dumps(payload, indent=1))
    atomic_write_text(out / f"{args.name}.md", markdown(df, env, args, heads, seconds))
    plot(df, out / f"{args.name}.png")
    print((out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
