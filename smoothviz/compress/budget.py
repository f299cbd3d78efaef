"""One budget allocator for every method: a whole-network parameter target -> per-layer sizes.

Each method describes its layers as *groups* of removable units (singular values for SVD, channels
for pruning and the interpolative decomposition), each unit with an importance score, and gives a
function that counts the parameters of the whole network for a choice of kept units per group. The
allocator removes units globally, least important first (one threshold on the score across all
layers), and stops at the prefix whose parameter count is closest to the target. Because the
parameter count is recomputed exactly after every removal, coupled layers (a channel cut shrinks
the next layer too) and step-shaped costs (SVD only pays off below the break-even rank) are
handled exactly. The scores:

- SVD: the fraction of the layer's energy ``σ_j² / Σσ²`` carried by the singular value
  (``allocation="energy"``, the default);
- data-aware SVD: the absolute output error ``σ_j²`` of the whitened SVD
  (``allocation="output_error"``, the default; see :mod:`smoothviz.compress.data_aware_svd`);
- either SVD, ``allocation="sensitivity"``: the measured damage (KL to the uncompressed outputs)
  of cutting the layer alone to each size (:mod:`smoothviz.compress.sensitivity`);
- interpolative decomposition: the pivoted-QR error proxy ``|R[j, j] / R[0, 0]|``;
- structured pruning: the filter's L1 norm over the layer's largest filter L1 norm.

The scores must compare across groups, because one threshold cuts them all: a per-layer
normalised score (energy fractions) gives every layer the same *relative* error, an absolute one
(output error, measured damage) the same *absolute* damage.

Implemented by hand: it is a short greedy walk, and the per-method scores are ours
(``docs/methods.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from smoothviz._validation import is_number
from smoothviz.errors import ShortTraceback

TOLERANCE = 0.01  # the achieved reduction must lie within 1 percentage point of the target


class BudgetError(ShortTraceback, ValueError):
    """The requested parameter reduction cannot be reached; the message says why (in a notebook,
    as a short paragraph: :class:`~smoothviz.errors.ShortTraceback`)."""


def check_reduction(value: object, name: str = "param_reduction") -> float:
    """Validate a whole-network reduction target (or any fraction removed): a number in ``[0, 1)``.

    A value that is not a number raises ``TypeError``, one outside ``[0, 1)`` ``ValueError``.
    """
    if not is_number(value):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return value


def exactly_one(**options: object) -> str:
    """The name of the single option that is not ``None``; an error naming them all otherwise."""
    given = [k for k, v in options.items() if v is not None]
    if len(given) != 1:
        names = ", ".join(options)
        raise TypeError(f"pass exactly one of {names}; got {given or 'none'}")
    return given[0]


def check_allocation(
    allocation: object,
    allowed: Sequence[str],
    *,
    default: str,
    mode: str,
    calibration: object,
    needs_calibration: Sequence[str] = (),
) -> str:
    """Validate an ``allocation=`` choice (how a ``param_reduction`` is split across layers).

    Raises
    ------
    ValueError
        If it is not one of ``allowed``.
    TypeError
        If a non-default allocation is given without ``param_reduction`` (it would be ignored), or
        one that needs calibration data is given without it.
    """
    if not isinstance(allocation, str) or allocation not in allowed:
        raise ValueError(f"allocation must be one of {list(allowed)}, got {allocation!r}")
    if mode != "param_reduction" and allocation != default:
        raise TypeError(
            f"allocation={allocation!r} splits a param_reduction budget across layers; it does "
            f"not apply when {mode} is given"
        )
    if mode == "param_reduction" and allocation in needs_calibration and calibration is None:
        raise TypeError(
            f"calibration is required for allocation={allocation!r}: pass training inputs "
            f"(N, ...) as calibration="
        )
    return allocation


def check_reachable(
    target: float,
    total: int,
    min_params: int,
    what: str,
    tolerance: float = TOLERANCE,
    *,
    left_out: Mapping[str, str] | None = None,
    include: str | None = None,
) -> None:
    """Raise :class:`BudgetError` if even the smallest model misses ``target`` by more than 1 pp.

    Parameters
    ----------
    target, total, min_params
        The reduction asked for, the model's parameters, and the fewest the method can leave.
    what
        Words for the method and its layers, e.g. ``"SVD of the selected layers"``.
    left_out
        ``{layer: reason}`` for the Conv2d/Linear layers the method leaves untouched; named in the
        message so the user sees where the parameters sit.
    include
        The ``layers=`` value that would add the layers that a selection left out (``None`` when
        no selection would help).
    """
    best = 1.0 - min_params / total
    if target > best + tolerance:
        if left_out:
            shown = "; ".join(f"{name} ({why})" for name, why in list(left_out.items())[:12])
            more = f"; and {len(left_out) - 12} more" if len(left_out) > 12 else ""
            where = f"Layers left out: {shown}{more}."
        else:
            where = (
                "The rest sit in layers this method does not touch (e.g. the first layer, the "
                "classifier, BatchNorm)."
            )
        fix = (
            f"Choose param_reduction <= {best:.3f} or pass layers={include} to include them."
            if include
            else f"Choose param_reduction <= {best:.3f}"
            + (" or select more layers." if left_out is None else ".")
        )
        raise BudgetError(
            f"param_reduction={target:.3f} cannot be reached: with {what} the most that can be "
            f"removed is {best:.3f} of the {total} parameters. {where} {fix}"
        )


def allocate(
    scores: Mapping[str, np.ndarray],
    count_params: Callable[[dict[str, int]], int],
    total: int,
    target: float,
    *,
    min_keep: int = 1,
    what: str = "the selected layers",
    tolerance: float = TOLERANCE,
) -> dict[str, int]:
    """Split a whole-network reduction target into kept units per group (``target`` validated).

    :func:`split_budget` with ``target`` checked by :func:`check_reduction` first; the front doors
    check their request once and call :func:`split_budget` directly.

    Parameters
    ----------
    scores
        For each group, the importance of its units in the order they are kept (non-increasing):
        unit ``j`` is removed before unit ``j - 1``.
    count_params
        Parameters of the whole network when group ``g`` keeps its first ``kept[g]`` units.
    total
        Parameters of the uncompressed network (the reference for the reduction).
    target
        Fraction of ``total`` to remove, in ``[0, 1)``.
    min_keep
        Units every group keeps at least.
    what
        Words for the error message.

    Returns
    -------
    dict
        Kept units per group. The achieved reduction ``1 - count_params(kept) / total`` is within
        ``tolerance`` of ``target``.

    Raises
    ------
    BudgetError
        If no removal order gets within ``tolerance`` of the target (and why).
    """
    return split_budget(
        scores,
        count_params,
        total,
        check_reduction(target),
        min_keep=min_keep,
        what=what,
        tolerance=tolerance,
    )


def split_budget(
    scores: Mapping[str, np.ndarray],
    count_params: Callable[[dict[str, int]], int],
    total: int,
    target: float,
    *,
    min_keep: int = 1,
    what: str = "the selected layers",
    tolerance: float = TOLERANCE,
) -> dict[str, int]:
    """The allocator's walk (see the module docstring) for a ``target`` already validated.

    Arguments, result and errors as for :func:`allocate`; ``target`` must be a float in
    ``[0, 1)`` (checked once by the caller with :func:`check_reduction`).
    """
    names = list(scores)
    kept = {g: len(scores[g]) for g in names}
    goal = (1.0 - target) * total
    # Events: remove unit j of group g, least important first; within a group, last unit first.
    ev_score, ev_group, ev_unit = [], [], []
    for gi, g in enumerate(names):
        s = np.asarray(scores[g], dtype=np.float64)
        for j in range(len(s) - 1, min_keep - 1, -1):
            ev_score.append(s[j])
            ev_group.append(gi)
            ev_unit.append(-j)
    order = np.lexsort((np.asarray(ev_unit), np.asarray(ev_group), np.asarray(ev_score)))
    best_kept, best_params = dict(kept), count_params(kept)
    params = best_params
    for e in order:
        if params <= goal and abs(params - goal) > abs(best_params - goal):
            break  # past the goal and moving away from it
        kept[names[ev_group[e]]] -= 1
        params = count_params(kept)
        if abs(params - goal) < abs(best_params - goal):
            best_kept, best_params = dict(kept), params
    achieved = 1.0 - best_params / total
    if abs(achieved - target) > tolerance:
        floor = 1.0 - count_params({g: min(min_keep, len(scores[g])) for g in names}) / total
        reason = (
            f"the most that can be removed is {floor:.3f}"
            if target > floor
            else "one removal step is larger than the tolerance"
        )
        raise BudgetError(
            f"param_reduction={target:.3f} cannot be reached within {tolerance:.0%} with {what}: "
            f"the closest is {achieved:.3f} ({reason}). Choose another param_reduction or select "
            f"more layers."
        )
    return best_kept
