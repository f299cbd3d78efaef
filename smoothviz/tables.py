"""Tables for people: rounded, labelled numbers with a caption that defines each column.

A sweep frame holds raw floats (``0.88313``, ``176258``, ``1.23456``); a reader wants ``88.3``,
``176.3 k``, ``1.23 ms (IQR 0.05)``, smooth beside baseline, and a caption saying what each column
is. The formatters here (:func:`pct`, :func:`pp`, :func:`count`, :func:`latency`,
:func:`interval`) are the one way numbers are written in the notebooks and on the report's landing
page; :func:`tradeoff_summary` and :func:`differences_summary` build the trade-off notebook's
tables from them. A :class:`Table` renders as HTML in a notebook (its caption above) and as plain
text with ``print``.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import pandas as pd

from smoothviz.headline import differences as _differences
from smoothviz.headline import headline_table
from smoothviz.results_file import check_results

MISSING = "—"  # not measured, or the target not reached


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def pct(x: float | None, decimals: int = 1) -> str:
    """A fraction as a percentage without the sign: ``0.8831`` -> ``"88.3"``."""
    return MISSING if _missing(x) else f"{100 * float(x):.{decimals}f}"


def pp(x: float | None, decimals: int = 1) -> str:
    """A difference of fractions in percentage points, signed: ``0.021`` -> ``"+2.1"``."""
    return MISSING if _missing(x) else f"{100 * float(x):+.{decimals}f}"


def count(n: float | None) -> str:
    """A count with a unit: ``812``, ``52.9 k``, ``1.20 M``, ``3.4 G``."""
    if _missing(n):
        return MISSING
    n = float(n)
    for size, unit, digits in ((1e9, "G", 1), (1e6, "M", 2), (1e3, "k", 1)):
        if abs(n) >= size:
            return f"{n / size:.{digits}f} {unit}"
    return f"{n:,.0f}"


def latency(median_ms: float | None, iqr_ms: float | None = None) -> str:
    """A latency as its median with its spread: ``"1.23 ms (IQR 0.05)"``."""
    if _missing(median_ms):
        return MISSING
    spread = "" if _missing(iqr_ms) else f" (IQR {float(iqr_ms):.2f})"
    return f"{float(median_ms):.2f} ms{spread}"


def _range(lo: float, hi: float, signed: bool) -> str:
    fmt = pp if signed else pct
    return f"{fmt(lo)} to {fmt(hi)}"


def interval(
    mean: float | None, low: float | None, high: float | None, signed: bool = False
) -> str:
    """A mean with its 95 % interval in brackets, in % (or pp when ``signed``):
    ``"88.3 [87.1 to 89.5]"``; just the mean when there is no interval (one seed)."""
    fmt = pp if signed else pct
    if _missing(mean):
        return MISSING
    if _missing(low) or _missing(high):
        return fmt(mean)
    return f"{fmt(mean)} [{_range(low, high, signed)}]"


@dataclass(frozen=True)
class Table:
    """Formatted cells (strings) and the caption that defines their columns."""

    frame: pd.DataFrame
    caption: str

    def to_html(self) -> str:
        """An HTML table with the caption above it (every cell escaped)."""
        styler = self.frame.style.hide(axis="index").format(escape="html")
        styler = styler.set_caption(html.escape(self.caption))
        return styler.to_html()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return f"{self.caption}\n\n{self.frame.to_string(index=False)}"


def _seeds_words(n_seeds: int) -> str:
    if n_seeds > 1:
        return f"mean over {n_seeds} seeds, with its 95 % Student-t interval over seeds in brackets"
    return "one seed"


def tradeoff_summary(
    results: pd.DataFrame, *, baseline: str = "baseline", smooth: str = "smooth"
) -> Table:
    """The trade-off notebook's table: per method and target, the two trainings side by side.

    Columns per training: achieved parameter reduction, parameters, FLOPs per image, latency,
    test accuracy (plain; after BatchNorm re-estimation when measured), then smooth minus
    baseline in percentage points. With several seeds every number is a mean over seeds (the
    accuracies with their 95 % interval).
    """
    check_results(results, "tradeoff_summary")
    table = headline_table(results)
    df = results if "seed" in results.columns else results.assign(seed=0)
    n_seeds = int(df["seed"].nunique())
    means = df.groupby(["training", "method", "target_reduction"], sort=False)[
        [c for c in ("params", "flops", "latency_ms", "latency_iqr_ms") if c in df.columns]
    ].mean()
    diffs = _differences(results, baseline=baseline, smooth=smooth).set_index(
        ["method", "target_reduction"]
    )
    with_bn = bool(table["test_acc_bn_reestimated"].notna().any())
    rows = []
    for (method, target), g in table.groupby(["method", "target_reduction"], sort=False):
        row: dict[tuple[str, str], str] = {("", "method"): method, ("", "target %"): pct(target, 0)}
        for training in (baseline, smooth):
            r = g[g["training"] == training]
            if r.empty:
                continue
            r = r.iloc[0]
            m = means.loc[(training, method, target)]
            row[(training, "removed %")] = pct(r["param_reduction"])
            row[(training, "params")] = count(m.get("params"))
            row[(training, "FLOPs")] = count(m.get("flops"))
            row[(training, "latency")] = latency(m.get("latency_ms"), m.get("latency_iqr_ms"))
            row[(training, "test acc %")] = interval(
                r["test_acc"], r["test_acc_ci95_low"], r["test_acc_ci95_high"]
            )
            if with_bn:
                row[(training, "BN re-est. %")] = pct(r["test_acc_bn_reestimated"])
        d = diffs.loc[(method, target)] if (method, target) in diffs.index else None
        row[("smooth − baseline", "pp")] = (
            MISSING
            if d is None
            else interval(
                d["difference_mean"], d["difference_ci95_low"], d["difference_ci95_high"], True
            )
        )
        row[("smooth − baseline", "verdict")] = MISSING if d is None else d["verdict"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    caption = (
        f"Compressed without fine-tuning, {_seeds_words(n_seeds)}. target %: the parameter "
        "reduction asked for; removed %: the reduction reached (whole network, every parameter "
        "of the returned model counted); params: parameters of the compressed model; FLOPs: per "
        "image, by torch.utils.flop_counter (2 per multiply-add); latency: median of timed "
        "forward passes of a batch of 32 test images, with its interquartile range; test acc %: "
        "accuracy on the test split straight after compression"
        + (
            "; BN re-est. %: the same after re-estimating BatchNorm on training images"
            if with_bn
            else ""
        )
        + "; smooth − baseline: the paired difference in percentage points with its 95 % "
        "interval (over seeds; with one seed over the test images, exact McNemar) and its "
        "verdict (benefit: the whole interval above 0; harm: below; unclear: otherwise). "
        f"{MISSING}: not measured, or the method could not reach the target."
    )
    return Table(frame, caption)


def differences_summary(
    results: pd.DataFrame, *, baseline: str = "baseline", smooth: str = "smooth"
) -> Table:
    """Smooth minus baseline per method and target (:func:`smoothviz.headline.differences`),
    in percentage points with the interval, what it covers and the verdict."""
    diffs = _differences(results, baseline=baseline, smooth=smooth)
    where = {"seeds": "seeds", "test_images": "test images (one seed)", None: "none"}
    frame = pd.DataFrame(
        {
            "method": diffs["method"],
            "target %": [pct(t, 0) for t in diffs["target_reduction"]],
            "smooth %": [pct(x) for x in diffs["smooth_acc"]],
            "baseline %": [pct(x) for x in diffs["baseline_acc"]],
            "difference pp": [pp(x) for x in diffs["difference_mean"]],
            "95 % interval pp": [
                MISSING if _missing(lo) or _missing(hi) else _range(lo, hi, True)
                for lo, hi in zip(diffs["difference_ci95_low"], diffs["difference_ci95_high"])
            ],
            "interval over": [where.get(s, s) for s in diffs["ci_source"]],
            "seeds": diffs["n_seeds"].astype(str),
            "verdict": diffs["verdict"],
        }
    )
    caption = (
        "Smooth minus baseline test accuracy (no fine-tuning), paired by seed (same seed, test "
        "and calibration images). Over several seeds: the mean difference and the Student-t "
        "interval of the per-seed differences; with one seed: the interval over the test images "
        "(exact McNemar), which leaves out seed-to-seed variation. Verdict: benefit when the "
        "whole interval is above 0, harm when it is below, unclear otherwise."
    )
    return Table(frame, caption)
