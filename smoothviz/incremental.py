"""The incremental evaluator, importable by its first name: it lives in
:mod:`smoothviz.explore.incremental`."""

from smoothviz.explore.incremental import IncrementalEvaluator

__all__ = ["IncrementalEvaluator"]
