"""The report's answer at a glance: the headline table and the one sentence computed from it.

From a :func:`smoothviz.sweep.sweep` frame of the two trainings a report compares (``baseline`` and
``smooth``):

- :func:`headline_table`: per training, method and target, the test accuracy without and with
  BatchNorm re-estimation next to the uncompressed accuracy (the records ``report.json`` stores
  under ``headline``);
- :func:`best_methods`: the best method of each training at each target;
- :func:`headline_sentence`: one sentence saying how many percentage points smoothing keeps over
  the baseline at the key target (70 % fewer parameters), or that this run measured no benefit,
  and the same at the largest target when the run measured a larger one.

:func:`save_results` / :func:`load_results` are how the trade-off notebook hands its sweep to the
report (a CSV in the grid point's folder, written atomically, with the test split it was measured
on). Nothing here trains, compresses or draws.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from smoothviz.atomic import atomic_write_text

KEY_REDUCTION = 0.7  # the target the sentence speaks about (the smooth-training paper's headline)
MIN_BENEFIT = 0.01  # a gain below 1 pp of test accuracy is not called a benefit
RESULTS_FILE = "tradeoff.csv"  # the trade-off notebook's sweep, in its grid point's folder

HEADLINE_COLUMNS = [
    "training",
    "method",
    "target_reduction",
    "param_reduction",
    "test_acc",
    "test_acc_bn_reestimated",
    "test_acc_uncompressed",
]
_REQUIRED = ["training", "method", "target_reduction", "test_acc", "test_acc_uncompressed"]


def _check(results: pd.DataFrame, what: str) -> None:
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {list(results)}")


def headline_table(results: pd.DataFrame) -> pd.DataFrame:
    """The headline records of a sweep: one row per (training, method, target_reduction).

    Columns :data:`HEADLINE_COLUMNS` (``test_acc_bn_reestimated`` and ``param_reduction`` are NaN
    when the sweep did not measure them; a target a method could not reach has NaN accuracies).
    Trainings and methods keep the sweep's order; targets ascend.
    """
    _check(results, "headline_table")
    table = results.reindex(columns=HEADLINE_COLUMNS).copy()
    order = {
        col: {v: i for i, v in enumerate(dict.fromkeys(results[col]))}
        for col in ("training", "method")
    }
    table = table.sort_values(
        ["training", "method", "target_reduction"],
        key=lambda s: s.map(order[s.name]) if s.name in order else s,
        kind="stable",
    )
    return table.reset_index(drop=True)


def best_methods(table: pd.DataFrame, column: str = "test_acc") -> pd.DataFrame:
    """The best method of each training at each target, by ``column``.

    Returns
    -------
    pandas.DataFrame
        One row per (training, target_reduction): ``training``, ``target_reduction``, ``method``
        (None where no method reached the target) and ``column``'s value. Ties go to the method
        listed first.
    """
    _check(table, "best_methods")
    rows = []
    for (training, target), g in table.groupby(
        ["training", "target_reduction"], sort=False, dropna=False
    ):
        ok = g[g[column].notna()]
        best = ok.loc[ok[column].idxmax()] if len(ok) else None
        rows.append(
            {
                "training": training,
                "target_reduction": target,
                "method": None if best is None else best["method"],
                column: math.nan if best is None else float(best[column]),
            }
        )
    return pd.DataFrame(rows, columns=["training", "target_reduction", "method", column])


def key_target(table: pd.DataFrame, key: float = KEY_REDUCTION) -> float:
    """``key`` when the table has that target, else the table's target closest to it."""
    targets = sorted(set(table["target_reduction"].dropna()))
    if not targets:
        raise ValueError("the headline table has no target_reduction")
    return min(targets, key=lambda t: (abs(t - key), -t))


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _verdict(
    table: pd.DataFrame, target: float, baseline: str, smooth: str, min_benefit: float
) -> str:
    """What the table says at one target: smoothing's gain (or none), with the numbers."""
    best = best_methods(table[table["target_reduction"] == target]).set_index("training")
    uncompressed = table.drop_duplicates("training").set_index("training")["test_acc_uncompressed"]
    s_method, s_acc = best.loc[smooth, "method"], best.loc[smooth, "test_acc"]
    b_method, b_acc = best.loc[baseline, "method"], best.loc[baseline, "test_acc"]
    if s_method is None or b_method is None:
        missing = smooth if s_method is None else baseline
        return f"no benefit measured in this run: no method reached the target for {missing}"
    gain = s_acc - b_acc
    reference = f"uncompressed {_pct(uncompressed[smooth])} vs {_pct(uncompressed[baseline])}"
    if s_method == b_method:
        how = f"with {s_method} ({_pct(s_acc)} vs {_pct(b_acc)}; {reference})"
    else:
        how = (
            f"(smooth with {s_method} {_pct(s_acc)}, the baseline at best {_pct(b_acc)} with "
            f"{b_method}; {reference})"
        )
    if gain >= min_benefit:
        return f"smoothing keeps {100 * gain:.1f} pp more test accuracy than the baseline {how}"
    return (
        f"no benefit measured in this run: smoothing changes the best test accuracy by "
        f"{100 * gain:+.1f} pp {how}, less than the {100 * min_benefit:g} pp we count as a benefit"
    )


