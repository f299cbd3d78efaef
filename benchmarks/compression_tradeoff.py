"""Accuracy vs. parameter reduction without fine-tuning: every method x training x target.

Two setups (``--setups``):

- ``resnet18``: the CIFAR-style ResNet-18 at width 16 (about 0.7 M parameters), 4 epochs on 20,000
  images of the full Fashion-MNIST, baseline and first-order smooth (``first_order=0.02``),
  evaluated on the full 10,000-image test split; this is where compression is meaningful;
- ``cnn``: the small CNN (width 16, 4 epochs) on the embedded ``fashion-mnist-mini`` data, five
  trainings (baseline, nuclear, first-order, second-order, proximal).

Trains each model (or loads it from the checkpoint cache), compresses it with every method in
``smoothviz.compress.METHODS`` (the ``hybrid`` method included) at every target up to 95 % and
measures each result with :func:`smoothviz.sweep.sweep`: test accuracy straight after compression
and after BatchNorm re-estimation (its own column), parameters, FLOPs and latency. For the
``resnet18`` setup it also trains the baseline's recipe from scratch at narrower widths (the
trained-small frontier, :func:`smoothviz.frontier.reference_frontier`; ``--frontier-widths``,
``--frontier-seeds``) and places every compressed result against it at its own parameter count.
Writes, under ``--out``:

- ``<name>.csv``: the tidy table (one row per setup, training, method, target);
- ``<name>.json``: the same rows plus provenance (device, versions, git SHA, date), the training
  configs, their hashes, the checks of issue 10's targets, the frontier and every result's place
  against it, issue 25's goals marked met or not, and the hybrid against the best single method;
- ``<name>.md``: the checks, the goals and the tables; ``<name>.png``: accuracy vs. achieved
  reduction, the frontier in grey.

Run from the repository root: ``PYTHONPATH=. python benchmarks/compression_tradeoff.py`` (CPU;
with the checkpoints cached, about 8 minutes per resnet18 training and method on one busy core,
most of it evaluating on 10,000 images). Accuracies are deterministic; latency on a loaded machine
is not. Each finished (setup, training) is appended to ``<name>.partial.jsonl`` (a resume store,
``_common.ResumeStore``), so a stopped run started again with the same code and options resumes
there. A partial re-run, e.g. ``--setups resnet18 --methods prune_channels interpolative --merge``
or ``--setups resnet18 --reductions 0.9 0.95 --merge``, replaces those rows (same setup,
training, method and target) of the stored table and keeps the others (each row's ``git_sha``
says which code made it). ``--render-only [JSON]`` rewrites the Markdown from a stored result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _common import Results, ResumeStore, add_render_only, provenance, render_source

from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.frontier import compare_to_frontier, reference_frontier
from smoothviz.presets import BENCHMARK_MODEL, FRONTIER_WIDTHS, FULL_REDUCTIONS
from smoothviz.sweep import sweep
from smoothviz.training import resolve_device, train

# Regulariser weights (ours; see docs/methods.md for the normalisation of the smoothness terms).
CNN_TRAININGS = {
    "baseline": {},
    "nuclear": {"nuclear": 5e-3},
    "first_order": {"first_order": 0.05},
    "second_order": {"second_order": 0.05},
    "proximal": {"proximal": 0.05},
}
SETUPS: dict[str, dict[str, Any]] = {
    "resnet18": {
        **BENCHMARK_MODEL,
        "trainings": {"baseline": {}, "first_order": {"first_order": 0.02}},
        "frontier_widths": FRONTIER_WIDTHS,
    },
    "cnn": {
        "dataset": "fashion-mnist-mini",
        "model": "cnn",
        "width": 16,
        "epochs": 4,
        "train_subset": None,
        "trainings": CNN_TRAININGS,
    },
}
REDUCTIONS = FULL_REDUCTIONS  # 0.3 ... 0.95
# Issue 10's targets on resnet18, no BN re-estimation, no fine-tuning: (training, methods, target
# reduction, largest accuracy loss). "structured" is every method but prune_magnitude.
TARGETS = [
    ("baseline", "structured", 0.7, 0.01),
    ("baseline", "structured", 0.85, 0.03),
    ("baseline", "prune_channels", 0.5, 0.03),
    ("first_order", "structured", 0.7, 0.005),
]
# Issue 25's goals on resnet18, no BN re-estimation, no fine-tuning: the best smooth training
# (first_order, the weight the lambda sweep chose for the low-rank methods) within 1.5 pp of its
# own uncompressed accuracy at 90 % and above the trained-small frontier at 85 and 90 %; the
# baseline within 3 pp at 90 %. (training, target, kind, largest loss); the best structured method.
GOALS = [
    ("first_order", 0.9, "loss", 0.015),
    ("first_order", 0.85, "frontier", None),
    ("first_order", 0.9, "frontier", None),
    ("baseline", 0.9, "loss", 0.03),
]
HYBRID_TARGETS = (0.85, 0.9)  # where issue 25 asks whether hybrid beats the best single method
BY = ("training", "method", "target_reduction")  # one place against the frontier per row


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--trainings", nargs="+", default=None, help="keep only these trainings")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--reductions", type=float, nargs="+", default=list(REDUCTIONS))
    p.add_argument("--width", type=int, default=None, help="override every setup's width")
    p.add_argument("--epochs", type=int, default=None, help="override every setup's epochs")
    p.add_argument("--device", default="auto")  # part of the config hash
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument(
        "--frontier-widths",
        type=int,
        nargs="*",
        default=None,
        help="widths of the trained-small frontier (default: the setup's; none given: no frontier)",
    )
    p.add_argument("--frontier-seeds", type=int, nargs="+", default=None, help="default: --seed")
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="compression_tradeoff")
    p.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of an earlier <name>.json that this run does not redo (the same "
        "setup, training, method and target are replaced), so a partial re-run updates the one "
        "table",
    )
    add_render_only(p)
    return p.parse_args(argv)


def configs_for(setup: str, args) -> dict[str, TrainConfig]:
    spec = SETUPS[setup]
    names = [t for t in spec["trainings"] if args.trainings is None or t in args.trainings]
    return {
        name: TrainConfig(
            dataset=spec["dataset"],
            model=spec["model"],
            width=args.width or spec["width"],
            epochs=args.epochs or spec["epochs"],
            train_subset=spec["train_subset"],
            seed=args.seed,
            device=args.device,
            **spec["trainings"][name],
        )
        for name in names
    }


def check_targets(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Issue 10's targets on the resnet18 setup: the best qualifying method's loss at each."""
    out = []
    res = df[(df.setup == "resnet18") & df.error.isna()]
    for training, methods, target, limit in TARGETS:
        rows = res[(res.training == training) & (res.target_reduction == target)]
        rows = rows[rows.method != "prune_magnitude"] if methods == "structured" else rows
        rows = rows[rows.method == methods] if methods != "structured" else rows
        if rows.empty:
            continue
        best = rows.assign(loss=rows.test_acc_uncompressed - rows.test_acc).nsmallest(1, "loss")
        b = best.iloc[0]
        out.append(
            {
                "training": training,
                "methods": methods,
                "target_reduction": target,
                "max_loss": limit,
                "best_method": b.method,
                "loss": float(b.loss),
                "test_acc": float(b.test_acc),
                "met": bool(b.loss <= limit + 1e-12),
            }
        )
    return out


