"""The quick start: a baseline and smooth models on the embedded data, summarised in one table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from smoothviz.config import TrainConfig
from smoothviz.layers import select_layers
from smoothviz.regularizers import normalized_difference
from smoothviz.spectral import effective_rank, singular_values
from smoothviz.training import train

# λ values chosen on the embedded data with the cnn (docs/methods.md, "Default strengths").
QUICKSTART_TRAININGS = {
    "baseline": {},
    "nuclear": {"nuclear": 1e-2, "nuclear_every": 20},
    "first_order": {"first_order": 2e-2},
}


def summarize_model(model) -> dict[str, float]:
    """Mean effective rank and mean normalised first differences over the regularised layers."""
    layers = select_layers(model)
    return {
        "mean_effective_rank": sum(effective_rank(singular_values(m.weight)) for _, m in layers)
        / len(layers),
        "mean_first_difference": sum(
            (normalized_difference(m.weight, 1, 0) + normalized_difference(m.weight, 1, 1)) / 2
            for _, m in layers
        )
        / len(layers),
    }


def run_quickstart(
    epochs: int = 4, cache_dir: str | Path | None = None, progress: bool = True
) -> pd.DataFrame:
    """Train (or load) each quick-start model and return one summary row per training."""
    rows = []
    for name, weights in QUICKSTART_TRAININGS.items():
        cfg = TrainConfig(model="cnn", width=16, epochs=epochs, **weights)
        run = train(cfg, cache_dir=cache_dir, progress=progress)
        rows.append(
            {
                "training": name,
                "test_acc": float(run.history.test_acc.iloc[-1]),
                **summarize_model(run.model),
                "train_seconds": float(run.history.seconds.sum()),
                "from_cache": run.from_cache,
            }
        )
    return pd.DataFrame(rows)
