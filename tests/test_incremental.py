"""IncrementalEvaluator: in-place swaps and cached activations give the plain model's answers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from smoothviz.compress.prune import prune_channels, prune_magnitude
from smoothviz.compress.svd import compress_from_factors, factorize_layer, svd_factors
from smoothviz.incremental import IncrementalEvaluator
from smoothviz.measure import bn_reestimate, evaluate
from smoothviz.models import build_model


@pytest.fixture(scope="module")
def resnet():
    """A small CIFAR-style ResNet-18 (residual adds, projections, BatchNorm with real statistics)."""
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=1, num_classes=10, width=4)
    return bn_reestimate(model, torch.randn(64, 1, 16, 16)).eval()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(70, 1, 16, 16, generator=g), torch.randint(0, 10, (70,), generator=g)


def _ranks_module(model, factors, ranks):
    return {n: factorize_layer(model.get_submodule(n), r, factors[n]) for n, r in ranks.items()}


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_swaps_give_the_logits_of_a_full_rebuild(resnet, inputs):
    x, y = inputs
    factors = svd_factors(resnet)
    ev = IncrementalEvaluator(resnet, list(factors), batch_size=32)
    ev.add_inputs("test", x, y)
    ranks = {n: max(1, f.max_rank // 3) for n, f in factors.items()}
    ev.swap(_ranks_module(resnet, factors, ranks))
    for step in range(3):  # then a few single-layer moves, as a rank slider makes them
        name = list(factors)[(7 * step) % len(factors)]
        ranks[name] = max(1, ranks[name] - 1)
        ev.swap(_ranks_module(resnet, factors, {name: ranks[name]}))
        full = compress_from_factors(resnet, factors, ranks)
        torch.testing.assert_close(ev.logits("test"), _logits(full, x), rtol=1e-4, atol=1e-5)
        plain = evaluate(full, (x, y))
        got = ev.evaluate("test")
        assert got["accuracy"] == plain["accuracy"] and got["n"] == len(y)
        assert got["loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert ev.traced


def test_cached_prefix_equals_the_plain_evaluation_and_is_used(resnet, inputs):
    x, y = inputs
    factors = svd_factors(resnet)
    names = list(factors)
    cached = IncrementalEvaluator(resnet, names, batch_size=32, cache_mb=64)
    plain = IncrementalEvaluator(resnet, names, batch_size=32, cache_mb=0)
    for ev in (cached, plain):
        ev.add_inputs("test", x, y)
        ev.logits("test")
    for name in (names[-1], names[len(names) // 2], names[-2]):
        module = factorize_layer(resnet.get_submodule(name), 1, factors[name])
        for ev in (cached, plain):
            ev.swap({name: module})
        out = cached.logits("test")
        # resumed right before the changed layer, in every batch (70 images, 32 a batch)
        info = cached.cache_info("test")
        assert info.last_start == cached.resume_point(name) and info.last_batches == 3
        assert torch.equal(out, plain.logits("test"))
        assert plain.cache_info("test").last_start == 0  # no cache: from the input
    full = compress_from_factors(
        resnet, factors, {names[-1]: 1, names[len(names) // 2]: 1, names[-2]: 1}
    )
    torch.testing.assert_close(cached.logits("test"), _logits(full, x), rtol=1e-4, atol=1e-5)


def test_nothing_changed_gives_the_remembered_result_without_running(resnet, inputs):
    ev = IncrementalEvaluator(resnet, batch_size=32)
    ev.add_inputs("test", *inputs)
    first = ev.evaluate("test")
    assert ev.cache_info("test").runs == 1 and ev.cache_info("test").remembered
    assert ev.evaluate("test") == first
    assert ev.cache_info("test").runs == 1  # the network did not run again


def test_stepwise_evaluation_can_be_abandoned_without_trace(resnet, inputs):
    x, y = inputs
    factors = svd_factors(resnet)
    ev = IncrementalEvaluator(resnet, list(factors), batch_size=32)
    ev.add_inputs("test", x, y)
    steps = ev.evaluate_steps("test")
    assert next(steps) == pytest.approx(32 / 70)
    steps.close()  # abandoned half-way, as a widget does when the slider moves again
    info = ev.cache_info("test")
    assert info.stored == frozenset() and not info.remembered and info.last_batches == 1
    fractions, steps = [], ev.evaluate_steps("test")
    while True:
        try:
            fractions.append(next(steps))
        except StopIteration as done:
            result = done.value
            break
    assert fractions == pytest.approx([32 / 70, 64 / 70]) and result == ev.evaluate("test")
    assert ev.cache_info("test").stored  # a finished run keeps its activations
    name = list(factors)[-1]
    ev.swap({name: factorize_layer(resnet.get_submodule(name), 1, factors[name])})
    steps = ev.evaluate_steps("test")
    next(steps)
    ev.swap({name: factorize_layer(resnet.get_submodule(name), 2, factors[name])})
    with pytest.raises(RuntimeError, match="swapped while it was being evaluated"):
        next(steps)


def test_cache_budget_keeps_the_deepest_points_first(resnet, inputs):
    x, y = inputs
    ev = IncrementalEvaluator(resnet, list(svd_factors(resnet)), cache_mb=0.05)
    ev.add_inputs("test", x, y)
    info = ev.cache_info("test")
    planned = info.planned
    assert planned and planned != set(info.points)
    assert min(planned) > min(info.points)  # the shallow (large) activations left out
    used = sum(info.point_bytes[p] for p in planned)
    assert used <= ev.cache_bytes


def test_memory_goes_first_to_where_runs_had_to_begin(resnet, inputs):
    x, y = inputs
    factors = svd_factors(resnet)
    names = list(factors)
    mid = names[len(names) // 2]
    ev = IncrementalEvaluator(resnet, names, batch_size=32)
    ev.add_inputs("test", x, y)
    position = ev.resume_point(mid)
    ev.cache_bytes = ev.cache_info("test").point_bytes[position]  # room for this point only
    assert position not in ev.cache_info("test").planned  # deeper points are preferred at first
    ev.evaluate("test")
    for rank in (2, 1):  # the first move makes room before `mid`, the second resumes there
        ev.swap({mid: factorize_layer(resnet.get_submodule(mid), rank, factors[mid])})
        ev.evaluate("test")
    info = ev.cache_info("test")
    assert info.wanted == (position,) and info.planned == {position}
    assert info.last_start == position
    # a change near the input saves too little compute to be worth memory
    first = names[0]
    ev.swap({first: factorize_layer(resnet.get_submodule(first), 1, factors[first])})
    ev.evaluate("test")
    info = ev.cache_info("test")
    assert info.wanted[0] == ev.resume_point(first)
    assert info.work_before[ev.resume_point(first)] < 0.1
    assert info.planned == {position}


class _InPlace(nn.Module):
    """In-place ops everywhere: module ReLUs, ``+=`` and ``relu_`` in the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.act = nn.ReLU(inplace=True)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.c = nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        h = self.act(self.bn(self.a(x)))
        z = self.b(h)
        z += h
        z = self.c(z).relu_()
        return self.head(z.mean((2, 3)))