def _structured(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows.method != "prune_magnitude"]


def check_goals(df: pd.DataFrame, placement: pd.DataFrame | None) -> list[dict[str, Any]]:
    """Issue 25's goals on the resnet18 setup (:data:`GOALS`), each met or not, with the best
    structured method (highest plain accuracy) and what limits it."""
    out = []
    res = _structured(df[(df.setup == "resnet18") & df.error.isna()])
    for training, target, kind, limit in GOALS:
        rows = res[(res.training == training) & (res.target_reduction == target)]
        if rows.empty:
            continue
        best = rows.loc[rows.test_acc.idxmax()]
        loss = float(best.test_acc_uncompressed - best.test_acc)
        goal = {
            "training": training,
            "target_reduction": target,
            "kind": kind,
            "max_loss": limit,
            "best_method": best.method,
            "test_acc": float(best.test_acc),
            "loss": loss,
        }
        if kind == "loss":
            goal["met"] = bool(loss <= limit + 1e-12)
        else:
            if placement is None or placement.empty:
                continue
            at = placement[
                (placement.setup == "resnet18")
                & (placement.training == training)
                & (placement.method == best.method)
                & (placement.target_reduction == target)
            ]
            if at.empty:
                continue
            p = at.iloc[0]
            goal.update(
                frontier_acc=float(p.frontier_acc),
                frontier_gap=float(p.frontier_gap),
                versus_frontier=p.versus_frontier,
                met=str(p.versus_frontier).startswith("above"),
            )
        out.append(goal)
    return out


