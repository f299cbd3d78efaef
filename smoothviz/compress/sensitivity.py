"""Measured sensitivity: how much the network's output moves when one group is cut to one size.

The measurement of AIMET's greedy per-layer compression-ratio selection, in our words: for every
group (a layer's rank, a producer's channels, ...) and a few candidate sizes, cut *only that
group* to that size, run a calibration batch, and record the damage. The damage is the mean KL
divergence ``KL(p_original ‖ p_cut)`` of the class probabilities over the calibration images
(ours). KL needs no labels (calibration tensors are inputs only, as in every data-aware method
here), is zero exactly when the output is unchanged and never negative, so it measures departure
from the uncompressed function, which is what a method without fine-tuning must keep. A loss
increase would need labels and can be negative by chance on a small batch.

The table is computed once per (model, method, calibration batch, candidates) and cached by the
caller (the factor objects keep it in their ``cache`` dict). :func:`unit_scores` turns it into
the per-unit scores of :func:`smoothviz.compress.budget.allocate`. Its default rule is ours:
damage per parameter saved, from the lower convex hull of each group's damage curve. AIMET's rule
(every group cut to the smallest size whose own damage stays under one level) is
``rule="level"``; on the resnet18-w16 baseline it lost far more accuracy than the marginal rule,
because it spends as much damage on small layers that save few parameters as on large ones
(``benchmarks/results/svd_choices.md``).

Any structured method can use it: describe the groups, give candidate sizes (e.g.
:func:`candidate_sizes`), the parameters one unit of each group costs, and a callback
``build(group, size) -> model`` that returns a copy of the model with only that group cut::

    table = measure_sensitivity(model, calibration, {"conv2": [4, 8, 12]}, {"conv2": 16},
                                lambda g, k: prune_to(model, {g: k}))
    scores = unit_scores(table, {"conv2": params_per_channel})
    kept = allocate(scores, count_params, total, target)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from smoothviz._validation import is_int
from smoothviz.compress.calibration import check_calibration
from smoothviz.compress.calibration import fingerprint as fingerprint  # moved; importable here

DEFAULT_FRACTIONS = (1 / 16, 1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8)
DEFAULT_IMAGES = 256  # calibration images per sensitivity forward pass


def candidate_sizes(
    max_size: int, limit: int | None = None, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> list[int]:
    """Sizes at which to measure a group of ``max_size`` units: fractions of it, at most ``limit``.

    ``limit`` is the largest size worth measuring (for SVD the break-even rank: a larger rank
    saves nothing); it is itself always a candidate when it is below ``max_size``.
    """
    top = max_size - 1 if limit is None else min(int(limit), max_size - 1)
    if top < 1:
        return []
    sizes = {min(top, max(1, round(f * max_size))) for f in fractions}
    sizes.add(top)
    return sorted(sizes)


def _log_probs(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(F.log_softmax(model(x[start : start + batch_size].to(device)).float(), 1))
    return torch.cat(out).cpu().double()


def measure_sensitivity(
    model: nn.Module,
    calibration: torch.Tensor,
    candidates: Mapping[str, Sequence[int]],
    max_sizes: Mapping[str, int],
    build: Callable[[str, int], nn.Module],
    *,
    images: int | None = DEFAULT_IMAGES,
    batch_size: int = 256,
    progress: bool = False,
) -> pd.DataFrame:
    """Damage of cutting each group alone to each candidate size, on a calibration batch.

    Parameters
    ----------
    model
        The uncompressed network (not modified; run in eval mode).
    calibration
        Training inputs ``(N, ...)``; the first ``images`` of them are used.
    candidates
        ``{group: sizes}``; each size in ``[1, max_sizes[group])``.
    max_sizes
        ``{group: full size}`` (no damage at the full size).
    build
        ``build(group, size)`` returns a new model in which only ``group`` is cut to ``size``.
    images
        Calibration images to use (``None``: all).
    batch_size
        Images per forward pass.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per (group, size): ``group``, ``size``, ``max_size``, ``kl`` (mean
        ``KL(p_original ‖ p_cut)`` in nats per image).
    """
    from tqdm.auto import tqdm

    calibration = check_calibration(model, calibration)
    if not isinstance(candidates, Mapping) or not isinstance(max_sizes, Mapping):
        raise TypeError("candidates and max_sizes must be dicts keyed by group name")
    missing = [g for g in candidates if g not in max_sizes]
    if missing:
        raise ValueError(f"max_sizes: no full size given for groups {missing}")
    for g, sizes in candidates.items():
        bad = [k for k in sizes if not is_int(k) or not 1 <= k < max_sizes[g]]
        if bad:
            raise ValueError(
                f"candidates[{g!r}]: sizes {bad} are not ints in [1, {max_sizes[g] - 1}]"
            )
    x = calibration if images is None else calibration[:images]
    was_training = model.training
    model.eval()
    try:
        ref = _log_probs(model, x, batch_size)
        rows = []
        total = sum(len(s) for s in candidates.values())
        with tqdm(total=total, desc="sensitivity", disable=not progress, leave=False) as bar:
            for group, sizes in candidates.items():
                for size in sorted({int(k) for k in sizes}):
                    cut = build(group, size).eval()
                    lp = _log_probs(cut, x, batch_size)
                    kl = float((ref.exp() * (ref - lp)).sum(1).mean())
                    rows.append(
                        {"group": group, "size": size, "max_size": int(max_sizes[group]), "kl": kl}
                    )
                    bar.update()
    finally:
        model.train(was_training)
    table = pd.DataFrame(rows, columns=["group", "size", "max_size", "kl"])
    # Groups with no candidate (nothing worth cutting) still belong to the table's groups.
    table.attrs["groups"] = {g: int(max_sizes[g]) for g in candidates}
    return table


RULES = ("marginal", "level")


def _damage_curve(table: pd.DataFrame, group: str, k: int, metric: str):
    rows = table[table.group == group].sort_values("size")
    sizes = np.append(rows["size"].to_numpy(dtype=np.float64), k)
    damage = np.append(np.clip(rows[metric].to_numpy(dtype=np.float64), 0, None), 0.0)
    return sizes, damage


def _lower_hull(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    hull: list[tuple[float, float]] = []
    for p in zip(x, y):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) >= (p[1] - y1) * (x2 - x1):  # hull[-1] lies above
                hull.pop()
            else:
                break
        hull.append(p)
    return np.array([h[0] for h in hull]), np.array([h[1] for h in hull])


def unit_scores(
    table: pd.DataFrame,
    costs: Mapping[str, float] | None = None,
    *,
    rule: str = "marginal",
    metric: str = "kl",
) -> dict[str, np.ndarray]:
    """Per-unit scores for :func:`~smoothviz.compress.budget.allocate` from a sensitivity table.

    Parameters
    ----------
    table
        From :func:`measure_sensitivity`.
    costs
        ``{group: parameters removed with one unit}`` (for SVD ``m + n`` per rank); needed by
        ``rule="marginal"``.
    rule
        ``"marginal"`` (default): ``score[j]`` is the damage added per parameter saved when the
        group goes from ``j + 1`` to ``j`` units, read off the lower convex hull of the measured
        damage-vs-size curve (``0`` at the full size). One global threshold then stops every
        group where one more parameter saved costs the same damage everywhere, which minimises
        the summed damage for the budget (the Lagrangian rule of rate-distortion allocation).
        ``"level"``: ``score[j]`` is the damage when the group keeps ``j`` units (linear
        interpolation), so one threshold gives every group the smallest size whose own damage
        stays below it: AIMET's greedy rule, which ignores how many parameters each cut saves.
    metric
        The table's damage column.

    Returns
    -------
    dict
        ``{group: scores}``, non-increasing in ``j`` as the allocator requires (a running maximum
        from the end; below the smallest measured size a unit scores at least as much as the
        first measured one).
    """
    if not isinstance(rule, str) or rule not in RULES:
        raise ValueError(f"rule must be one of {list(RULES)}, got {rule!r}")
    groups = table.attrs.get("groups") or dict(
        table.groupby("group", sort=False)["max_size"].first()
    )
    if rule == "marginal":
        if not isinstance(costs, Mapping):
            raise TypeError("costs ({group: parameters per unit}) are required for rule='marginal'")
        missing = [g for g in groups if g not in costs]
        if missing:
            raise ValueError(f"costs: no parameters-per-unit given for groups {missing}")
    out = {}
    for g, k in groups.items():
        sizes, damage = _damage_curve(table, g, int(k), metric)
        units = np.arange(k, dtype=np.float64)
        if rule == "level":
            s = np.interp(units, sizes, damage)
        else:
            hx, hy = _lower_hull(sizes, damage)
            kept = np.interp(np.append(units, k), hx, hy)  # damage when j units are kept
            s = (kept[:-1] - kept[1:]) / max(float(costs[g]), 1e-300)
        out[g] = np.maximum.accumulate(s[::-1])[::-1]
    return out
