"""One vocabulary for targets: renamed keywords keep working for one release, with a warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from smoothviz.compress import interpolative_compress, prune_channels, svd_factors
from smoothviz.compress.rank_allocation import energy_ranks
from smoothviz.compress.targets import TARGETS, renamed_keyword
from smoothviz.models import build_model


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=8).eval()


@pytest.fixture(scope="module")
def calib():
    return torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _warns_from_here(new: str):
    """A DeprecationWarning naming ``new``, attributed to this file (the caller's line)."""
    return pytest.warns(DeprecationWarning, match=rf"use {new}= instead")


@pytest.mark.parametrize(
    "call, old, new",
    [
        (
            lambda m, x, **kw: prune_channels(m, x, importance="l1", **kw),
            {"keep": {"3": 4}},
            {"channels": {"3": 4}},
        ),
        (lambda m, x, **kw: interpolative_compress(m, x, **kw), {"tolerance": 0.3}, {"rtol": 0.3}),
        (
            lambda m, x, **kw: interpolative_compress(m, x, **kw),
            {"keep": {"3": 4}},
            {"channels": {"3": 4}},
        ),
    ],
)
def test_old_keywords_warn_naming_the_new_one_and_do_the_same(cnn, calib, call, old, new):
    with _warns_from_here(next(iter(new))) as record:
        before = call(cnn, calib, **old)
    assert record[0].filename == __file__  # points at the caller's line, not at smoothviz
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new name is silent
        after = call(cnn, calib, **new)
    assert _same(before, after) and before.compression_info == after.compression_info


def test_old_and_new_name_together_are_refused(cnn, calib):
    with pytest.raises(TypeError, match=r"pass rtol= only \(tolerance= is its old name\)"):
        interpolative_compress(cnn, calib, rtol=0.1, tolerance=0.1)
    with pytest.raises(TypeError, match=r"pass channels= only \(keep= is its old name\)"):
        prune_channels(cnn, calib, channels={"3": 2}, keep={"3": 2})


def test_renamed_keyword():
    assert renamed_keyword("f", "old", "new", None, 3) == 3
    with pytest.warns(DeprecationWarning, match=r"f\(old=\.\.\.\) is deprecated .* use new="):
        assert renamed_keyword("f", "old", "new", 2, None) == 2


def test_every_target_keyword_is_documented():
    from pathlib import Path

    methods = (Path(__file__).parents[1] / "docs" / "methods.md").read_text()
    assert set(TARGETS) == {"param_reduction", "energy", "amount", "rtol", "ranks", "channels"}
    for name in (*TARGETS, "uniform_energy", "uniform_rank", "output_error", "sensitivity"):
        assert f"`{name}`" in methods, name


def test_factor_methods_moved_to_rank_allocation_still_work(cnn):
    factors = svd_factors(cnn)
    with pytest.warns(DeprecationWarning, match=r"rank_allocation\.energy_ranks") as record:
        old = factors.ranks_for_energy(0.9)
    assert record[0].filename == __file__
    assert old == energy_ranks(factors, 0.9)
