"""Calibration sets smaller than a layer's input: shrinkage that keeps the statistics honest.

The data-driven methods fit something to second moments of what a layer (or a channel group's
readers) sees on calibration data: the data-aware SVD whitens by the layer's input second moment
``S``, the interpolative decomposition selects and interpolates channels from their Gram matrix.
When a layer sees fewer calibration *rows* (one per image and output position, after pooling or
flattening) than it has input dimensions, ``S`` is singular: the directions the calibration set
never visited look free to remove, the fit is exact on the calibration inputs and can be far off
on any other input (a relative output error of 5.7 on held-out inputs, 0.000 on the calibration
set, for mobilenet_v2's last channel group with 64 images).

There, and only there (a layer with at least as many rows as dimensions is fitted exactly as
before), ``S`` is replaced by the Ledoit-Wolf estimate ``(1 - α) S + α μ I`` with ``μ = tr S / p``
(Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional covariance matrices").
The shrinkage intensity ``α`` is chosen from the data, from how much the calibration inputs
disagree about ``S``. The rows of one input (the positions of one image, the tokens of one
sequence) are not independent, so the independent samples are the *inputs*: with
``A_i = X_iᵀ X_i`` the rows of input ``i`` and ``S = Σ_i A_i / N``,
``α = min(1, b² / d²)``, ``d² = ‖S - μ I‖²_F``, ``b² = (Σ_i ‖A_i‖²_F / N - ‖S‖²_F) / N``. Few or
disagreeing inputs give a large ``α``: the directions the calibration set missed are assumed to
carry the average energy ``μ``, so removing them is no longer free, and the fit tends to the
data-free one (weight-only SVD; plain channel selection with mean compensation). The trace is
kept, so output-error scores stay comparable across layers. Such layers see few rows, so their
rows are kept per input (no larger than the ``p × p`` matrix itself) to compute ``α`` exactly.
Each method warns once per call (:class:`FewRowsWarning`) naming the layers, the rows each saw
and the inputs it needs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class FewRowsWarning(UserWarning):
    """A layer or channel group saw fewer calibration rows than it has input dimensions."""


def shrinkage_intensity(
    trace: float, frobenius2: float, dims: int, samples: int, spread: float
) -> float:
    """Ledoit-Wolf ``α`` in ``[0, 1]`` for ``S = G / samples``, ``G = Σ_i A_i`` a sum of
    ``samples`` independent ``p × p`` second moments.

    Parameters
    ----------
    trace, frobenius2
        ``tr G`` and ``‖G‖²_F``.
    dims
        ``p``.
    samples
        ``N``, the number of independent ``A_i`` summed (inputs, not rows).
    spread
        ``Σ_i ‖A_i‖²_F``.
    """
    if samples < 2 or dims < 1:
        return 1.0  # one input says nothing about how the next one differs
    mu = trace / samples / dims
    s2 = frobenius2 / samples**2  # ‖S‖²_F
    d2 = s2 - dims * mu * mu  # ‖S - μI‖²_F
    if d2 <= 1e-12 * max(s2, 1e-300):
        return 0.0  # S is already a multiple of I: shrinking changes nothing
    b2 = (spread / samples - s2) / samples
    return float(min(1.0, max(0.0, b2 / d2)))


def sample_shrinkage(rows: np.ndarray) -> float:
    """:func:`shrinkage_intensity` of rows grouped by input, ``(N, rows per input, p)``
    (``A_i = X_iᵀ X_i``; ``‖A_i‖_F = ‖X_i X_iᵀ‖_F``, the smaller product when rows < p)."""
    x = np.asarray(rows, dtype=np.float64)
    per_input = x @ x.transpose(0, 2, 1)  # (N, r, r)
    gram = np.einsum("nrp,nrq->pq", x, x)
    return shrinkage_intensity(
        float(np.trace(gram)),
        float((gram * gram).sum()),
        x.shape[2],
        x.shape[0],
        float((per_input * per_input).sum()),
    )


def shrink(matrix: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - α) M + α (tr M / p) I`` for a square ``M`` (the trace is kept)."""
    p = matrix.shape[0]
    return (1.0 - alpha) * matrix + alpha * float(np.trace(matrix)) / p * np.eye(p)


@dataclass(frozen=True)
class RowShortfall:
    """A layer (or group) that saw ``rows`` rows of ``dims`` dimensions from ``images`` inputs,
    and the shrinkage ``alpha`` applied."""

    name: str
    rows: int
    dims: int
    images: int
    alpha: float

    @property
    def images_needed(self) -> int:
        """Calibration inputs that give at least ``dims`` rows at this layer's rows per input."""
        per_image = self.rows / max(self.images, 1)
        return math.ceil(self.dims / max(per_image, 1e-300))


def few_rows_message(method: str, shortfalls: Sequence[RowShortfall], what: str = "layers") -> str:
    """The text of the warning for ``shortfalls`` (see :func:`warn_few_rows`)."""
    shown = "; ".join(
        f"{s.name} ({s.rows} rows from {s.images} inputs for {s.dims} dimensions: at least "
        f"{s.images_needed} inputs needed; shrinkage {s.alpha:.2f})"
        for s in list(shortfalls)[:8]
    )
    more = f"; and {len(shortfalls) - 8} more" if len(shortfalls) > 8 else ""
    return (
        f"{method}: {len(shortfalls)} {what} saw fewer calibration rows than they have input "
        f"dimensions, so their statistics were shrunk towards isotropy (Ledoit-Wolf) instead of "
        f"being fitted exactly, which would overfit the calibration inputs: {shown}{more}. Pass "
        "more calibration inputs for an exact fit (docs/methods.md, 'Calibration size')."
    )


def warn_few_rows(
    method: str, shortfalls: Sequence[RowShortfall], what: str = "layers", stacklevel: int = 3
) -> None:
    """One :class:`FewRowsWarning` naming every layer of ``shortfalls`` (nothing if empty)."""
    if shortfalls:
        warnings.warn(
            few_rows_message(method, shortfalls, what), FewRowsWarning, stacklevel=stacklevel
        )
