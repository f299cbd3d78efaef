"""The interactive explorers, importable by their first name: they live in :mod:`smoothviz.explore`."""

from smoothviz.explore.base import Explorer
from smoothviz.explore.prune import PRUNE_METHODS, PruneExplorer
from smoothviz.explore.rank import ALLOCATIONS, RankExplorer

__all__ = ["ALLOCATIONS", "PRUNE_METHODS", "Explorer", "PruneExplorer", "RankExplorer"]
