"""The report's answer at a glance: the headline table, the paired differences and one sentence.

From a :func:`smoothviz.sweep.sweep` frame of the two trainings a report compares (``baseline`` and
``smooth``), at one seed or several (column ``seed``):

- :func:`headline_table`: per training, method and target, the mean test accuracy over seeds with
  its 95 % Student-t interval, and after BatchNorm re-estimation when measured, next to the
  uncompressed accuracy (the records ``report.json`` stores under ``headline``);
- :func:`differences`: per method and target, smooth minus baseline *paired* by seed, with its
  95 % interval and a verdict ("benefit", "harm", "unclear"; ``report.json``'s ``differences``).
  Over seeds when there are several; with one seed, over the test images from the two compressed
  models' per-image correctness (exact McNemar interval, :func:`smoothviz.stats.mcnemar_interval`),
  which says nothing about another seed;
- :func:`best_methods`: the best method of each training at each target;
- :func:`headline_sentence`: one sentence whose words follow the interval (docs/methods.md, "Seeds,
  intervals and verdicts"): "keeps X pp more" when the whole interval is above 0, "loses X pp" when it is
  below, "no clear difference" otherwise; with one seed it says that seed-to-seed variation is not
  in the interval and, when a committed seed-spread measurement of the same configuration exists
  (:func:`load_seed_spread`, ``benchmarks/seed_spread.py``), quotes that spread and says whether
  this run's difference lies within it.

:func:`save_results` / :func:`load_results` (from :mod:`smoothviz.results_file`) are how the
trade-off notebook hands its sweep to the report. Nothing here trains, compresses or draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smoothviz.config import TrainConfig
from smoothviz.results_file import (
    CORRECT_COLUMN,
    RESULTS_FILE,
    check_results,
    describe_test_split,
    load_results,
    save_results,
)
from smoothviz.stats import Interval, mcnemar_interval, paired_difference, t_interval

__all__ = [
    "DIFFERENCE_COLUMNS",
    "HEADLINE_COLUMNS",
    "KEY_REDUCTION",
    "RESULTS_FILE",
    "SEED_SPREAD_FILE",
    "SeedSpread",
    "best_methods",
    "comparison_configuration",
    "describe_test_split",
    "differences",
    "headline_sentence",
    "headline_table",
    "key_target",
    "load_results",
    "load_seed_spread",
    "save_results",
]

KEY_REDUCTION = 0.7  # the target the sentence speaks about (the smooth-training paper's headline)
# What benchmarks/seed_spread.py commits: the default configuration at several seeds.
SEED_SPREAD_FILE = (
    Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "seed_spread.json"
)

HEADLINE_COLUMNS = [
    "training",
    "method",
    "target_reduction",
    "param_reduction",
    "test_acc",
    "test_acc_bn_reestimated",
    "test_acc_uncompressed",
    "n_seeds",
    "test_acc_mean",
    "test_acc_ci95_low",
    "test_acc_ci95_high",
]
DIFFERENCE_COLUMNS = [
    "method",
    "target_reduction",
    "difference_mean",
    "difference_ci95_low",
    "difference_ci95_high",
    "n_seeds",
    "ci_source",
    "verdict",
    "smooth_acc",
    "baseline_acc",
    "test_images",
]


def _with_seed(results: pd.DataFrame) -> pd.DataFrame:
    """The frame with a ``seed`` column (a sweep from before seeds were an axis is seed 0)."""
    return results if "seed" in results.columns else results.assign(seed=0)


def _ordered(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """Trainings and methods in ``like``'s order of first appearance, targets ascending."""
    order = {
        col: {v: i for i, v in enumerate(dict.fromkeys(like[col]))}
        for col in ("training", "method")
        if col in frame.columns
    }
    keys = [c for c in ("training", "method", "target_reduction") if c in frame.columns]
    return frame.sort_values(
        keys, key=lambda s: s.map(order[s.name]) if s.name in order else s, kind="stable"
    ).reset_index(drop=True)


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def headline_table(results: pd.DataFrame) -> pd.DataFrame:
    """The headline records of a sweep: one row per (training, method, target_reduction).

    Each accuracy is the mean over the seeds that measured it (``n_seeds``; 0 where no seed reached
    the target, whose accuracies are NaN). ``test_acc`` and ``test_acc_mean`` are the same mean;
    ``test_acc_ci95_low``/``_high`` its 95 % Student-t interval over seeds (NaN with one seed: say
    "one seed"). ``test_acc_bn_reestimated``, ``param_reduction`` and ``test_acc_uncompressed`` are
    means over seeds too. Columns :data:`HEADLINE_COLUMNS`; trainings and methods keep the sweep's
    order, targets ascend.
    """
    check_results(results, "headline_table")
    df = _with_seed(results)
    rows = []
    for (training, method, target), g in df.groupby(
        ["training", "method", "target_reduction"], sort=False
    ):
        acc = pd.to_numeric(g["test_acc"], errors="coerce").dropna()
        ci = t_interval(acc.to_numpy()) if len(acc) else None
        rows.append(
            {
                "training": training,
                "method": method,
                "target_reduction": target,
                "param_reduction": _mean(g.get("param_reduction", pd.Series(dtype=float))),
                "test_acc": ci.mean if ci else math.nan,
                "test_acc_bn_reestimated": _mean(
                    g.get("test_acc_bn_reestimated", pd.Series(dtype=float))
                ),
                "test_acc_uncompressed": _mean(g["test_acc_uncompressed"]),
                "n_seeds": len(acc),
                "test_acc_mean": ci.mean if ci else math.nan,
                "test_acc_ci95_low": ci.low if ci else math.nan,
                "test_acc_ci95_high": ci.high if ci else math.nan,
            }
        )
    return _ordered(pd.DataFrame(rows, columns=HEADLINE_COLUMNS), results)


