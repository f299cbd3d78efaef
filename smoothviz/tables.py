"""Tables for people: rounded, labelled numbers with a caption that defines each column.

A sweep frame holds raw floats (``0.88313``, ``176258``, ``1.23456``); a reader wants ``88.3``,
``176.3 k``, ``1.23 ms (IQR 0.05)``, smooth beside baseline, and a caption saying what each column
is. The formatters here (:func:`pct`, :func:`pp`, :func:`count`, :func:`latency`,
:func:`interval`, :func:`decimal`) are the one way numbers are written in the notebooks and on the
report's landing page. Every table a notebook shows is built here from its tidy frame, the two
trainings side by side (:func:`side_by_side`):

- 01: :func:`training_summary`, :func:`history_summary`;
- 02: :func:`smoothness_summary`;
- 03: :func:`spectrum_table`, :func:`ranks_table`;
- 04: :func:`differences_summary`, :func:`best_methods_summary`, :func:`tradeoff_summary`;
- 05: :func:`explorer_summary`.

A :class:`Table` renders as HTML in a notebook (its caption, which defines every column, above
it) and as plain text with ``print``; its cells are strings, never raw floats.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def decimal(x: float | None, decimals: int = 2) -> str:
    """A plain number rounded for reading: ``0.93544`` -> ``"0.94"``; very small or large
    numbers (a learning rate) in scientific notation: ``2e-07`` -> ``"2.0e-07"``."""
    if _missing(x):
        return MISSING
    x = float(x)
    if x != 0 and (abs(x) < 10**-decimals or abs(x) >= 1e6):
        return f"{x:.1e}"
    return f"{x:.{decimals}f}"


def integer(n: float | None) -> str:
    """A whole number with thousands separators: ``24000`` -> ``"24,000"``."""
    return MISSING if _missing(n) else f"{float(n):,.0f}"


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
        styler = styler.set_caption(html.escape(self.caption)).set_table_styles(
            [{"selector": "caption", "props": "caption-side: top; text-align: left;"}]
        )
        return styler.to_html()

    def _repr_html_(self) -> str:
        return self.to_html()

    def __str__(self) -> str:
        return f"{self.caption}\n\n{self.frame.to_string(index=False)}"


Formatter = Callable[[Any], str]


def side_by_side(
    frame: pd.DataFrame,
    keys: Sequence[str],
    columns: Mapping[str, tuple[str, Formatter]],
    *,
    shared: Mapping[str, tuple[str, Formatter]] | None = None,
    by: str = "training",
    order: Sequence[str] = ("baseline", "smooth"),
) -> pd.DataFrame:
    """A long frame (one row per ``by`` value and ``keys``) as one row per ``keys``, each ``by``
    value's formatted ``columns`` beside the others' under its name.

    Parameters
    ----------
    frame
        Tidy rows with a ``by`` column (the training) and the ``keys`` columns.
    keys
        The columns that identify a row (e.g. ``["layer"]``), kept first and in order of first
        appearance.
    columns
        ``{source column: (label, formatter)}`` shown once per ``by`` value.
    shared
        ``{source column: (label, formatter)}`` shown once after the keys (the same in every
        ``by`` value, e.g. a layer's shape), read from the first row of each key.
    order
        ``by`` values to put first, in this order (others follow in order of appearance).

    Returns
    -------
    pandas.DataFrame
        String cells under two-level columns: ``("", key)``, ``("", shared label)``, then
        ``(training, label)``.
    """
    keys = list(keys)
    missing = [c for c in [by, *keys, *columns, *(shared or {})] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks the columns {missing}; it has {list(frame.columns)}")
    present = list(dict.fromkeys(frame[by]))
    groups = [g for g in order if g in present] + [g for g in present if g not in order]
    rows = []
    for key, g in frame.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[tuple[str, str], str] = {("", k): str(v) for k, v in zip(keys, key)}
        first = g.iloc[0]
        for col, (label, fmt) in (shared or {}).items():
            row[("", label)] = fmt(first[col])
        for name in groups:
            r = g[g[by] == name]
            for col, (label, fmt) in columns.items():
                row[(str(name), label)] = MISSING if r.empty else fmt(r.iloc[0][col])
        rows.append(row)
    out = pd.DataFrame(rows)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    return out


def _round(decimals: int) -> Formatter:
    return lambda x: decimal(x, decimals)


def _seconds(x: Any) -> str:
    return MISSING if _missing(x) else f"{float(x):.1f} s"


def training_summary(final: pd.DataFrame) -> Table:
    """Notebook 01's table: each training's last epoch per seed
    (:func:`smoothviz.analysis.final_metrics`), baseline beside smooth."""
    keys = ["seed"] if "seed" in final.columns else []
    frame = final if keys else final.assign(seed=0)
    columns = {
        "epoch": ("epochs", integer),
        "test_acc": ("test acc %", pct),
        "test_loss": ("test loss", _round(3)),
    }
    if "train_seconds" in frame.columns:
        columns["train_seconds"] = ("time", _seconds)
    caption = (
        "Each training after its last epoch (one row per seed). epochs: epochs trained; test acc "
        "%: accuracy on the test split (the notebook's eval_subset) in %; test loss: mean "
        "cross-entropy on it; time: training time summed over the epochs (a cached training "
        "shows the time it took when it was trained)."
    )
    return Table(side_by_side(frame, ["seed"], columns), caption)


def history_summary(histories: pd.DataFrame) -> Table:
    """Notebook 01's per-epoch table (:func:`smoothviz.analysis.seed_histories`), baseline
    beside smooth, one row per seed and epoch."""
    frame = histories if "seed" in histories.columns else histories.assign(seed=0)
    columns = {
        "train_loss": ("train loss", _round(3)),
        "test_loss": ("test loss", _round(3)),
        "test_acc": ("test acc %", pct),
        "lr": ("lr", lambda x: MISSING if _missing(x) else f"{float(x):.2e}"),
        "seconds": ("time", _seconds),
    }
    columns = {k: v for k, v in columns.items() if k in frame.columns}
    regs = [c for c in frame.columns if c.startswith("reg_")]
    for c in regs:
        columns[c] = (c.removeprefix("reg_").replace("_", "-") + " penalty", _round(3))
    caption = (
        "Per epoch. train loss: mean training loss over the epoch (cross-entropy, without the "
        "penalty); test loss, test acc %: cross-entropy and accuracy on the test split after the "
        "epoch; lr: the learning rate of the epoch's last step; time: the epoch's seconds"
        + (
            "; … penalty: that regulariser's value before its weight, mean over the epoch's "
            f"steps ({MISSING} where the training has no such penalty)"
            if regs
            else ""
        )
        + "."
    )
    return Table(side_by_side(frame, ["seed", "epoch"], columns), caption)


def smoothness_summary(table: pd.DataFrame) -> Table:
    """Notebook 02's table (:func:`smoothviz.analysis.smoothness_table`): normalised roughness
    per layer, first and second differences, baseline beside smooth."""
    long = []
    for _, r in table.iterrows():
        for training in ("baseline", "smooth"):
            if f"{training}_order_1" in table.columns:
                long.append(
                    {
                        "layer": r["layer"],
                        "training": training,
                        "order_1": r[f"{training}_order_1"],
                        "order_2": r.get(f"{training}_order_2", math.nan),
                    }
                )
    frame = side_by_side(
        pd.DataFrame(long),
        ["layer"],
        {"order_1": ("1st diff.", _round(2)), "order_2": ("2nd diff.", _round(2))},
    )
    caption = (
        "Roughness of each layer's weights along its channel axes, mean over the output and "
        "input axes. 1st diff. / 2nd diff.: the norm of the first / second differences between "
        "neighbouring channels, divided by what white-noise weights of the same size give (1: "
        "as rough as noise, 0: constant along the axis). Lower is smoother."
    )
    return Table(frame, caption)


def spectrum_table(summary: pd.DataFrame) -> Table:
    """Notebook 03's spectrum table (:func:`smoothviz.analysis.spectrum_summary`), baseline
    beside smooth."""
    frame = summary.assign(shape=[f"{r} × {c}" for r, c in zip(summary["rows"], summary["cols"])])
    table = side_by_side(
        frame,
        ["layer"],
        {
            "effective_rank": ("eff. rank", _round(1)),
            "stable_rank": ("stable rank", _round(1)),
            "rank_90": ("r 90 %", integer),
            "rank_99": ("r 99 %", integer),
            "nuclear_norm": ("nuclear norm", _round(1)),
        },
        shared={"shape": ("matrix", str), "full_rank": ("full rank", integer)},
    )
    caption = (
        "Singular values of each layer's weight matrix (a convolution's out-channels × "
        "in-channels·kh·kw). matrix: its shape; full rank: its number of singular values; eff. "
        "rank: Roy & Vetterli's effective rank, exp of the entropy of the normalised singular "
        "values; stable rank: ‖W‖²_F / σ₁²; r 90 % / r 99 %: the fewest singular values keeping "
        "90 % / 99 % of the energy Σσ²; nuclear norm: Σσ. Lower ranks: easier to compress."
    )
    return Table(table, caption)


def ranks_table(ranks: pd.DataFrame) -> Table:
    """Notebook 03's ranks (:func:`smoothviz.analysis.chosen_ranks`): per layer, the rank the
    whole-network SVD budget keeps, as ``r / max``, baseline beside smooth."""
    frame = ranks.assign(
        kept=[f"{r} / {m}" for r, m in zip(ranks["rank"], ranks["full_rank"])],
        form=["factorised" if f else "left dense" for f in ranks["factorized"]],
    )
    table = side_by_side(
        frame,
        ["layer"],
        {"kept": ("rank", str), "kept_energy": ("energy kept %", pct), "form": ("kept as", str)},
    )
    caption = (
        "The SVD ranks that remove the notebook's param_reduction of each model's parameters, "
        "with one global threshold on σ²/Σσ² (what svd_compress does). rank: singular values "
        "kept / the layer's full rank; energy kept %: Σσ² of the kept values over the layer's "
        "total; kept as: factorised into two smaller layers, or left dense where the rank is above "
        "the break-even rank (factorising would not save parameters)."
    )
    return Table(table, caption)


def best_methods_summary(best: pd.DataFrame) -> Table:
    """Notebook 04's best methods (:func:`smoothviz.headline.best_methods`): per target, each
    training's best method and its accuracy, baseline beside smooth."""
    column = [c for c in best.columns if c not in ("training", "target_reduction", "method")][0]
    frame = best.assign(target=[pct(t, 0) for t in best["target_reduction"]])
    table = side_by_side(
        frame,
        ["target"],
        {
            "method": ("best method", lambda m: MISSING if m is None else str(m)),
            column: ("test acc %", pct),
        },
    )
    table = table.rename(columns={"target": "target %"}, level=1)
    caption = (
        "target %: the parameter reduction asked for; best method: the method with the highest "
        "test accuracy at that target (mean over seeds), straight after compression; test acc "
        f"%: its accuracy. {MISSING}: no method reached the target."
    )
    return Table(table, caption)


def explorer_summary(summary: pd.DataFrame) -> Table:
    """Notebook 05's table of an explorer's choice (``explorer.summary()``): one row, in words."""
    cells = []
    for _, r in summary.iterrows():
        row = {
            "model": str(r["model"]),
            "method": str(r["method"]),
            "removed %": pct(r["param_reduction"]),
            "params": f"{count(r['params'])} of {count(r['total_params'])}",
            "FLOPs": f"{count(r['flops'])} of {count(r['total_flops'])}",
            "FLOPs removed %": pct(r["flop_reduction"]),
            "test acc %": pct(r["test_acc"]),
            "test images": integer(r["n_test"]),
        }
        if isinstance(r.get("ranks"), Mapping):
            row["ranks"] = ", ".join(f"{k}: {v}" for k, v in r["ranks"].items())
        cells.append(row)
    caption = (
        "The explorer's current choice, measured on the whole test split. removed %: parameters "
        "removed, whole network; params: parameters of the compressed model of the "
        "uncompressed one's; FLOPs: per image, 2 per multiply-add, counted by "
        "torch.utils.flop_counter (unstructured pruning leaves them unchanged: its zeros are "
        "still multiplied); test acc %: accuracy straight after compression; test images: how "
        "many it was measured on"
        + ("; ranks: the singular values kept per layer" if "ranks" in summary.columns else "")
        + "."
    )
    return Table(pd.DataFrame(cells), caption)


def checkpoint_summary(table: pd.DataFrame) -> Table:
    """Notebook 01's table for a user's checkpoints
    (:func:`smoothviz.checkpoints.checkpoint_table`): one row per model."""
    cells = {
        "training": table["training"].astype(str),
        "checkpoint": table["checkpoint"].astype(str),
        "params": table["parameters"].map(count),
        "test acc %": table["test_acc"].map(pct),
        "test loss": table["test_loss"].map(_round(3)),
    }
    caption = (
        "Your checkpoints, nothing trained. checkpoint: the state_dict file; params: parameters "
        "of the model built from it; test acc %: accuracy on the test split (the notebook's "
        "eval_subset) in %; test loss: mean cross-entropy on it."
    )
    return Table(pd.DataFrame(cells), caption)


def frontier_summary(frontier: pd.DataFrame) -> Table:
    """Notebook 04's trained-small frontier (:func:`smoothviz.frontier.reference_frontier` or a
    committed measurement): one row per width and seed."""
    cells = {
        "width": frontier["width"].map(integer),
        "seed": frontier["seed"].map(integer),
        "params": frontier["params"].map(count),
        "test acc %": frontier["test_acc"].map(pct),
        "source": frontier["source"].astype(str),
    }
    caption = (
        "The baseline's recipe trained from scratch at narrower widths. width: the model's base "
        "width; params: its parameters; test acc %: accuracy on the test split in %; source: "
        "trained in this run, or the committed measurement for this recipe."
    )
    return Table(pd.DataFrame(cells), caption)


def frontier_placement(placed: pd.DataFrame) -> Table:
    """Notebook 04's results against the frontier (:func:`smoothviz.frontier.compare_to_frontier`):
    one row per training, method and target."""
    keys = [c for c in ("training", "method") if c in placed.columns]
    cells = {k: placed[k].astype(str) for k in keys}
    if "target_reduction" in placed.columns:
        cells["target"] = placed["target_reduction"].map(pct)
    cells["params"] = placed["params"].map(count)
    cells["test acc %"] = placed["test_acc"].map(pct)
    cells["frontier acc %"] = placed["frontier_acc"].map(pct)
    cells["gap pp"] = [
        interval(g, lo, hi, signed=True)
        for g, lo, hi in zip(placed["frontier_gap"], placed["gap_low"], placed["gap_high"])
    ]
    cells["versus frontier"] = placed["versus_frontier"].astype(str)
    caption = (
        "Each compressed result against the trained-small frontier at its own parameter count. "
        "target: parameters removed; params: parameters left; test acc %: accuracy after "
        "compression; frontier acc %: the frontier's accuracy at that count, interpolated "
        "linearly in log-parameters between the two nearest widths (never extrapolated); gap pp: "
        "compressed minus frontier in percentage points, with its 95 % t interval over seeds "
        "when there are several; versus frontier: above / below when the whole interval is on "
        "one side."
    )
    return Table(pd.DataFrame(cells), caption)


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
