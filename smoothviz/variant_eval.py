"""Evaluate many compressed variants of one model on one test split, re-running only what changed.

A sweep compresses one trained model to many targets with several methods and evaluates every
result on the same test images, plain and after BatchNorm re-estimation. Each variant differs from
the model in some of its layers only (a factorised layer, pruned weights, cut channels); whatever
the forward pass computes before the first of them is the model's own. :class:`VariantEvaluator`
keeps the model's activations where variants begin to differ and runs each variant from its first
changed layer on (:class:`smoothviz.explore.incremental.IncrementalEvaluator`, here without
BatchNorm folding or channels-last, in batches of :func:`smoothviz.measure.evaluate`'s size), so an
extra target costs only the layers it changes. The answers are exactly what a plain
``evaluate(variant, ...)`` gives, bit for bit (the same modules run on the same values in the same
order; ``tests/test_variant_eval.py`` compares every method).

For the BatchNorm-re-estimated accuracy, give the evaluator the re-estimated model and the
re-estimated variants: re-estimation of an unchanged prefix gives that prefix the same statistics
in both, so the same reuse applies.

A variant that is not the model with some of its called layers replaced (another class, a
changed container, a tensor the forward reads directly) is evaluated plainly, as a whole.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothviz._validation import check_int, check_number
from smoothviz.explore.incremental import IncrementalEvaluator
from smoothviz.measure import evaluate

# Memory for cached activations per evaluator, in MiB. The main job's model (resnet18 width 8)
# on 10,000 test images needs 50-500 MiB per point, depending on its depth.
DEFAULT_CACHE_MB = 640.0
_KEY = "test"


def _own_tensors(m: nn.Module) -> dict[str, torch.Tensor]:
    return dict(m.named_parameters(recurse=False)) | dict(m.named_buffers(recurse=False))


class VariantEvaluator:
    """Test accuracy and loss of a model and of its compressed variants, reusing the model's prefix.

    Parameters
    ----------
    model
        The model the variants come from (not modified; kept as the reference).
    x, y
        The test images and labels (every evaluation uses all of them, in this order).
    batch_size
        Images per forward pass; :func:`smoothviz.measure.evaluate`'s default, so results equal it.
    cache_mb
        Memory for the model's cached activations, in MiB (0: nothing cached, every variant runs
        from the input).
    incremental
        False: every evaluation is a plain :func:`smoothviz.measure.evaluate` (for comparison).

    Attributes
    ----------
    plain_runs, incremental_runs
        How many evaluations ran plainly and through the cached prefix.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        batch_size: int = 500,
        cache_mb: float = DEFAULT_CACHE_MB,
        incremental: bool = True,
    ) -> None:
        self.model = model
        self.batch_size = check_int("batch_size", batch_size, low=1)
        cache_mb = check_number("cache_mb", cache_mb, low=0)
        self._x, self._y = x, y
        self.plain_runs = 0
        self.incremental_runs = 0
        self._ev: IncrementalEvaluator | None = None
        if incremental:
            ev = IncrementalEvaluator(
                model,
                None,
                batch_size=self.batch_size,
                channels_last=False,
                fold_batchnorm=False,
                cache_mb=cache_mb,
            )
            if ev.traced:
                ev.add_inputs(_KEY, x, y)
                self._ev = ev
                swapped = tuple(ev.swappable)
                self._swappable = set(swapped)
                # modules the traced forward runs *through* (not as calls): they must not change
                self._inner = {
                    name: m
                    for name, m in model.named_modules()
                    if name not in self._swappable
                    and not any(name.startswith(s + ".") for s in swapped)
                }

    @property
    def cache_info(self):
        """The incremental evaluator's :class:`~smoothviz.explore.input_set.CacheInfo` for the
        test set (None when every evaluation runs plainly)."""
        return None if self._ev is None else self._ev.cache_info(_KEY)

    def fits(self, variant: nn.Module) -> bool:
        """Whether ``variant`` is the model with some of its called layers replaced (what the
        cached prefix can serve); anything else is evaluated plainly."""
        if self._ev is None or type(variant) is not type(self.model):
            return False
        modules = dict(variant.named_modules())
        if any(name not in modules for name in self._swappable):
            return False
        for name, module in self._inner.items():
            other = modules.get(name)
            if type(other) is not type(module):
                return False
            mine, theirs = _own_tensors(module), _own_tensors(other)
            if mine.keys() != theirs.keys() or any(
                mine[k].shape != theirs[k].shape or not torch.equal(mine[k], theirs[k])
                for k in mine
            ):
                return False
        new = [n for n in modules if n not in self._inner and n not in self._swappable]
        return all(any(n.startswith(s + ".") for s in self._swappable) for n in new)

    def evaluate(self, variant: nn.Module | None = None, *, per_image: bool = False) -> dict:
        """``{"accuracy", "loss"}`` of ``variant`` (None: the model itself) on the test images,
        as :func:`smoothviz.measure.evaluate` gives them; ``per_image`` adds ``"correct"``."""
        target = self.model if variant is None else variant
        if not self.fits(target):
            self.plain_runs += 1
            return evaluate(
                target, (self._x, self._y), batch_size=self.batch_size, per_image=per_image
            )
        assert self._ev is not None
        self.incremental_runs += 1
        self._ev.load(target)
        out: dict[str, Any] = self._ev.evaluate(_KEY, per_image=per_image)
        out.pop("n", None)
        return out
