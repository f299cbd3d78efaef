"""The incremental evaluator, importable by its first name: it lives in
:mod:`smoothviz.explore.incremental`."""

from smoothviz.explore.incremental import IncrementalEvaluator
from smoothviz.explore.input_set import CacheInfo

__all__ = ["CacheInfo", "IncrementalEvaluator"]
