"""The report command: validation before any work, failure handling, the landing page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smoothviz import report
from smoothviz.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent


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
