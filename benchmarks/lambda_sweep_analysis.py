"""The regulariser-weight sweep's analysis and report: which weight to choose, its Markdown, its plot.

Pure functions of the sweep's rows (one per regulariser, weight, method and target, as
``benchmarks/lambda_sweep.py`` measures them); nothing here trains, compresses or reads a cache.
:func:`render` turns a stored ``lambda_sweep*.json`` payload into the Markdown that the sweep
writes beside it, so ``lambda_sweep.py --render-only`` can rewrite it without measuring.
"""

from __future__ import annotations

import pandas as pd

KEY_REDUCTION = 0.7
MAX_UNCOMPRESSED_DROP = 0.005  # a weight may cost at most 0.5 pp of uncompressed accuracy


def describe_model(model: dict) -> str:
    """One line naming the trained model and its data, e.g. ``resnet18 (width 16, 4 epochs, ...)``."""
    images = f"{model['train_subset']:,}" if model.get("train_subset") else "all"
    return (
        f"{model['model']} (width {model.get('width')}, {model['epochs']} epochs, {images} "
        f"training images) on {model['dataset']} (its whole test split)"
    )


def choose_weights(df: pd.DataFrame, grid: dict) -> dict[str, dict]:
    """Per regulariser, the weight with the best mean accuracy (over methods) at ``KEY_REDUCTION``.

    Only weights whose uncompressed accuracy is within ``MAX_UNCOMPRESSED_DROP`` of the baseline's
    compete (a weight that buys compressibility by losing accuracy up front is not a default); if
    none does, the one with the best uncompressed accuracy is taken and marked ``"fallback"``.
    ``grid`` (regulariser -> weights) says whether a regulariser's whole grid was measured.
    """
    base_acc = float(df[df.regulariser == "baseline"].test_acc_uncompressed.iloc[0])
    at = df[(df.target_reduction == KEY_REDUCTION) & (df.regulariser != "baseline")]
    scores = (
        at.assign(test_acc=at.test_acc.fillna(0.0))
        .groupby(["regulariser", "weight"])
        .agg(
            mean_acc_at_key=("test_acc", "mean"),
            test_acc_uncompressed=("test_acc_uncompressed", "first"),
        )
        .reset_index()
    )
    chosen = {}
    for reg, g in scores.groupby("regulariser", sort=False):
        ok = g[g.test_acc_uncompressed >= base_acc - MAX_UNCOMPRESSED_DROP]
        pick = (
            ok.sort_values("mean_acc_at_key").iloc[-1]
            if len(ok)
            else g.sort_values("test_acc_uncompressed").iloc[-1]
        )
        chosen[reg] = {
            "weight": float(pick.weight),
            "mean_acc_at_key": float(pick.mean_acc_at_key),
            "test_acc_uncompressed": float(pick.test_acc_uncompressed),
            "baseline_test_acc_uncompressed": base_acc,
            "fallback": not len(ok),
            "weights_measured": sorted(float(w) for w in g.weight),
            "grid_complete": reg in grid and len(g) == len(grid[reg]),
        }
    return chosen


def best_per_method(df: pd.DataFrame) -> list[dict]:
    """Per (regulariser, method), the weight with the best accuracy at ``KEY_REDUCTION`` among
    those within ``MAX_UNCOMPRESSED_DROP`` of the baseline, next to the baseline's accuracy there."""
    base_acc = float(df[df.regulariser == "baseline"].test_acc_uncompressed.iloc[0])
    at = df[df.target_reduction == KEY_REDUCTION].assign(
        test_acc=lambda d: pd.to_numeric(d.test_acc, errors="coerce").fillna(0.0)
    )
    base = at[at.regulariser == "baseline"].set_index("method").test_acc
    ok = at[
        (at.regulariser != "baseline")
        & (at.test_acc_uncompressed >= base_acc - MAX_UNCOMPRESSED_DROP)
    ]
    out = []
    for (reg, method), g in ok.groupby(["regulariser", "method"], sort=False):
        best = g.sort_values("test_acc").iloc[-1]
        out.append(
            {
                "regulariser": reg,
                "method": method,
                "weight": float(best.weight),
                "test_acc": float(best.test_acc),
                "baseline_test_acc": float(base.get(method, float("nan"))),
            }
        )
    return out


def render(payload: dict) -> str:
    """The Markdown of a stored sweep result (the JSON that ``lambda_sweep.py`` writes).

    Results written before the JSON kept the invocation's wall time and the trainings' seconds
    say "not recorded" in their place.
    """
    return markdown(
        pd.DataFrame(payload["rows"]),
        payload["chosen"],
        payload["provenance"],
        payload.get("invocation_seconds"),
        payload["missing"],
        payload.get("training_seconds"),
        payload["measured_where"],
        model=payload["benchmark_model"],
        preset=payload["model_preset"],
        grid=payload["grid"],
    )