def best_methods(table: pd.DataFrame, column: str = "test_acc") -> pd.DataFrame:
    """The best method of each training at each target, by ``column``.

    Returns
    -------
    pandas.DataFrame
        One row per (training, target_reduction): ``training``, ``target_reduction``, ``method``
        (None where no method reached the target) and ``column``'s value. Ties go to the method
        listed first.
    """
    check_results(table, "best_methods")
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


def _require_trainings(results: pd.DataFrame, baseline: str, smooth: str) -> None:
    trainings = list(dict.fromkeys(results["training"]))
    for name, what in ((baseline, "baseline"), (smooth, "smooth")):
        if name not in trainings:
            raise ValueError(f"{what} training {name!r} not in the table; it has {trainings}")


def _correct(row: pd.Series) -> np.ndarray | None:
    value = row.get(CORRECT_COLUMN)
    return value if isinstance(value, np.ndarray) else None


def _pair_interval(s: pd.DataFrame, b: pd.DataFrame, seeds: list[Any]) -> tuple[Interval, Any]:
    """The interval of smooth minus baseline over ``seeds`` (and its source, None if none)."""
    if len(seeds) >= 2:
        ci = paired_difference(s.loc[seeds, "test_acc"], b.loc[seeds, "test_acc"])
        return ci, "seeds"
    diff = float(s.loc[seeds[0], "test_acc"] - b.loc[seeds[0], "test_acc"])
    cs, cb = _correct(s.loc[seeds[0]]), _correct(b.loc[seeds[0]])
    if cs is not None and cb is not None and cs.size == cb.size:
        return mcnemar_interval(cs, cb), "test_images"
    return Interval(diff, math.nan, math.nan, 1, "seeds"), None


def differences(
    results: pd.DataFrame, *, baseline: str = "baseline", smooth: str = "smooth"
) -> pd.DataFrame:
    """Smooth minus baseline test accuracy per method and target, paired by seed, with its interval.

    For each (method, target): the seeds at which both trainings measured an accuracy are paired
    (same seed, test images and calibration images). With two or more, ``difference_mean`` is the
    mean per-seed difference and its interval the Student-t interval of those differences
    (``ci_source`` ``"seeds"``). With one, the interval comes from the two compressed models'
    per-image correctness (column ``test_correct``; exact McNemar interval, ``ci_source``
    ``"test_images"``, ``test_images`` the number of images): it covers the choice of test images,
    not another seed. Without that column the interval is NaN and ``ci_source`` None. ``verdict``:
    ``"benefit"`` when the whole interval is above 0, ``"harm"`` below, ``"unclear"`` otherwise.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DIFFERENCE_COLUMNS` (differences and accuracies as fractions; ``smooth_acc``
        and ``baseline_acc`` are the means over the paired seeds).

    Raises
    ------
    ValueError
        If a training is missing, or a (training, method, target, seed) appears twice.
    """
    check_results(results, "differences")
    _require_trainings(results, baseline, smooth)
    df = _with_seed(results)
    keys = ["training", "method", "target_reduction", "seed"]
    twice = df[df.duplicated(keys, keep=False)]
    if len(twice):
        first = twice.iloc[0]
        raise ValueError(
            "differences: (training, method, target_reduction, seed) "
            f"{tuple(first[k] for k in keys)} appears more than once"
        )
    rows = []
    for (method, target), g in df.groupby(["method", "target_reduction"], sort=False):
        s = g[g["training"] == smooth].set_index("seed")
        b = g[g["training"] == baseline].set_index("seed")
        seeds = [
            k
            for k in s.index
            if k in b.index and pd.notna(s.loc[k, "test_acc"]) and pd.notna(b.loc[k, "test_acc"])
        ]
        row: dict[str, Any] = {"method": method, "target_reduction": target, "n_seeds": len(seeds)}
        if not seeds:
            row.update(difference_mean=math.nan, ci_source=None, verdict="unclear")
            rows.append(row)
            continue
        ci, source = _pair_interval(s, b, seeds)
        row.update(
            difference_mean=ci.mean,
            difference_ci95_low=ci.low,
            difference_ci95_high=ci.high,
            ci_source=source,
            verdict=ci.verdict,
            smooth_acc=float(s.loc[seeds, "test_acc"].mean()),
            baseline_acc=float(b.loc[seeds, "test_acc"].mean()),
            test_images=ci.n if source == "test_images" else math.nan,
        )
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=DIFFERENCE_COLUMNS)
    table["n_seeds"] = table["n_seeds"].astype(int)
    return _ordered(table, results)