def hybrid_against_single(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per resnet18 training and target of :data:`HYBRID_TARGETS`: the hybrid's plain accuracy
    minus the best single structured method's (one seed)."""
    out = []
    res = _structured(df[(df.setup == "resnet18") & df.error.isna()])
    for training in dict.fromkeys(res.training):
        for target in HYBRID_TARGETS:
            rows = res[(res.training == training) & (res.target_reduction == target)]
            hybrid, single = rows[rows.method == "hybrid"], rows[rows.method != "hybrid"]
            if hybrid.empty or single.empty:
                continue
            best = single.loc[single.test_acc.idxmax()]
            out.append(
                {
                    "training": training,
                    "target_reduction": target,
                    "hybrid_acc": float(hybrid.test_acc.iloc[0]),
                    "best_single": best.method,
                    "best_single_acc": float(best.test_acc),
                    "difference": float(hybrid.test_acc.iloc[0] - best.test_acc),
                }
            )
    return out


def frontier_for_setup(setup: str, args, data) -> pd.DataFrame | None:
    """The trained-small frontier of a setup's baseline recipe (None: no widths for it)."""
    spec = SETUPS[setup]
    widths = spec.get("frontier_widths") if args.frontier_widths is None else args.frontier_widths
    if not widths:
        return None
    base = TrainConfig(
        dataset=spec["dataset"],
        model=spec["model"],
        width=args.width or spec["width"],
        epochs=args.epochs or spec["epochs"],
        train_subset=spec["train_subset"],
        seed=args.seed,
        device=args.device,
    )
    seeds = args.frontier_seeds or [args.seed]
    return reference_frontier(base, list(widths), seeds, data=data, progress=True)


def render(payload: dict) -> str:
    """The Markdown of a stored result (what ``main`` writes beside its JSON)."""
    arguments = payload["arguments"]
    frontier = payload.get("frontier")
    return markdown(
        pd.DataFrame(payload["rows"]),
        payload["provenance"],
        payload["issue_10_targets"],
        payload["sweep_seconds"],
        width=arguments["width"],
        epochs=arguments["epochs"],
        goals=payload.get("issue_25_goals"),
        frontier={k: pd.DataFrame(v["rows"]) for k, v in frontier.items()} if frontier else None,
        placement=pd.DataFrame(payload["frontier_placement"]) if frontier else None,
        hybrid=payload.get("hybrid_vs_single"),
    )


def markdown(
    df: pd.DataFrame,
    env: dict,
    checks,
    seconds: float,
    *,
    width: int | None,
    epochs: int | None,
    goals: list[dict] | None = None,
    frontier: dict[str, pd.DataFrame] | None = None,
    placement: pd.DataFrame | None = None,
    hybrid: list[dict] | None = None,
) -> str:
    """The issue-10 checks and one table of every row (``width``, ``epochs``: the overrides);
    with a frontier, issue 25's goals, the hybrid against the best single method, the frontier
    and every result's place against it (results made before issue 25 have none of these)."""
    lines = [
        "# Compression trade-off without fine-tuning",
        "",
        f"Device: {env['device']}; torch {env['torch']}; torchvision {env['torchvision']}; "
        f"git {env['git_sha']}; {env['date']}; sweep wall time {seconds:.0f} s.",
        "",
        "Setups: "
        + "; ".join(
            f"`{s}`: {SETUPS[s]['model']} width {width or SETUPS[s]['width']}, "
            f"{epochs or SETUPS[s]['epochs']} epochs on {SETUPS[s]['dataset']}"
            + (
                f" ({SETUPS[s]['train_subset']} training images)"
                if SETUPS[s]["train_subset"]
                else ""
            )
            for s in dict.fromkeys(df.setup)
        )
        + ". Test accuracy straight after compression (`acc`, no gradient step) and after "
        "BatchNorm re-estimation on 2,048 training images (`acc BN`, its own column); `Δ` is the "
        "change from the uncompressed model; targets are whole-network parameter reductions, met "
        "within 1 pp (`achieved`). FLOPs per image from `torch.utils.flop_counter`; latency is "
        "the median forward time of a batch of 32 test images, measured on a CPU shared with "
        "other jobs (noisy: compare latencies only within one run, and treat them as rough).",
        "",
    ]
    if df.git_sha.nunique(dropna=False) > 1:
        lines += [
            "Merged from runs of different code: the `git_sha` column of the CSV/JSON says which "
            "made each row.",
            "",
        ]
    if checks:
        lines += [
            "## Issue 10 targets (resnet18, no BN re-estimation, no fine-tuning)",
            "",
            "| training | methods | target | max loss | best method | its loss (acc) | met |",
            "|---|---|---:|---:|---|---:|---|",
        ]
        for c in checks:
            lines.append(
                f"| {c['training']} | {c['methods']} | {c['target_reduction']:.2f} | "
                f"{c['max_loss'] * 100:.1f} pp | {c['best_method']} | {c['loss'] * 100:+.2f} pp "
                f"({c['test_acc']:.4f}) | {'yes' if c['met'] else 'no'} |"
            )
        lines.append("")
    if goals:
        lines += goals_markdown(goals)
    if hybrid:
        lines += hybrid_markdown(hybrid)
    base = df.drop_duplicates(["setup", "training"])
    lines += [
        "Uncompressed test accuracy: "
        + ", ".join(
            f"{r.setup}/{r.training} {r.test_acc_uncompressed:.4f}" for r in base.itertuples()
        )
        + ".",
        "",
        "## Every method x training x target",
        "",
        "| setup | training | method | target | achieved | acc | Δ | acc BN | params | MFLOPs "
        "| latency ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        if isinstance(r.error, str):
            lines.append(
                f"| {r.setup} | {r.training} | {r.method} | {r.target_reduction:.2f} | "
                f"not reached | | | | | | |"
            )
            continue
        lines.append(
            f"| {r.setup} | {r.training} | {r.method} | {r.target_reduction:.2f} | "
            f"{r.param_reduction:.3f} | {r.test_acc:.4f} | "
            f"{(r.test_acc - r.test_acc_uncompressed) * 100:+.1f} | "
            f"{r.test_acc_bn_reestimated:.4f} | {int(r.params)} | {r.flops / 1e6:.1f} | "
            f"{r.latency_ms:.1f} |"
        )
    if frontier:
        lines += frontier_markdown(frontier, placement)
    failed = df[df.error.notna()]
    if len(failed):
        lines += ["", "## Targets not reached", ""]
        lines += [
            f"- {r.setup} / {r.training} / {r.method} / {r.target_reduction}: {r.error}"
            for r in failed.itertuples()
        ]
    return "\n".join(lines) + "\n"


def goals_markdown(goals: list[dict]) -> list[str]:
    """Issue 25's goals as a table, each marked met or not."""
    lines = [
        "## Issue 25 goals (resnet18, no BN re-estimation, no fine-tuning, one seed)",
        "",
        "| goal | best structured method | its accuracy | measured | met |",
        "|---|---|---:|---|---|",
    ]
    for g in goals:
        target = f"{g['target_reduction']:.0%}"
        if g["kind"] == "loss":
            goal = f"{g['training']} within {g['max_loss'] * 100:.1f} pp at {target}"
            measured = f"loses {g['loss'] * 100:.2f} pp"
        else:
            goal = f"{g['training']} above the trained-small frontier at {target}"
            measured = (
                f"{g['frontier_gap'] * 100:+.2f} pp against {g['frontier_acc']:.4f}: "
                f"{g['versus_frontier']}"
            )
        lines.append(
            f"| {goal} | {g['best_method']} | {g['test_acc']:.4f} | {measured} | "
            f"{'met' if g['met'] else 'not met'} |"
        )
    return [*lines, ""]


def hybrid_markdown(rows: list[dict]) -> list[str]:
    """The hybrid method against the best single structured method (one seed)."""
    lines = [
        "## The hybrid method against the best single method (one seed)",
        "",
        "| training | target | hybrid | best single method | its accuracy | hybrid minus it |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['training']} | {r['target_reduction']:.0%} | {r['hybrid_acc']:.4f} | "
            f"{r['best_single']} | {r['best_single_acc']:.4f} | {r['difference'] * 100:+.2f} pp |"
        )
    return [*lines, ""]


def frontier_markdown(frontier: dict[str, pd.DataFrame], placement: pd.DataFrame) -> list[str]:
    """The frontier of each setup and every compressed result's place against it."""
    lines = []
    for setup, rows in frontier.items():
        agg = rows.groupby(["width", "params"], as_index=False)["test_acc"].agg(["mean", "count"])
        seeds = int(agg["count"].max())
        lines += [
            "",
            f"## Trained-small frontier ({setup}: the baseline's recipe from scratch, "
            f"{'one seed' if seeds == 1 else f'{seeds} seeds'})",
            "",
            "| width | params | test acc |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {int(r.width)} | {int(r.params)} | {r.mean:.4f} |" for r in agg.itertuples()]
    lines += [
        "",
        "## Against the trained-small frontier",
        "",
        "At the compressed model's own parameter count, the frontier's accuracy interpolated "
        "linearly in log-parameters between the two widths around it (never extrapolated). "
        "`gap`: compressed minus frontier; with one seed the words say so and no interval is "
        "computed.",
        "",
        "| setup | training | method | target | params | acc | frontier | gap | verdict |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in placement.itertuples():
        frontier_acc = "" if pd.isna(r.frontier_acc) else f"{r.frontier_acc:.4f}"
        gap = "" if pd.isna(r.frontier_gap) else f"{r.frontier_gap * 100:+.1f} pp"
        lines.append(
            f"| {r.setup} | {r.training} | {r.method} | {r.target_reduction:.2f} | "
            f"{int(r.params)} | {r.test_acc:.4f} | {frontier_acc} | {gap} | {r.versus_frontier} |"
        )
    return lines


def plot(
    df: pd.DataFrame, results: Results, frontier: dict[str, pd.DataFrame] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    from smoothviz.plots import plot_frontier

    ok = df[df.error.isna()].copy()
    long = ok.melt(
        id_vars=["setup", "training", "method", "param_reduction"],
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
        row="setup",
        kind="line",
        marker="o",
        height=2.8,
        aspect=1.0,
        facet_kws={"sharey": True},
    )
    for (setup, _method), ax in grid.axes_dict.items():
        if frontier and setup in frontier:  # the trained-small frontier, grey, in every panel
            reference = int(ok[ok.setup == setup].params_uncompressed.max())
            plot_frontier(frontier[setup], params_uncompressed=reference, annotate=False, ax=ax)
    grid.set_axis_labels("parameter reduction (achieved)", "test accuracy")
    grid.figure.suptitle("Accuracy without fine-tuning (grey: trained from scratch)", y=1.02)
    results.write_png(grid.figure, dpi=100)
    plt.close(grid.figure)


MERGE_KEY = ("setup", "training", "method", "target_reduction")


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``--merge``: the earlier rows this run did not redo, then this run's rows.

    A row is redone when this run measured the same setup, training, method and target, so a
    run restricted to some ``--reductions`` keeps the stored rows at the other targets.
    """
    redone = set(new[list(MERGE_KEY)].itertuples(index=False, name=None))
    keys = old[list(MERGE_KEY)].itertuples(index=False, name=None)
    kept = old[[k not in redone for k in keys]]
    return pd.concat([kept, new], ignore_index=True)


def _chunk_key(setup: str, training: str, args, sha: str) -> str:
    """What must match for a stored (setup, training) chunk to be reused on resume."""
    keep = ("methods", "reductions", "width", "epochs", "seed", "calibration_size")
    return json.dumps([setup, training, sha, {k: getattr(args, k) for k in keep}])


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    # at the start: the code that produced the numbers
    env = provenance(device, script=__file__, argv=argv)
    # One record per finished (setup, training): a stopped run resumes there (same code and options).
    store = ResumeStore(results.path("partial.jsonl"), key=lambda chunk: chunk["key"])
    done = {key: chunk["rows"] for key, chunk in store.records().items()}
    tables, configs, frontiers = [], {}, {}
    t0 = time.perf_counter()
    for setup in args.setups:
        cfgs = configs_for(setup, args)
        if not cfgs:
            continue
        data = load_dataset(SETUPS[setup]["dataset"], device=device)
        configs.update({f"{setup}/{n}": c for n, c in cfgs.items()})
        for name, cfg in cfgs.items():
            key = _chunk_key(setup, name, args, env["git_sha"])
            if key in done:
                tables.append(pd.DataFrame(done[key]))
                continue
            model = train(cfg, progress=True).model.eval()
            df = sweep(
                {name: model},
                args.methods,
                args.reductions,
                data,
                calibration_size=args.calibration_size,
                latency_repeats=args.latency_repeats,
                seed=args.seed,
            ).assign(setup=setup, model=SETUPS[setup]["model"], git_sha=env["git_sha"])
            tables.append(df)
            store.put({"key": key, "rows": json.loads(df.to_json(orient="records"))})
        frontier = frontier_for_setup(setup, args, data)  # the trainings are in the cache
        if frontier is not None:
            frontiers[setup] = frontier
    seconds = time.perf_counter() - t0
    df = pd.concat(tables, ignore_index=True)
    earlier: dict[str, Any] = {}
    if args.merge and results.path("json").exists():
        earlier = results.read_json()
        df = merge_rows(pd.DataFrame(earlier["rows"]), df)
        configs = {
            **{k: TrainConfig.from_dict(v) for k, v in earlier["configs"].items()},
            **configs,
        }
    order = {m: i for i, m in enumerate(METHODS)}
    df = df.sort_values(
        ["setup", "training", "method", "target_reduction"],
        key=lambda c: c.map(order) if c.name == "method" else c,
        kind="stable",
    ).reset_index(drop=True)
    df = df[["setup", "model", *[c for c in df.columns if c not in ("setup", "model")]]]
    checks = check_targets(df)
    if args.merge and earlier.get("frontier"):  # a setup this run did not redo keeps its own
        for setup, stored in earlier["frontier"].items():
            frontiers.setdefault(setup, pd.DataFrame(stored["rows"]))
    placement = (
        pd.concat(
            [
                compare_to_frontier(df[df.setup == setup], f, by=BY).assign(setup=setup)
                for setup, f in frontiers.items()
            ],
            ignore_index=True,
        )
        if frontiers
        else None
    )
    results.write_csv(df)
    payload = {
        "provenance": env,
        "merged_with": earlier.get("provenance"),  # rows say which code made them (git_sha)
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
        "config_hashes": {name: cfg.config_hash() for name, cfg in configs.items()},
        "sweep_seconds": seconds,
        "issue_10_targets": checks,
        "rows": json.loads(df.to_json(orient="records")),
    }
    if frontiers:
        payload["frontier"] = {
            setup: {"rows": json.loads(f.to_json(orient="records"))}
            for setup, f in frontiers.items()
        }
        payload["frontier_placement"] = json.loads(placement.to_json(orient="records"))
    payload["issue_25_goals"] = check_goals(df, placement)
    payload["hybrid_vs_single"] = hybrid_against_single(df)
    results.write_json(payload)
    results.write_markdown(render(payload))
    plot(df, results, frontiers)
    store.clear()  # the complete result is written
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