def markdown(
    df: pd.DataFrame,
    chosen: dict,
    env: dict,
    seconds: float | None,
    missing: list[dict] | None = None,
    train_seconds: list[float] | None = None,
    where: dict[str, list[str]] | None = None,
    *,
    model: dict,
    preset: str = "benchmark",
    grid: dict,
) -> str:
    """The sweep's report: partial-results notice, provenance, chosen weights, tables, failures."""
    ok = df[df.error.isna()]
    missing = missing or []
    lines = [
        f"# Regulariser weight sweep: {describe_model(model)}" + (" — PARTIAL" if missing else ""),
        "",
    ]
    if missing:
        untrained = sum(m["why"] == "not trained yet" for m in missing)
        lines += [
            "## Partial results",
            "",
            f"{len(missing)} of {len(missing) + df.groupby(['regulariser', 'weight']).ngroups} "
            "grid points are not measured: the run was stopped before their trainings ended. "
            "Their regularisers' chosen weights below are picked among the measured weights only "
            "(column `weights measured`); a regulariser with none has no chosen weight.",
            "",
        ]
        lines += [f"- {m['regulariser']} {m['weight']:g}: {m['why']}" for m in missing]
        cost = ""
        if train_seconds:
            cost = (
                f" Each measured training here took {min(train_seconds) / 60:.0f} to "
                f"{max(train_seconds) / 60:.0f} min (the machine was shared; the low end is "
                f"close to an idle one), so the {untrained} missing trainings take roughly "
                f"{untrained * min(train_seconds) / 60:.0f} min on 2 idle CPU cores, plus their "
                "compression."
            )
        lines += [
            "",
            "Finish with `.venv/bin/python benchmarks/lambda_sweep.py` (it resumes from the "
            f"checkpoint cache).{cost}",
            "",
        ]
    wall = "not recorded" if seconds is None else f"{seconds:.0f} s"
    lines += [
        f"Written on {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}; "
        f"wall time of this invocation {wall} (trainings and rows come from the cache "
        "when present).",
        "",
    ]
    where = where or {}
    lines += [
        f"- {label}: {'; '.join(where[key])}"
        for key, label in (
            ("trainings", "Trained on"),
            ("compression", "Compressed, evaluated and timed on"),
            ("compression_code", "Compression code"),
        )
        if where.get(key)
    ]
    lines += [
        "",
        "No fine-tuning: test accuracy straight after compression to the target whole-network "
        "parameter reduction. `weight` 0 is the baseline.",
        "",
        f"## Chosen weights (rule: best mean over methods of the accuracy at {KEY_REDUCTION:.0%} "
        "fewer parameters, among weights that keep the uncompressed accuracy within 0.5 pp of the "
        "baseline)",
        "",
        "| regulariser | chosen weight | uncompressed | mean accuracy at 70 % over methods "
        "| weights measured |",
        "|---|---:|---:|---:|---|",
    ]
    for reg, c in chosen.items():
        measured = ", ".join(f"{w:g}" for w in c["weights_measured"])
        of = "" if c["grid_complete"] else f" (of {', '.join(f'{w:g}' for w in grid[reg])})"
        lines.append(
            f"| {reg} | {c['weight']:g} | {c['test_acc_uncompressed']:.4f} | "
            f"{c['mean_acc_at_key']:.4f} | {measured}{of} |"
        )
    per_method = best_per_method(df)
    if per_method:
        lines += [
            "",
            f"## Best weight per method (accuracy at {KEY_REDUCTION:.0%} fewer parameters, same "
            "0.5 pp limit on the uncompressed accuracy)",
            "",
            "| regulariser | method | best weight | accuracy | baseline's accuracy | gain (pp) |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {b['regulariser']} | {b['method']} | {b['weight']:g} | {b['test_acc']:.4f} | "
            f"{b['baseline_test_acc']:.4f} | {100 * (b['test_acc'] - b['baseline_test_acc']):+.1f} |"
            for b in per_method
        ]
    for col, title in (
        ("test_acc", "Test accuracy"),
        ("test_acc_bn_reestimated", "Test accuracy after BatchNorm re-estimation"),
    ):
        if ok[col].isna().all():  # the sweep measures BN re-estimation only when asked to
            continue
        table = ok.pivot_table(
            index=["regulariser", "weight"],
            columns=["method", "target_reduction"],
            values=col,
            sort=False,
        )
        base = ok.drop_duplicates(["regulariser", "weight"]).set_index(["regulariser", "weight"])
        lines += ["", f"## {title}", ""]
        head = ["regulariser", "weight", "uncompressed"] + [
            f"{m} {t:.0%}" for m, t in table.columns
        ]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|---|---:|" + "---:|" * (len(head) - 2))
        for (reg, w), row in table.iterrows():
            cells = [f"{base.loc[(reg, w), 'test_acc_uncompressed']:.3f}"]
            cells += ["" if v != v else f"{v:.3f}" for v in row]
            lines.append(f"| {reg} | {w:g} | " + " | ".join(cells) + " |")
    failed = df[df.error.notna()]
    if len(failed):
        lines += ["", "## Targets not reached", ""]
        lines += [
            f"- {r.regulariser} {r.weight:g} / {r.method} / {r.target_reduction}: {r.error}"
            for r in failed.itertuples()
        ]
    if preset == "main_job":
        reproduce = "`.venv/bin/python benchmarks/lambda_sweep.py --model main_job`"
    else:
        reproduce = (
            "`.venv/bin/python benchmarks/lambda_sweep.py` (serially here), or on one CUDA GPU "
            "with 8 Dask workers `bash benchmarks/gpu_lambda_sweep.sh OUT` (its log, when it "
            "measured a committed file: `benchmarks/results/gpu_lambda_sweep.log`); then "
            "`--report` writes these files from the cache"
        )
    lines += ["", f"Reproduce: {reproduce}.", ""]
    return "\n".join(lines)


def figure(df: pd.DataFrame, missing: list[dict] | None = None):
    """Accuracy at ``KEY_REDUCTION`` vs the weight, one panel per method (a matplotlib Figure);
    a partial sweep says so in the title."""
    from smoothviz.plots import lambda_sweep_grid

    fig = lambda_sweep_grid(df, target=KEY_REDUCTION)
    if missing:
        fig.suptitle(
            f"{fig.get_suptitle()}\nPARTIAL sweep: {len(missing)} grid points not measured "
            f"({', '.join(sorted({m['regulariser'] for m in missing}))}; see lambda_sweep.md)"
        )
    return fig