# --------------------------------------------------------------------------- the seed spread
def comparison_configuration(
    configs: Mapping[str, TrainConfig], dataset: str, test_images: int
) -> dict[str, Any]:
    """What makes two runs "the same configuration" for the seed spread: the two trainings but
    their seed and device, and the test split (dataset name and number of images)."""
    trainings = {}
    for name, cfg in configs.items():
        d = cfg.to_dict()
        d.pop("seed"), d.pop("device")
        trainings[name] = d
    return {"trainings": trainings, "dataset": dataset, "test_images": int(test_images)}


@dataclass(frozen=True)
class SeedSpread:
    """A committed multi-seed measurement of one configuration (``benchmarks/seed_spread.py``).

    ``per_seed`` maps ``(method, target_reduction)`` to the per-seed differences smooth minus
    baseline (fractions); ``source`` names the file, for the sentence.
    """

    source: str
    per_seed: Mapping[tuple[str, float], Sequence[float]]

    def at(self, method: str, target: float) -> list[float] | None:
        """The per-seed differences at ``(method, target)`` (None when not measured)."""
        for (m, t), values in self.per_seed.items():
            if m == method and abs(t - target) < 1e-9:
                return list(values)
        return None


def load_seed_spread(
    configs: Mapping[str, TrainConfig],
    dataset: str,
    test_images: int,
    path: str | Path = SEED_SPREAD_FILE,
) -> SeedSpread | None:
    """The committed seed spread of this configuration, or None when there is none for it.

    ``configs`` are the two trainings compared (any seed; :func:`comparison_configuration` leaves
    the seed out), ``dataset``/``test_images`` the test split measured on. A file of another
    configuration, or none at all, gives None.
    """
    path = Path(path)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("configuration") != comparison_configuration(configs, dataset, test_images):
        return None
    per_seed = {
        (d["method"], float(d["target_reduction"])): [float(v) for v in d["per_seed"].values()]
        for d in record.get("differences", [])
        if d.get("per_seed")
    }
    try:
        shown = str(path.relative_to(SEED_SPREAD_FILE.parent.parent.parent))
    except ValueError:
        shown = path.name
    return SeedSpread(source=shown, per_seed=per_seed)


# --------------------------------------------------------------------------- the sentence
def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _range(low: float, high: float) -> str:
    """``1.2–2.8`` for two non-negative ends, ``-9.1 to 6.1`` otherwise (a dash next to a minus
    sign reads as a range of negatives)."""
    lo, hi = 100 * low, 100 * high
    return f"{lo:.1f}–{hi:.1f}" if lo >= 0 and hi >= 0 else f"{lo:.1f} to {hi:.1f}"


def _spread_words(spread: SeedSpread, method: str, target: float, diff: float) -> str:
    values = spread.at(method, target)
    if not values or len(values) < 2:
        return ""
    lo, hi = min(values), max(values)
    ci = t_interval(values)
    where = "lies within" if lo <= diff <= hi else "lies outside"
    return (
        f"; the committed {len(values)}-seed measurement of this configuration ({spread.source}) "
        f"had per-seed differences from {100 * lo:+.1f} to {100 * hi:+.1f} pp (mean "
        f"{100 * ci.mean:+.1f} pp, 95 % CI {_range(ci.low, ci.high)} pp), and this run's "
        f"{100 * diff:+.1f} pp {where} that spread"
    )