def test_in_place_operations_never_corrupt_the_cache(inputs):
    torch.manual_seed(0)
    model = bn_reestimate(_InPlace(), torch.randn(32, 1, 16, 16)).eval()
    x, y = inputs
    ev = IncrementalEvaluator(model, ["b", "c"], batch_size=32)
    ev.add_inputs("test", x, y)
    assert ev.copies_cached_values
    before = ev.logits("test")
    for _ in range(2):
        ev.swap({"c": copy.deepcopy(model.c)})  # same weights: same logits, from the cache
        torch.testing.assert_close(ev.logits("test"), before)
    torch.testing.assert_close(before, _logits(model, x), rtol=1e-4, atol=1e-5)


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > -1e9:
            h = self.b(h)
        return self.head(h.mean((2, 3)))


def test_an_untraceable_model_is_swapped_and_run_as_a_whole(inputs):
    torch.manual_seed(0)
    model = _Branchy().eval()
    x, y = inputs
    ev = IncrementalEvaluator(model, ["b"])
    ev.add_inputs("test", x, y)
    assert not ev.traced
    new = nn.Conv2d(4, 4, 3, padding=1)
    ev.swap({"b": new})
    expected = copy.deepcopy(model)
    expected.b = new
    torch.testing.assert_close(ev.logits("test"), _logits(expected, x))
    assert model.b is not new  # the caller's model is untouched
    info = ev.cache_info("test")
    assert info.runs == 1 and info.last_start == 0 and info.points == () and not info.stored
    with pytest.raises(ValueError, match="could not be traced"):
        ev.resume_point("b")


def test_load_swaps_only_what_differs_and_follows_pruning(resnet, inputs):
    x, y = inputs
    ev = IncrementalEvaluator(resnet, batch_size=32)
    ev.add_inputs("test", x, y)
    assert ev.load(copy.deepcopy(resnet)) == []
    for prune, kw in ((prune_magnitude, {}), (prune_channels, {})):
        pruned = prune(resnet, param_reduction=0.3, **kw)
        changed = ev.load(pruned)
        assert changed and all(n in ev.swappable for n in changed)
        torch.testing.assert_close(ev.logits("test"), _logits(pruned, x), rtol=1e-4, atol=1e-5)
    assert ev.load(pruned) == []


def test_bad_arguments_are_named(resnet, inputs):
    with pytest.raises(ValueError, match="swappable"):
        IncrementalEvaluator(resnet, ["no.such.layer"])
    with pytest.raises(ValueError, match="batch_size"):
        IncrementalEvaluator(resnet, batch_size=0)
    with pytest.raises(ValueError, match="cache_mb"):
        IncrementalEvaluator(resnet, cache_mb=-1)
    ev = IncrementalEvaluator(resnet, ["layer1.0.conv1"])
    with pytest.raises(ValueError, match="not swappable"):
        ev.swap({"fc": nn.Linear(32, 10)})
    with pytest.raises(KeyError, match="no input set"):
        ev.evaluate("test")
    with pytest.raises(KeyError, match="no input set"):
        ev.cache_info("test")
    with pytest.raises(ValueError, match="not swappable"):
        ev.resume_point("fc")
    with pytest.raises(ValueError, match="cache_bytes must be an int >= 0"):
        ev.cache_bytes = -1


def test_the_callers_model_is_not_modified(resnet, inputs):
    state = {k: v.clone() for k, v in resnet.state_dict().items()}
    relus = [m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU)]
    factors = svd_factors(resnet)
    ev = IncrementalEvaluator(resnet, list(factors))
    ev.add_inputs("test", *inputs)
    ev.swap(_ranks_module(resnet, factors, {n: 1 for n in factors}))
    ev.evaluate("test")
    assert all(torch.equal(state[k], v) for k, v in resnet.state_dict().items())
    assert relus == [m.inplace for m in resnet.modules() if isinstance(m, nn.ReLU)]
