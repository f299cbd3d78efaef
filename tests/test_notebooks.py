"""The notebooks: stored clean, thin, parameterised exactly like their config dataclasses; and
every one of them executed by papermill (through the report command) on small parameters."""

from __future__ import annotations

import ast
import html
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from smoothviz.config import ConfigError
from smoothviz.notebook_params import NOTEBOOKS, ExploreParams, TradeoffParams, notebook_path

ROOT = Path(__file__).resolve().parent.parent
NAMES = list(NOTEBOOKS)
# Small enough to run all five notebooks in about a minute on a 2-core CPU.
SMALL = {
    "dataset": "fashion-mnist-mini",
    "model": "cnn",
    "width": 8,
    "epochs": 2,
    "train_subset": 2048,
    "eval_subset": 300,
    "drag_subset": 100,
    "reductions": [0.5],
    "methods": ["svd", "prune_magnitude"],
    "bn_reestimate": False,
    # One narrower training (width 8 is the baseline itself): the notebook's frontier cells.
    "frontier_widths": [4, 8],
}


def _code_cells(name):
    return [
        c for c in nbformat.read(notebook_path(name), as_version=4).cells if c.cell_type == "code"
    ]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    for cell in _code_cells(name):
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: cell has outputs"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_has_no_def_or_class(name):
    for cell in _code_cells(name):
        tree = ast.parse(cell.source)
        bad = [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        assert not bad, f"{name}: a cell defines {[n.name for n in bad]}"


@pytest.mark.parametrize("name", NAMES)
def test_parameters_cell_documents_exactly_the_config_fields(name):
    cls = NOTEBOOKS[name]
    inspected = papermill.inspect_notebook(str(notebook_path(name)))
    assert list(inspected) == cls.field_names()
    defaults = cls()
    for pname, info in inspected.items():
        assert info["help"], f"{name}: parameter {pname} has no help comment"
        assert info["inferred_type_name"] != "None", f"{name}: {pname} has no type annotation"
        value = ast.literal_eval(info["default"])
        expected = getattr(defaults, pname)
        assert (list(expected) if isinstance(expected, tuple) else expected) == value
    cells = _code_cells(name)
    assert cells[0].metadata.get("tags") == ["parameters"]
    # Literals only, then the validating cell.
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.AnnAssign)
        ast.literal_eval(node.value)
    assert f"{cls.__name__}.from_notebook(globals())" in cells[1].source


def test_notebooks_match_their_generator(capsys):
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", ROOT / "scripts/make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--check"]) == 0, capsys.readouterr().out