def _clause(d: pd.Series, uncompressed: Mapping[str, float], names, spread) -> str:
    """What one differences row says, in words that follow its interval."""
    baseline, smooth = names
    method, diff = d["method"], float(d["difference_mean"])
    accs = (
        f"{_pct(d['smooth_acc'])} vs {_pct(d['baseline_acc'])}; uncompressed "
        f"{_pct(uncompressed[smooth])} vs {_pct(uncompressed[baseline])}"
    )
    if d["ci_source"] is None:  # one seed and no per-image results: no interval, no verdict
        return (
            f"smoothing changes the test accuracy by {100 * diff:+.1f} pp with {method} (one seed, "
            f"and no interval: the per-image results were not kept, so no verdict; {accs})"
        )
    ci = _range(d["difference_ci95_low"], d["difference_ci95_high"])
    if d["ci_source"] == "seeds":
        ci_words = f"95 % CI {ci} pp, {int(d['n_seeds'])} seeds"
    else:
        ci_words = (
            f"95 % CI {ci} pp over the {int(d['test_images']):,} test images, exact McNemar; one "
            "seed, so seed-to-seed variation is not in this interval"
        )
    if d["verdict"] == "benefit":
        text = f"smoothing keeps {100 * diff:.1f} pp more test accuracy than the baseline"
    elif d["verdict"] == "harm":
        text = f"smoothing loses {100 * abs(diff):.1f} pp of test accuracy against the baseline"
    else:
        text = f"no clear difference between smoothing and the baseline ({100 * diff:+.1f} pp)"
    extra = _spread_words(spread, method, d["target_reduction"], diff) if spread else ""
    return f"{text} with {method} ({ci_words}; {accs}){extra}"


def _at_target(diffs: pd.DataFrame, target: float, uncompressed, names, spread) -> str:
    """The clause of the best method at ``target``: the highest mean accuracy over both trainings."""
    at = diffs[(diffs["target_reduction"] == target) & (diffs["n_seeds"] > 0)]
    if at.empty:
        return (
            "no method reached the target for both trainings, so there is no difference to report"
        )
    best = at.loc[(at["smooth_acc"] + at["baseline_acc"]).idxmax()]
    return _clause(best, uncompressed, names, spread)


def headline_sentence(
    results: pd.DataFrame,
    *,
    key: float = KEY_REDUCTION,
    baseline: str = "baseline",
    smooth: str = "smooth",
    spread: SeedSpread | None = None,
) -> str:
    """One sentence that says what the results support at the key target (and at the largest one).

    ``results`` is the sweep frame (every seed's rows, with ``test_correct`` for a one-seed
    interval). At each target the sentence speaks of the best method there (the highest mean test
    accuracy over both trainings, plain, no BN re-estimation) and of its paired difference
    (:func:`differences`): "smoothing keeps X pp more" when its whole 95 % interval is above 0,
    "smoothing loses X pp" when below, "no clear difference" otherwise, with the interval, the
    number of seeds and both accuracies. With one seed the interval covers the test images and the
    sentence says that seed-to-seed variation is not in it; ``spread`` (:func:`load_seed_spread`)
    then adds the committed multi-seed spread of the same configuration and whether this run's
    difference lies within it. When the run also has a target larger than the key one, the
    sentence goes on with the largest.

    Raises
    ------
    ValueError
        If a training is missing, or ``results`` is a headline table of several seeds (the
        interval needs the per-seed rows).
    """
    check_results(results, "headline_sentence")
    _require_trainings(results, baseline, smooth)
    if "seed" not in results.columns and results.get("n_seeds", pd.Series([1])).max() > 1:
        raise ValueError(
            "headline_sentence needs the sweep's rows (one per seed), not a headline table of "
            "several seeds"
        )
    diffs = differences(results, baseline=baseline, smooth=smooth)
    uncompressed = (
        _with_seed(results)
        .groupby("training", sort=False)["test_acc_uncompressed"]
        .mean()
        .to_dict()
    )
    names = (baseline, smooth)
    target = key_target(results, key)
    sentence = (
        f"At {100 * target:.0f} % fewer parameters (no fine-tuning), "
        f"{_at_target(diffs, target, uncompressed, names, spread)}"
    )
    largest = max(results["target_reduction"].dropna())
    if largest > target:
        sentence += (
            f"; at {100 * largest:.0f} %, {_at_target(diffs, largest, uncompressed, names, spread)}"
        )
    return sentence + "."
