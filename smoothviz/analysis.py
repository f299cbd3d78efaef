"""What a trained network's weights look like, as tidy DataFrames ready for seaborn and ``to_csv``.

- :func:`weight_smoothness`: per layer, the normalised first and second differences along the
  output- and input-channel axes (about 1 for white noise, 0 for weights constant along the axis).
- :func:`singular_spectra`: per layer, every singular value of the matrix view, normalised by the
  largest, its share of the energy and the cumulative energy.
- :func:`spectrum_summary`: per layer, effective rank (Roy & Vetterli, 2007), stable rank, the rank
  needed for 90 % / 99 % of the energy, and the nuclear norm.
- :func:`chosen_ranks`: the per-layer SVD ranks a whole-network parameter-reduction target picks;
  :func:`layers_cut_most`: the layers where those ranks remove the most parameters.
- :func:`training_histories`: several runs' per-epoch histories stacked with a ``training`` column.
- :func:`load_lambda_sweep`: the committed regulariser-weight sweep of ``benchmarks/lambda_sweep.py``
  (its rows, and the grid points a stopped sweep did not measure).

Effective and stable rank and the rank keeping an energy (:func:`rank_for_energy`, the same rule
``svd_compress(energy=...)`` uses) come from :mod:`smoothviz.spectral`. Every function accepts one model or a mapping ``{training_name: model}``; with a mapping the rows
carry a ``training`` column. Nothing here plots or writes files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from smoothviz.compress.budget import check_reduction
from smoothviz.compress.rank_allocation import allocate_ranks
from smoothviz.compress.svd import svd_factors
from smoothviz.layers import matrix_view, select_layers
from smoothviz.regularizers import normalized_difference
from smoothviz.spectral import effective_rank, rank_for_energy, singular_values, stable_rank

AXIS_NAMES = {0: "output", 1: "input"}
# What benchmarks/lambda_sweep.py commits: its rows (CSV) and, beside them, its summary (JSON).
LAMBDA_SWEEP_RESULTS = (
    Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "lambda_sweep.csv"
)

Models = nn.Module | Mapping[str, nn.Module]


def _as_mapping(models: Models) -> dict[str | None, nn.Module]:
    if isinstance(models, nn.Module):
        return {None: models}
    if isinstance(models, Mapping) and models:
        bad = [k for k, m in models.items() if not isinstance(m, nn.Module)]
        if bad:
            raise TypeError(f"models: values for {bad} are not torch.nn.Module")
        return dict(models)
    raise TypeError(
        f"models must be an nn.Module or a non-empty mapping name -> nn.Module, "
        f"got {type(models).__name__}"
    )


def _with_training(rows: list[dict[str, Any]], columns: list[str], labelled: bool) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    return df if labelled else df.drop(columns="training")


def weight_smoothness(
    models: Models,
    *,
    layers: Sequence[str] | str | None = None,
    orders: Sequence[int] = (1, 2),
) -> pd.DataFrame:
    """Normalised roughness of each layer's weight along its channel axes.

    Parameters
    ----------
    models
        A model, or ``{training_name: model}`` to compare trainings.
    layers
        Layer selection as in :func:`smoothviz.layers.select_layers` (``None``: all Conv2d/Linear but
        the first and the last; ``"all"``; or explicit names).
    orders
        Difference orders (1 and/or 2).

    Returns
    -------
    pandas.DataFrame
        One row per (training, layer, order, axis) with columns ``training`` (only for a mapping),
        ``layer``, ``order``, ``axis`` (``"output"``/``"input"``), ``roughness``
        (``||Δⁿ W||² / (g ||W||²)``, see :func:`smoothviz.regularizers.normalized_difference`).
        Axes too short for the order are left out.
    """
    mapping = _as_mapping(models)
    rows = []
    for training, model in mapping.items():
        for name, module in select_layers(model, layers):
            weight = module.weight.detach()
            for order in orders:
                for dim, axis in AXIS_NAMES.items():
                    if weight.shape[dim] <= order:
                        continue
                    rows.append(
                        {
                            "training": training,
                            "layer": name,
                            "order": int(order),
                            "axis": axis,
                            "roughness": normalized_difference(weight, order, dim),
                        }
                    )
    columns = ["training", "layer", "order", "axis", "roughness"]
    return _with_training(rows, columns, None not in mapping)


def smoothness_table(smoothness: pd.DataFrame) -> pd.DataFrame:
    """Wide summary of :func:`weight_smoothness`: one row per layer (and training), mean over axes.

    Columns ``order_1``, ``order_2`` hold the roughness averaged over the output and input axes.
    """
    index = [c for c in ("layer", "training") if c in smoothness.columns]
    table = smoothness.pivot_table(index=index, columns="order", values="roughness", aggfunc="mean")
    table.columns = [f"order_{c}" for c in table.columns]
    if "training" in index:
        table = table.unstack("training")
        table.columns = [f"{training}_{col}" for col, training in table.columns]
    layer_order = list(dict.fromkeys(smoothness["layer"]))
    return table.reindex(layer_order).reset_index()


def singular_spectra(models: Models, *, layers: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Every singular value of every selected layer's matrix view.

    Returns
    -------
    pandas.DataFrame
        One row per (training, layer, index) with columns ``training`` (only for a mapping),
        ``layer``, ``index`` (1-based rank position), ``sigma``, ``sigma_normalized`` (``σ_i / σ_1``),
        ``energy`` (``σ_i² / Σσ²``), ``cumulative_energy`` (energy kept at rank ``index``) and
        ``full_rank`` (``min(rows, cols)`` of the matrix view).
    """
    mapping = _as_mapping(models)
    frames = []
    for training, model in mapping.items():
        for name, module in select_layers(model, layers):
            s = singular_values(module.weight)
            energy = s.square() / s.square().sum().clamp_min(torch.finfo(s.dtype).tiny)
            frames.append(
                pd.DataFrame(
                    {
                        "training": training,
                        "layer": name,
                        "index": range(1, len(s) + 1),
                        "sigma": s.numpy(),
                        "sigma_normalized": (s / s[0].clamp_min(torch.finfo(s.dtype).tiny)).numpy(),
                        "energy": energy.numpy(),
                        "cumulative_energy": energy.cumsum(0).clamp_max(1.0).numpy(),
                        "full_rank": len(s),
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    return df if None not in mapping else df.drop(columns="training")


def spectrum_summary(models: Models, *, layers: Sequence[str] | str | None = None) -> pd.DataFrame:
    """Per-layer summary of the singular-value spectrum.

    Returns
    -------
    pandas.DataFrame
        One row per (training, layer) with columns ``training`` (only for a mapping), ``layer``,
        ``rows``, ``cols``, ``full_rank``, ``effective_rank`` (Roy & Vetterli), ``stable_rank``,
        ``rank_90``, ``rank_99`` (ranks keeping 90 % / 99 % of the energy) and ``nuclear_norm``.
    """
    mapping = _as_mapping(models)
    rows = []
    for training, model in mapping.items():
        for name, module in select_layers(model, layers):
            m = matrix_view(module.weight)
            s = singular_values(module.weight)
            rows.append(
                {
                    "training": training,
                    "layer": name,
                    "rows": m.shape[0],
                    "cols": m.shape[1],
                    "full_rank": len(s),
                    "effective_rank": effective_rank(s),
                    "stable_rank": stable_rank(s),
                    "rank_90": rank_for_energy(s, 0.90),
                    "rank_99": rank_for_energy(s, 0.99),
                    "nuclear_norm": float(s.sum()),
                }
            )
    columns = [
        "training",
        "layer",
        "rows",
        "cols",
        "full_rank",
        "effective_rank",
        "stable_rank",
        "rank_90",
        "rank_99",
        "nuclear_norm",
    ]
    return _with_training(rows, columns, None not in mapping)


def training_histories(histories: Mapping[str, Any]) -> pd.DataFrame:
    """Stack per-epoch histories of several runs with a ``training`` column.

    Parameters
    ----------
    histories
        ``{training_name: history}`` where a history is a DataFrame (one row per epoch) or an object
        with a ``.history`` DataFrame (a :class:`smoothviz.training.TrainedRun`).
    """
    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty mapping training_name -> history DataFrame")
    frames = []
    for name, history in histories.items():
        df = getattr(history, "history", history)
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"histories[{name!r}] is neither a DataFrame nor has a .history one")
        frames.append(df.assign(training=name))
    out = pd.concat(frames, ignore_index=True)
    return out[["training"] + [c for c in out.columns if c != "training"]]


def seed_histories(runs: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`training_histories` of every seed's runs, with a ``seed`` column.

    ``runs`` is ``{seed: {training_name: run or history}}`` (what
    ``NotebookParams.train_seed_runs`` returns).
    """
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("runs must be a non-empty mapping seed -> {training_name: run}")
    frames = [training_histories(r).assign(seed=s) for s, r in runs.items()]
    out = pd.concat(frames, ignore_index=True)
    return out[["training", "seed"] + [c for c in out.columns if c not in ("training", "seed")]]


def final_metrics(
    histories: pd.DataFrame, columns: Sequence[str] = ("test_acc", "test_loss")
) -> pd.DataFrame:
    """Last epoch of each training (and seed, when there is a ``seed`` column) in a
    :func:`training_histories` frame (with total ``seconds``)."""
    keys = ["training"] + (["seed"] if "seed" in histories.columns else [])
    last = histories.sort_values("epoch").groupby(keys, sort=False).tail(1)
    keep = keys + ["epoch"] + [c for c in columns if c in last.columns]
    out = last[keep].reset_index(drop=True)
    if len(keys) > 1:  # trainings in their order of appearance, seeds ascending within each
        order = {v: i for i, v in enumerate(dict.fromkeys(histories["training"]))}
        out = out.sort_values(
            keys, key=lambda c: c.map(order) if c.name == "training" else c, kind="stable"
        ).reset_index(drop=True)
    if "seconds" in histories.columns:
        total = histories.groupby(keys, sort=False)["seconds"].sum().rename("train_seconds")
        out = out.join(total, on=keys)
    return out


def relative_error(sigma: torch.Tensor | Sequence[float], rank: int) -> float:
    """Relative Frobenius error of the best rank-``rank`` approximation (Eckart–Young)."""
    s = torch.as_tensor(sigma, dtype=torch.float64).sort(descending=True).values
    total = s.square().sum()
    return 0.0 if total <= 0 else math.sqrt(float(s[rank:].square().sum() / total))


def chosen_ranks(
    models: Models,
    param_reduction: float,
    *,
    layers: Sequence[str] | str | None = None,
) -> pd.DataFrame:
    """The per-layer SVD ranks that remove ``param_reduction`` of each model's parameters.

    The split across layers is :func:`smoothviz.compress.rank_allocation.allocate_ranks` with
    ``allocation="energy"`` (one global threshold on ``σ² / Σσ²``), i.e. what
    ``svd_compress(model, param_reduction=...)`` does.

    Returns
    -------
    pandas.DataFrame
        One row per (training, layer): ``training`` (only for a mapping), ``layer``, ``rank``,
        ``full_rank``, ``kept_energy`` (energy kept at ``rank``) and ``factorized`` (False where
        the rank is above the break-even rank, so the layer stays dense).
    """
    target = check_reduction(param_reduction)
    mapping = _as_mapping(models)
    rows = []
    for training, model in mapping.items():
        factors = svd_factors(model, layers)
        ranks = allocate_ranks(model, factors, target, "energy")
        for name, rank in ranks.items():
            f = factors[name]
            rows.append(
                {
                    "training": training,
                    "layer": name,
                    "rank": int(rank),
                    "full_rank": f.max_rank,
                    "kept_energy": float(f.energy()[:rank].sum()),
                    "factorized": f.factorizes_at(rank),
                }
            )
    columns = ["training", "layer", "rank", "full_rank", "kept_energy", "factorized"]
    return _with_training(rows, columns, None not in mapping)


def layers_cut_most(models: Models, ranks: pd.DataFrame, n: int | None = None) -> list[str]:
    """The ``n`` layers where the chosen ranks remove the most parameters, in the network's order.

    A layer's removed parameters are its matrix view's ``rows × cols`` minus ``rank × (rows +
    cols)`` where it is factorised, and 0 where it stays dense, summed over the trainings in
    ``ranks``. Ties (e.g. nothing removed at a reduction of 0) go to the larger layer.

    Parameters
    ----------
    models
        The model(s) the ranks were chosen for (their layer shapes are read).
    ranks
        A :func:`chosen_ranks` frame.
    n
        How many layers; ``None``: every layer in ``ranks``.

    Returns
    -------
    list of str
        Layer names, in the order they appear in ``ranks``.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be None or an int >= 1, got {n!r}")
    if not isinstance(ranks, pd.DataFrame) or not {"layer", "rank"} <= set(ranks.columns):
        raise ValueError("ranks must be a chosen_ranks frame (columns 'layer' and 'rank')")
    modules = dict(next(iter(_as_mapping(models).values())).named_modules())
    order = list(dict.fromkeys(ranks["layer"]))
    removed = dict.fromkeys(order, 0)
    size = {}
    for _, row in ranks.iterrows():
        module = modules.get(row["layer"])
        if module is None or not hasattr(module, "weight"):
            raise ValueError(f"ranks: layer {row['layer']!r} is not a layer of the model")
        rows, cols = matrix_view(module.weight).shape
        size[row["layer"]] = rows * cols
        if row.get("factorized", True):
            removed[row["layer"]] += rows * cols - int(row["rank"]) * (rows + cols)
    if n is None:
        return order
    chosen = set(sorted(order, key=lambda name: (-removed[name], -size[name]))[:n])
    return [name for name in order if name in chosen]


TRADEOFF_COLUMNS = (
    "training",
    "method",
    "target_reduction",
    "param_reduction",
    "params",
    "flops",
    "latency_ms",
    "test_acc",
    "test_acc_bn_reestimated",
    "error",
)


def tradeoff_table(results: pd.DataFrame) -> pd.DataFrame:
    """The columns of a :func:`smoothviz.sweep.sweep` frame a reader compares, sorted.

    Keeps ``training``, ``method``, the target and achieved reduction, ``params``, ``flops``,
    ``latency_ms``, ``test_acc``, ``test_acc_bn_reestimated`` and ``error`` (those present), plus
    ``acc_drop`` (uncompressed minus compressed test accuracy) when the sweep recorded it.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a DataFrame, got {type(results).__name__}")
    table = results[[c for c in TRADEOFF_COLUMNS if c in results.columns]].copy()
    if {"test_acc", "test_acc_uncompressed"} <= set(results.columns):
        table.insert(
            table.columns.get_loc("test_acc") + 1,
            "acc_drop",
            results["test_acc_uncompressed"] - results["test_acc"],
        )
    if "error" in table.columns and table["error"].isna().all():
        table = table.drop(columns="error")
    keys = [c for c in ("method", "training", "target_reduction") if c in table.columns]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def load_lambda_sweep(
    path: str | Path = LAMBDA_SWEEP_RESULTS,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The rows of a regulariser-weight sweep, and the grid points it did not measure.

    Reads what ``benchmarks/lambda_sweep.py`` committed (measurements of the benchmark model, not
    of any report's trainings): ``path`` (CSV, ready for :func:`smoothviz.plots.lambda_sweep_grid`)
    and the ``missing`` list of the JSON summary beside it (empty for a complete sweep).

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist; the message says how to make it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; run benchmarks/lambda_sweep.py (or, in the trade-off notebook, set "
            "show_lambda_sweep to False)"
        )
    summary = path.with_suffix(".json")
    missing = json.loads(summary.read_text()).get("missing") if summary.is_file() else None
    return pd.read_csv(path), list(missing or [])