def test_validation_cell_rejects_unknown_and_ill_typed_parameters():
    namespace = {"width": 8, "widht": 3, "np": __import__("math"), "_private": 1, "In": ["x"]}
    with pytest.raises(ConfigError, match="widht"):
        ExploreParams.from_notebook(namespace)
    with pytest.raises(ConfigError, match="'epochs' must be int"):
        ExploreParams.from_notebook({"epochs": 1.5})
    with pytest.raises(ConfigError, match="methods"):
        TradeoffParams.from_dict({"methods": ["svd", "nope"]})
    with pytest.raises(ConfigError, match="prune_ratio"):
        ExploreParams.from_dict({"prune_ratio": 1.0})
    with pytest.raises(ConfigError, match="model"):
        ExploreParams.from_dict({"model": "resnet99"})
    ok = ExploreParams.from_notebook({"width": 8, "math": __import__("math"), "In": ["x"]})
    assert ok.width == 8
    assert TradeoffParams.from_dict({"reductions": [0.5]}).reductions == (0.5,)


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """``python -m smoothviz report`` on small parameters, run once for the tests below."""
    tmp = tmp_path_factory.mktemp("report")
    # Shared with tests/test_browser.py (same trainings), so the models are trained once.
    env = {**os.environ, "SMOOTHVIZ_CACHE": str(tmp_path_factory.getbasetemp() / "train-cache")}
    args = [sys.executable, "-m", "smoothviz", "report", "--out", str(tmp / "reports"), "--quiet"]
    for name, value in SMALL.items():
        args += ["-p", f"{name}={value}"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return out, tmp / "reports"


@pytest.mark.slow
def test_report_command_writes_index_and_exits_0(small_report):
    out, reports = small_report
    assert out.returncode == 0, out.stderr[-3000:]
    index = Path(out.stdout.strip().splitlines()[-1])
    assert index.name == "index.html" and index.is_file() and reports in index.parents
    page = index.read_text()
    assert 'data-state="succeeded"' in page
    for name in NAMES:
        assert (
            f"00-defaults/{name}.html" in page
            and (index.parent / "00-defaults" / f"{name}.html").is_file()
        )
    record = json.loads((index.parent / "report.json").read_text())
    assert record["state"] == "succeeded"
    assert {"device", "torch", "git_sha"} <= set(record["environment"])
    assert record["points"][0]["parameters"]["width"] == 8


@pytest.mark.slow
def test_landing_page_leads_with_the_headline_computed_from_the_run(small_report):
    from smoothviz.headline import headline_sentence, load_results

    out, _ = small_report
    index = Path(out.stdout.strip().splitlines()[-1])
    page = index.read_text()
    record = json.loads((index.parent / "report.json").read_text())
    fields = {
        "training",
        "method",
        "target_reduction",
        "test_acc",
        "test_acc_bn_reestimated",
        "test_acc_uncompressed",
    }
    rows = record["headline"]
    assert rows and all(fields <= set(r) for r in rows)
    assert {(r["training"], r["method"]) for r in rows} == {
        (t, m) for t in ("baseline", "smooth") for m in SMALL["methods"]
    }
    # The table and the sentence come from the notebook's own sweep, unchanged; one seed, so
    # the interval comes from the per-image correctness kept beside tradeoff.csv.
    results = load_results(index.parent / "00-defaults" / "tradeoff.csv")
    assert (index.parent / "00-defaults" / "tradeoff_correct.npz").is_file()
    sentence = headline_sentence(results)
    assert record["headline_sentence"] == {"00-defaults": sentence}
    assert "over the 300 test images, exact McNemar; one seed" in sentence
    measured = [d for d in record["differences"] if d["n_seeds"]]
    assert measured and {d["ci_source"] for d in measured} == {"test_images"}
    assert all(r["n_seeds"] <= 1 and r["test_acc_ci95"] == [None, None] for r in rows)
    assert "300 images" in record["test_split"]["00-defaults"]
    # The headline comes before everything else on the page.
    assert page.index("Headline") < page.index("Summary")
    assert html.escape(sentence) in page
    for r in rows:
        assert f"{100 * r['test_acc']:.1f}" in page
        assert f"{100 * r['test_acc_uncompressed']:.1f}" in page


@pytest.mark.slow
def test_terminal_shows_progress_and_the_path_but_no_kernel_noise(small_report):
    out, _ = small_report
    assert "without encryption" not in out.stderr and "IPKernelApp" not in out.stderr
    assert out.stdout.strip().endswith("index.html")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executed_by_papermill_without_errors(small_report, name):
    out, _ = small_report
    index = Path(out.stdout.strip().splitlines()[-1])
    nb = nbformat.read(index.parent / "00-defaults" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["papermill"]["exception"] is None
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{name} drew no figure"
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "width = 8" in injected[0].source
    html = (index.parent / "00-defaults" / f"{name}.html").read_text()
    assert "from_notebook(globals())" not in html  # rendered without input cells
    if name == "04_tradeoff":  # the trained-small frontier, trained and placed against
        assert "versus frontier" in html  # the placement table's column
        assert "above (one seed)" in html or "below (one seed)" in html
    # The landing page shows each notebook's headline figure, cropped to a thumbnail.
    assert (index.parent / "00-defaults" / f"{name}.png").is_file()
    # Tables for people: every table the notebook shows has a caption and no raw float.
    tables = [
        o["data"]["text/html"]
        for o in outputs
        if "<table" in o.get("data", {}).get("text/html", "")
    ]
    assert tables, f"{name} showed no table"
    for table in tables:
        assert "<caption" in table, f"{name}: a table without a caption defining its columns"
        cells = re.findall(r"<td[^>]*>(.*?)</td>", table, flags=re.S)
        raw = [c for c in cells if re.search(r"\d\.\d{4,}", c)]
        assert not raw, f"{name}: raw floats in a table: {raw[:5]}"
