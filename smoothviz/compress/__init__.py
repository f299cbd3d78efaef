"""Compression without fine-tuning: truncated SVD, pruning and the interpolative decomposition.

Every front door returns a new model and leaves its input untouched. The targets and allocation
labels they share are one vocabulary (``docs/methods.md``, "Targets and allocations"). Module map,
each floor importing only from the floors below it:

- Front doors. ``svd.py``: :func:`svd_compress`, :func:`svd_factors` (SVDs computed once).
  ``data_aware_svd.py``: :func:`data_aware_svd_compress`, :func:`data_aware_svd_factors`
  (truncation that minimises each layer's output error on calibration inputs; whitening and the
  sequential refit). ``prune.py``: :func:`prune_magnitude` (unstructured), :func:`prune_channels`
  (structured), :func:`drop_channels` (keep given channels, no correction). ``interpolative.py``:
  :func:`interpolative_compress`, :func:`interpolative_factors`. ``serialize.py``:
  :func:`save_compressed` / :func:`load_compressed`.
- The front door built from two others. ``hybrid.py``: :func:`hybrid_compress`,
  :func:`hybrid_factors` (per layer factorisation, channel removal or both, under one budget).
- ``hybrid_plan.py``: the hybrid's scores (output error per parameter saved, SVD terms and
  channels alike) and its exact parameter count.
- ``output_fit.py``: whitening, the whitened truncation, and the refit of a layer to the original
  model's outputs (data-aware SVD and hybrid).
- ``rank_allocation.py``: every way SVD ranks are chosen (kept energy, a budget split by energy,
  output error or measured sensitivity, the rank explorer's uniform splits).
- ``factorized.py``: the factor types (:class:`LayerFactors`, :class:`SVDFactors`), the factorised
  layer (:class:`Factorized`), the SVD request checked once, :func:`compress_from_factors`
  (cheap re-ranking from the cache).
- ``channel_request.py``: the channel methods' shared front door (target, groups, budget checks).
- ``attention.py``: ``nn.MultiheadAttention`` split into called projections (``ProjectedAttention``)
  so the SVD methods can factorise them.
- ``forward_check.py``: which layers a forward pass calls (a layer another module reads directly
  is left out) and the check that a compressed model runs (``BrokenModelError``).
- ``layer_inputs.py``: what a layer sees on calibration data (patches, padding, input statistics,
  the original model's layer inputs recorded once for every target).
- ``activations.py``: what each channel group's readers see (means, Gram matrices).
- ``layer_stream.py``: the calibration forward pass paused layer by layer (the sequential refits
  run the compressed copy once per target).
- ``chains.py``: which channel groups can be cut (chains and whole residual streams).
- ``importance.py``: channel importance for structured pruning (fisher, activation, bn_scale, l1).
- ``surgery.py``: cutting a channel group out of a model, with corrections folded into readers.
- ``sensitivity.py``: measured damage of cutting one group to one size (allocation scores).
- ``budget.py``: the one allocator from a whole-network target to per-unit sizes; ``BudgetError``.
- ``calibration.py``: validation of the calibration inputs every data-aware method takes.
- ``shrinkage.py``: Ledoit-Wolf shrinkage where a layer saw fewer calibration rows than input
  dimensions, and its ``FewRowsWarning``.
- ``tracing.py``: the ``torch.fx`` graph the channel search reads, PyTorch's Transformer encoder
  layers opened.
"""

from smoothviz.compress.budget import BudgetError
from smoothviz.compress.budget import allocate as allocate
from smoothviz.compress.chains import ChannelGroup as ChannelGroup
from smoothviz.compress.chains import find_groups as find_groups
from smoothviz.compress.data_aware_svd import (
    DataAwareFactors,
    data_aware_svd_compress,
    data_aware_svd_factors,
)
from smoothviz.compress.factorized import (
    Factorized,
    LayerFactors,
    SVDFactors,
    compress_from_factors,
)
from smoothviz.compress.factorized import factorize_layer as factorize_layer
from smoothviz.compress.hybrid import HybridFactors, hybrid_compress, hybrid_factors
from smoothviz.compress.interpolative import (
    IDFactors,
    interpolative_compress,
    interpolative_factors,
)
from smoothviz.compress.prune import drop_channels, prune_channels, prune_magnitude
from smoothviz.compress.sensitivity import measure_sensitivity as measure_sensitivity
from smoothviz.compress.sensitivity import unit_scores as unit_scores
from smoothviz.compress.serialize import load_compressed, save_compressed
from smoothviz.compress.svd import svd_compress, svd_factors

METHODS = (
    "svd",
    "svd_data_aware",
    "prune_magnitude",
    "prune_channels",
    "interpolative",
    "hybrid",
)

# The public surface: front doors, factor types, BudgetError and METHODS. Helpers imported above
# with ``as`` (allocate, find_groups, ...) stay importable from here for older code; new code
# imports them from their module.
__all__ = [
    "METHODS",
    "BudgetError",
    # front doors
    "svd_compress",
    "data_aware_svd_compress",
    "prune_magnitude",
    "prune_channels",
    "drop_channels",
    "interpolative_compress",
    "hybrid_compress",
    "compress_from_factors",
    "svd_factors",
    "data_aware_svd_factors",
    "interpolative_factors",
    "hybrid_factors",
    "save_compressed",
    "load_compressed",
    # factor types
    "Factorized",
    "LayerFactors",
    "SVDFactors",
    "DataAwareFactors",
    "IDFactors",
    "HybridFactors",
]
