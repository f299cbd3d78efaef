"""smoothviz: compress neural networks without fine-tuning, and see how training them smooth helps.

The common entry points are importable from the package itself::

    import smoothviz
    run = smoothviz.train(smoothviz.TrainConfig(model="cnn", first_order=2e-2))
    small = smoothviz.svd_compress(run.model, param_reduction=0.7)

Plotting, analysis, widgets and reports load on first use (they pull in matplotlib and ipywidgets).
``sweep`` stays in its module (``from smoothviz.sweep import sweep``) so that ``smoothviz.sweep`` is
the module, as every other submodule name is.
"""

from importlib import import_module

from smoothviz.compress import (
    BudgetError,
    compress_from_factors,
    data_aware_svd_compress,
    data_aware_svd_factors,
    hybrid_compress,
    interpolative_compress,
    load_compressed,
    prune_channels,
    prune_magnitude,
    save_compressed,
    svd_compress,
    svd_factors,
)
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.data import ImageData, from_tensors, load_dataset
from smoothviz.errors import full_traceback
from smoothviz.measure import bn_reestimate, count_flops, count_params, evaluate, measure_latency
from smoothviz.models import build_model
from smoothviz.training import TrainedRun, TrainingDiverged, seed_everything, train

__version__ = "0.1.0"

# name -> module, imported on first attribute access (PEP 562)
_LAZY = {
    "RankExplorer": "smoothviz.explore.rank",
    "PruneExplorer": "smoothviz.explore.prune",
    "run_report": "smoothviz.report",
    "sweep_on_cluster": "smoothviz.distributed",
    "reference_frontier": "smoothviz.frontier",
    "compare_to_frontier": "smoothviz.frontier",
    "weight_smoothness": "smoothviz.analysis",
    "singular_spectra": "smoothviz.analysis",
    "spectrum_summary": "smoothviz.analysis",
    "chosen_ranks": "smoothviz.analysis",
    "training_histories": "smoothviz.analysis",
    "plot_weights": "smoothviz.plots",
    "plot_spectra": "smoothviz.plots",
    "plot_smoothness": "smoothviz.plots",
    "plot_tradeoff": "smoothviz.plots",
    "plot_history": "smoothviz.plots",
    "plot_frontier": "smoothviz.plots",
    "spectra_grid": "smoothviz.plots",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smoothviz' has no attribute {name!r}")


__all__ = [
    "BudgetError", "ConfigError", "ImageData", "TrainConfig", "TrainedRun", "TrainingDiverged",
    "bn_reestimate", "build_model", "compress_from_factors", "count_flops", "count_params",
    "data_aware_svd_compress", "data_aware_svd_factors",
    "evaluate", "from_tensors", "full_traceback", "hybrid_compress", "interpolative_compress",
    "load_compressed", "load_dataset",
    "measure_latency", "prune_channels", "prune_magnitude", "save_compressed", "seed_everything",
    "svd_compress", "svd_factors", "train", *_LAZY,
]  # fmt: skip
