"""The layout of ``smoothviz/compress/``: floors that import one way, small modules, a public surface.

Read from each module's own ``from smoothviz...`` lines with ``ast`` (function-level imports
included), so a cycle dodged by an import inside a function counts as a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smoothviz.compress as compress

PACKAGE = Path(compress.__file__).parent

# Each module imports only from floors below its own (docs/architecture, compress/__init__.py).
FLOORS = [
    {"calibration", "budget", "targets", "tracing", "shrinkage"},
    {"chains", "sensitivity", "layer_inputs", "attention", "forward_check"},
    {"factorized", "surgery", "activations", "layer_stream"},
    {"rank_allocation", "importance", "channel_request", "hybrid_plan", "output_fit"},
    {"svd", "data_aware_svd", "prune", "interpolative", "serialize"},
    {"hybrid"},  # composes two front doors' factors (data-aware SVD, interpolative)
]
FLOOR = {name: i for i, names in enumerate(FLOORS) for name in names}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from smoothviz... import name`` in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smoothviz"):
            found += [(node.module, alias.name) for alias in node.names]
    return found


def test_every_module_has_a_floor():
    assert set(_modules()) == set(FLOOR), "place a new module on a floor in FLOORS"


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_imports_run_one_way_and_name_no_private(name):
    for module, imported in _imports(_modules()[name]):
        assert not imported.startswith("_"), f"{name} imports the private {module}.{imported}"
        if module.startswith("smoothviz.compress."):
            other = module.rsplit(".", 1)[1]
            assert FLOOR[other] < FLOOR[name], f"{name} (floor {FLOOR[name]}) imports {other}"
        else:
            assert module != "smoothviz.compress", f"{name} imports the package, not a module"


@pytest.mark.parametrize("name", sorted(FLOOR))
def test_no_module_is_over_600_lines(name):
    lines = len(_modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}.py has {lines} lines"


def test_public_surface_is_front_doors_factor_types_budget_error_and_methods():
    assert set(compress.__all__) == {
        "METHODS",
        "BudgetError",
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
        "Factorized",
        "LayerFactors",
        "SVDFactors",
        "DataAwareFactors",
        "IDFactors",
        "HybridFactors",
    }
    assert all(hasattr(compress, n) for n in compress.__all__)
    # Helpers that older code imports from the package keep working, outside __all__.
    for name in ("allocate", "find_groups", "factorize_layer", "measure_sensitivity"):
        assert hasattr(compress, name) and name not in compress.__all__
