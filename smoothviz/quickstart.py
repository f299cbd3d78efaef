"""The quick start: a baseline and smooth models on the embedded data, summarised in one table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from smoothviz.analysis import spectrum_summary, weight_smoothness
from smoothviz.config import TrainConfig
from smoothviz.training import train

# λ values chosen on the embedded data with the cnn (docs/methods.md, "Default strengths").
QUICKSTART_TRAININGS = {
    "baseline": {},
    "nuclear": {"nuclear": 1e-2, "nuclear_every": 20},
    "first_order": {"first_order": 2e-2},
}


def summarize_model(model) -> dict[str, float]:
    """Mean effective rank and mean normalised first difference over the regularised layers."""
    roughness = weight_smoothness(model, orders=(1,))
    return {
        "mean_effective_rank": float(spectrum_summary(model).effective_rank.mean()),
        # mean over each layer's two channel axes, then over layers
        "mean_first_difference": float(roughness.groupby("layer").roughness.mean().mean()),
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