def headline_sentence(
    table: pd.DataFrame,
    *,
    key: float = KEY_REDUCTION,
    baseline: str = "baseline",
    smooth: str = "smooth",
    min_benefit: float = MIN_BENEFIT,
) -> str:
    """One sentence that says what the table says at the key target (and at the largest one).

    The benefit is the smooth model's best test accuracy (over methods, plain, no BN
    re-estimation) minus the baseline's best at the same target. At least ``min_benefit`` is
    reported as "smoothing keeps X pp more than the baseline with <method>"; anything less as "no
    benefit measured in this run", with the numbers. When the table also has a target larger
    than the key one, the sentence goes on with the same verdict at the largest target: a method
    that closes the gap at 70 % may not at 85 %, and the reader should see both.

    Raises
    ------
    ValueError
        If the table lacks one of the two trainings.
    """
    _check(table, "headline_sentence")
    trainings = list(dict.fromkeys(table["training"]))
    for name, what in ((baseline, "baseline"), (smooth, "smooth")):
        if name not in trainings:
            raise ValueError(f"{what} training {name!r} not in the table; it has {trainings}")
    target = key_target(table, key)
    sentence = (
        f"At {100 * target:.0f} % fewer parameters (no fine-tuning), "
        f"{_verdict(table, target, baseline, smooth, min_benefit)}"
    )
    largest = max(table["target_reduction"].dropna())
    if largest > target:
        sentence += (
            f"; at {100 * largest:.0f} %, {_verdict(table, largest, baseline, smooth, min_benefit)}"
        )
    return sentence + "."


def save_results(results: pd.DataFrame, data, path: str | Path = RESULTS_FILE) -> Path:
    """Write a sweep frame to ``path`` (CSV, atomically) with the test split it was measured on.

    Adds ``dataset`` (the data's name) and ``test_images`` (its number of test images) columns.
    """
    _check(results, "save_results")
    out = results.assign(dataset=data.name, test_images=len(data.y_test))
    return atomic_write_text(path, out.to_csv(index=False))


def load_results(path: str | Path) -> pd.DataFrame:
    """Read back what :func:`save_results` wrote (``error`` stays None where there was none)."""
    df = pd.read_csv(path)
    if "error" in df.columns:
        df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    _check(df, f"load_results({path})")
    return df


def describe_test_split(results: pd.DataFrame) -> str:
    """Which test split the numbers come from, in words (from :func:`save_results`' columns)."""
    if not {"dataset", "test_images"} <= set(results.columns) or results.empty:
        return "test split not recorded"
    name, n = results["dataset"].iloc[0], int(results["test_images"].iloc[0])
    words = {
        "fashion-mnist": "Fashion-MNIST test split",
        "fashion-mnist-mini": "the embedded Fashion-MNIST subset's test split",
        "cifar10": "CIFAR-10 test split",
    }.get(name, f"{name} test split")
    full = {"fashion-mnist": 10000, "cifar10": 10000, "fashion-mnist-mini": 2000}.get(name)
    amount = f"all {n:,} images" if n == full else f"{n:,} images"
    return f"{words}, {amount}"
