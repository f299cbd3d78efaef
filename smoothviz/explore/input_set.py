"""An input set of the incremental evaluator: its tensors, its cached activations, its counters,
and :class:`CacheInfo`, the public view of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class InputSet:
    """One registered input set of an :class:`~smoothviz.explore.incremental.IncrementalEvaluator`
    and what the evaluator keeps for it (its own state; read it through ``cache_info``)."""

    x: torch.Tensor
    y: torch.Tensor
    batches: list[slice]
    record: set[int] = field(default_factory=set)  # positions whose activations are kept
    # position -> (prefix versions it was computed under, per batch: the crossing values)
    cache: dict[int, tuple[tuple[int, ...], list[tuple[Any, ...]]]] = field(default_factory=dict)
    memo: tuple[tuple[int, ...], dict[str, float]] | None = None  # the last result and its state
    seen: dict[str, int] | None = None  # slot versions at the last run
    wanted: list[int] = field(default_factory=list)  # where recent runs had to begin, newest first
    runs: int = 0  # passes that ran the network
    last_start: int | None = None  # where the latest pass began (0: the input)
    last_batches: int = 0  # batches the latest pass computed


@dataclass(frozen=True)
class CacheInfo:
    """What an :class:`IncrementalEvaluator` keeps and did for one input set; see
    :meth:`IncrementalEvaluator.cache_info`.

    A *point* is the place just before a swappable layer where an evaluation can resume
    (:meth:`IncrementalEvaluator.resume_point` gives a layer's); ``0`` stands for the input.

    Attributes
    ----------
    runs
        Passes over the set that ran the network (``evaluate``, ``evaluate_steps``, ``logits``);
        a remembered result does not count.
    last_start
        The point where the latest pass began (``0``: the input; ``None``: no pass yet).
    last_batches
        Batches the latest pass computed.
    remembered
        The latest result still holds (nothing was swapped since): evaluating runs nothing.
    points
        Every point, in network order.
    planned
        The points whose activations this set records, as the memory budget allows.
    stored
        The points whose activations are stored now.
    wanted
        Where recent passes had to begin, newest first: these points get memory first.
    point_bytes
        Per point, the memory this set's activations there take.
    work_before
        Per point, the share of the network's multiply-adds (convolutions and linear layers) that
        runs before it.
    """

    runs: int
    last_start: int | None
    last_batches: int
    remembered: bool
    points: tuple[int, ...]
    planned: frozenset[int]
    stored: frozenset[int]
    wanted: tuple[int, ...]
    point_bytes: dict[int, int]
    work_before: dict[int, float]
