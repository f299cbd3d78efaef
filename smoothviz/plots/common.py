"""Shared by the plot helpers: labels of the tidy columns, ``ax=None``, column checks."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

Y_LABELS = {
    "sigma": "singular value σ",
    "sigma_normalized": "σ / σ₁",
    "energy": "energy share σ² / Σσ²",
    "cumulative_energy": "cumulative energy",
    "test_acc": "test accuracy",
    "test_loss": "test loss",
    "train_loss": "training loss",
    "param_reduction": "parameter reduction",
}


def axes_or_new(ax: Axes | None) -> Axes:
    """``ax``, or the Axes of a new figure when ``ax`` is None (every helper's ``ax=None``)."""
    return plt.subplots()[1] if ax is None else ax


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise, naming ``what``, unless ``df`` is a DataFrame with every one of ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: the DataFrame lacks column(s) {missing}; it has {list(df.columns)}"
        )
