"""The report command: validation before any work, failure handling, the landing page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smoothviz import report
from smoothviz.config import ConfigError
from smoothviz.notebook_params import TrainParams

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_unknown_parameter_exits_nonzero_with_a_clear_message_before_any_work(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoothviz",
            "report",
            "--out",
            str(tmp_path / "r"),
            "-p",
            "widht=8",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SMOOTHVIZ_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode != 0
    assert "unknown parameter(s) ['widht']" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        ({"parameters": {"width": "eight"}}, "'width' must be int or None"),
        ({"parameters": {"epochs": 0}}, "epochs"),
        ({"grid": {"nope": [1, 2]}}, "nope"),
        ({"parameters": {"width": 8}, "grid": {"width": [8, 16]}}, "both"),
        ({"preset": "huge"}, "preset"),
        ({"grid": {"reductions": [[0.5], [1.5]]}}, "reductions"),
    ],
)
def test_plan_rejects_bad_parameters_naming_them(args, message):
    with pytest.raises(ConfigError, match=message):
        report.plan(**args)


def test_grid_makes_one_folder_per_point_and_cli_values_are_parsed():
    assert report.parse_parameters(
        ["width=8", "model=cnn", "train_subset=None", "reductions=[0.3,0.5]", "bn_reestimate=false"]
    ) == {
        "width": 8,
        "model": "cnn",
        "train_subset": None,
        "reductions": [0.3, 0.5],
        "bn_reestimate": False,
    }
    grid = report.parse_grid(["width=8,16", "reductions=[0.3,0.5],[0.7]"])
    assert grid == {"width": [8, 16], "reductions": [[0.3, 0.5], [0.7]]}
    points = report.plan("default", {"epochs": 1}, grid)
    assert len(points) == 4 and len({p.folder for p in points}) == 4
    assert points[0].parameters["width"] == 8 and points[0].parameters["epochs"] == 1
    methods = report.plan(parameters={"methods": "svd,prune_magnitude"})[0].parameters["methods"]
    assert methods == ["svd", "prune_magnitude"]
    with pytest.raises(ConfigError, match="name=value"):
        report.parse_parameters(["width"])


def test_landing_page_escapes_user_strings_and_never_claims_success_while_running():
    points = report.plan("default")
    points[0].label = "<script>alert(1)</script>"
    meta = {
        "run_id": "r1",
        "preset": "default",
        "command": "x <b>y</b>",
        "overrides": {"device": "<script>alert(1)</script>"},
        "grid": {},
        "environment": {"device": "cpu"},
        "versions": {"torch": "2"},
        "started": "now",
        "finished": None,
    }
    points[0].notebooks[0].error = "ValueError: <img src=x onerror=alert(1)>"
    page = report.render_index(meta, points, "running")
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page and 'data-state="running"' in page
    assert "SUCCEEDED" not in page


@pytest.mark.slow
def test_a_failing_notebook_fails_the_run_keeps_partial_output_and_exits_nonzero(
    tmp_path, cache_dir, capsys
):
    from smoothviz.cli import main

    # CIFAR-10 is not on disk and is never downloaded: the first notebook fails while loading it.
    code = main(
        [
            "report",
            "--out",
            str(tmp_path),
            "--notebooks",
            "01_train,02_smoothness",
            "-p",
            "dataset=cifar10",
            "-p",
            "epochs=1",
            "--quiet",
        ]
    )
    captured = capsys.readouterr()
    assert code == 1
    index = Path(captured.out.strip().splitlines()[-1])
    page = index.read_text()
    assert 'data-state="failed"' in page and "SUCCEEDED" not in page
    assert "00-defaults/01_train.html" in page and "skipped" in page
    assert (index.parent / "00-defaults" / "01_train.html").is_file()
    assert "failed notebook(s)" in captured.err


def _meta():
    return {
        "run_id": "r1",
        "preset": "default",
        "command": "",
        "overrides": {},
        "grid": {},
        "environment": {"device": "cpu"},
        "versions": {"torch": "2"},
        "started": "now",
        "finished": None,
    }


def _sweep_rows(seeds=(0,)):
    import pandas as pd

    rows = []
    for training, unc, accs in (
        ("baseline", 0.894, {"svd": (0.85, 0.62), "interpolative": (0.87, 0.71)}),
        ("smooth", 0.892, {"svd": (0.88, 0.864), "interpolative": (0.87, 0.80)}),
    ):
        for seed in seeds:
            for method, (a50, a70) in accs.items():
                for target, acc in ((0.5, a50), (0.7, a70)):
                    acc += 0.01 * seed * (1 if training == "smooth" else 0.5)
                    rows.append(
                        {
                            "training": training,
                            "seed": seed,
                            "method": method,
                            "target_reduction": target,
                            "param_reduction": target,
                            "test_acc": acc,
                            "test_acc_bn_reestimated": acc + 0.005,
                            "test_acc_uncompressed": unc,
                            "error": None,
                        }
                    )
    return pd.DataFrame(rows)


def test_report_json_and_landing_page_carry_the_headline_of_the_points_results(tmp_path, mini_data):
    import json

    from smoothviz.headline import headline_sentence, save_results

    points = report.plan("default", {"dataset": "fashion-mnist-mini", "train_subset": None})
    (tmp_path / points[0].folder).mkdir()
    index = tmp_path / "index.html"
    report.write_index(index, _meta(), points, "running")  # before the trade-off notebook
    record = json.loads((tmp_path / "report.json").read_text())
    assert record["headline"] == [] and record["differences"] == []
    assert "not measured yet" in index.read_text()
    results = _sweep_rows(seeds=(0, 1, 2))
    save_results(results, mini_data, tmp_path / points[0].folder / "tradeoff.csv")
    report.write_index(index, _meta(), points, "succeeded")
    record = json.loads((tmp_path / "report.json").read_text())
    assert len(record["headline"]) == len(results) // 3  # one record per training, method, target
    first = record["headline"][0]
    # seeds 0, 1, 2 at +0, +0.5, +1 pp: mean +0.5 pp, t interval 0.5 -/+ 4.3027 * 0.5 / sqrt(3)
    half = 0.95 / (2 * 0.975 * 0.025) ** 0.5 * 0.005 / 3**0.5
    assert first == {
        "training": "baseline",
        "method": "svd",
        "target_reduction": 0.5,
        "param_reduction": 0.5,
        "test_acc": pytest.approx(0.855),
        "test_acc_bn_reestimated": pytest.approx(0.86),
        "test_acc_uncompressed": 0.894,
        "n_seeds": 3,
        "test_acc_mean": pytest.approx(0.855),
        "test_acc_ci95": [pytest.approx(0.855 - half), pytest.approx(0.855 + half)],
        "point": points[0].folder,
    }
    diffs = {(d["method"], d["target_reduction"]): d for d in record["differences"]}
    assert set(diffs) == {(m, t) for m in ("svd", "interpolative") for t in (0.5, 0.7)}
    d = diffs[("svd", 0.7)]  # +24.4, +24.9, +25.4 pp
    assert d["difference_mean"] == pytest.approx(0.249) and d["n_seeds"] == 3
    assert d["ci_source"] == "seeds" and d["verdict"] == "benefit"
    assert d["difference_ci95"] == [pytest.approx(0.249 - half), pytest.approx(0.249 + half)]
    assert diffs[("interpolative", 0.5)]["verdict"] == "unclear"  # 0, +0.5, +1 pp
    sentence = headline_sentence(results)
    assert record["headline_sentence"] == {points[0].folder: sentence}
    # the best method at 70 % by mean accuracy over both trainings: interpolative (75.5 % vs 74.2 %)
    assert "smoothing keeps 9.5 pp more" in sentence and "with interpolative (95 % CI" in sentence
    assert "3 seeds" in sentence
    page = index.read_text()
    assert page.index("Headline") < page.index(html_escape(sentence)) < page.index("Summary")
    # smooth's best at 70 %, in bold, with its interval over seeds
    assert '<td class="num best">87.4 [' in page and "Mean over 3 seeds" in page
    assert "BN re-est." in page and "500 images" in page
    assert "verdict" in page and "benefit" in page  # the differences table
    # which trainings were compared: the default's smooth weight, as configured
    assert f"first-order weight {TrainParams().first_order:g}" in page


def html_escape(text):
    import html

    return html.escape(text, quote=True)


def test_an_unreadable_results_file_is_reported_on_the_page_not_fatal(tmp_path):
    points = report.plan("default", {"dataset": "fashion-mnist-mini", "train_subset": None})
    (tmp_path / points[0].folder).mkdir()
    (tmp_path / points[0].folder / "tradeoff.csv").write_text("training,method\nx,y\n")
    report.write_index(tmp_path / "index.html", _meta(), points, "failed")
    assert "headline unavailable" in (tmp_path / "index.html").read_text()


def test_default_preset_falls_back_to_the_embedded_data_and_says_so(monkeypatch):
    import smoothviz.data

    monkeypatch.setattr(smoothviz.data, "fashion_mnist_available", lambda: False)
    point = report.plan("default")[0]
    assert point.parameters["dataset"] == "fashion-mnist-mini"
    assert point.parameters["train_subset"] is None
    assert point.notes and "embedded subset" in point.notes[0]
    page = report.render_index(_meta(), [point], "running")
    assert "not installed" in page
    # A dataset the user names is never replaced.
    named = report.plan("default", {"dataset": "fashion-mnist", "train_subset": 100})[0]
    assert named.parameters["dataset"] == "fashion-mnist" and not named.notes
    monkeypatch.setattr(smoothviz.data, "fashion_mnist_available", lambda: True)
    assert report.plan("default")[0].parameters["dataset"] == "fashion-mnist"


@pytest.mark.slow
def test_kernels_start_without_the_unencrypted_tcp_warning_and_errors_still_show(tmp_path):
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("import sys\nprint('real error', file=sys.stderr)")]
    )
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, tmp_path / "in.ipynb")
    script = (
        "import papermill, sys\n"
        "from smoothviz.report import kernel_config\n"
        f"papermill.execute_notebook({str(tmp_path / 'in.ipynb')!r}, "
        f"{str(tmp_path / 'out.ipynb')!r}, progress_bar=False, config=kernel_config())\n"
        "print('kernel error on the terminal', file=sys.stderr)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "without encryption" not in out.stderr
    assert "kernel error on the terminal" in out.stderr  # stderr itself is not thrown away
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "real error" in executed.cells[0].outputs[0]["text"]
    del papermill


def test_each_grid_point_carries_its_validated_parameters_and_report_json_leaves_them_out(
    tmp_path,
):
    import json

    from smoothviz.notebook_params import NOTEBOOKS

    points = report.plan("default", {"epochs": 1}, {"width": [8, 16]})
    for point in points:
        for nb in point.notebooks:
            assert type(nb.config) is NOTEBOOKS[nb.name]
            assert nb.config == NOTEBOOKS[nb.name].from_dict(nb.parameters)
        # every notebook of a point trains the same two models
        assert [c.width for c in point.training_configs()] == [point.parameters["width"]] * 2
    (tmp_path / points[0].folder).mkdir()
    report.write_index(tmp_path / "index.html", _meta(), points, "running")
    record = json.loads((tmp_path / "report.json").read_text())
    notebook = record["points"][0]["notebooks"][0]
    assert list(notebook) == [
        "name",
        "title",
        "parameters",
        "status",
        "seconds",
        "error",
        "ipynb",
        "html",
        "figure",
    ]
    assert notebook["parameters"] == {"epochs": 1, "width": 8}


def test_error_text_names_the_notebooks_own_exception_on_one_clean_line():
    from smoothviz.errors import error_text

    class PapermillLike(Exception):
        ename, evalue = "ValueError", "\x1b[0;31mbad width\x1b[0m"

    assert error_text(PapermillLike("wrapper text")) == "ValueError: bad width"
    assert error_text(KeyError("x")) == "KeyError: 'x'"
    assert len(error_text(RuntimeError("y" * 5000))) == 2000
