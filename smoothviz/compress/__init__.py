"""Compression without fine-tuning: truncated SVD, pruning and the interpolative decomposition.

Every function returns a new model and leaves its input untouched. Module map:

- ``svd.py``: :func:`svd_compress`, :func:`svd_factors` (SVDs computed once),
  :func:`compress_from_factors` (cheap re-ranking from the cache).
- ``data_aware_svd.py``: :func:`data_aware_svd_compress`, :func:`data_aware_svd_factors`
  (truncation that minimises each layer's output error on calibration inputs).
- ``prune.py``: :func:`prune_magnitude` (unstructured), :func:`prune_channels` (structured),
  :func:`drop_channels` (keep given channels, no correction).
- ``interpolative.py``: :func:`interpolative_compress`, :func:`interpolative_factors`.
- ``chains.py``: which channel groups can be cut (chains and whole residual streams).
- ``activations.py``: what each group's readers see on calibration data (means, Gram matrices).
- ``importance.py``: channel importance for structured pruning (fisher, activation, bn_scale, l1).
- ``surgery.py``: cutting a channel group out of a model, with corrections folded into readers.
- ``calibration.py``: validation of the calibration inputs every data-aware method takes.
- ``budget.py``: the one allocator from a whole-network target to per-layer sizes.
- ``sensitivity.py``: measured damage of cutting one group to one size (allocation scores).
- ``serialize.py``: :func:`save_compressed` / :func:`load_compressed`.
"""

from smoothviz.compress.budget import BudgetError, allocate
from smoothviz.compress.chains import ChannelGroup, find_groups
from smoothviz.compress.data_aware_svd import (
    DataAwareFactors,
    data_aware_svd_compress,
    data_aware_svd_factors,
)
from smoothviz.compress.interpolative import (
    IDFactors,
    interpolative_compress,
    interpolative_factors,
)
from smoothviz.compress.prune import drop_channels, prune_channels, prune_magnitude
from smoothviz.compress.sensitivity import measure_sensitivity, unit_scores
from smoothviz.compress.serialize import load_compressed, save_compressed
from smoothviz.compress.svd import (
    Factorized,
    SVDFactors,
    compress_from_factors,
    factorize_layer,
    svd_compress,
    svd_factors,
)

METHODS = ("svd", "svd_data_aware", "prune_magnitude", "prune_channels", "interpolative")

__all__ = [
    "METHODS",
    "BudgetError",
    "ChannelGroup",
    "DataAwareFactors",
    "Factorized",
    "IDFactors",
    "SVDFactors",
    "allocate",
    "compress_from_factors",
    "data_aware_svd_compress",
    "data_aware_svd_factors",
    "drop_channels",
    "factorize_layer",
    "find_groups",
    "interpolative_compress",
    "interpolative_factors",
    "load_compressed",
    "measure_sensitivity",
    "prune_channels",
    "prune_magnitude",
    "save_compressed",
    "svd_compress",
    "svd_factors",
    "unit_scores",
]
