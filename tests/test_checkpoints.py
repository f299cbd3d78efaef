"""Your own checkpoints and image folders in the report: loading, checking, clear refusals; and a
whole report run on a saved checkpoint (slow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smoothviz.checkpoints import (
    check_state_dict,
    checkpoint_table,
    load_checkpoint,
    load_state_dict,
    save_models,
)
from smoothviz.cli import main
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.data import dataset_shape, load_dataset
from smoothviz.models import build_model
from smoothviz.notebook_params import SpectraParams, TradeoffParams, TrainParams
from smoothviz.report import plan

ROOT = Path(__file__).resolve().parent.parent


def _cnn(width: int = 4, num_classes: int = 10, in_channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("cnn", in_channels, num_classes, width=width).eval()


def _save(model, path: Path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture()
def pair(tmp_path):
    """Two cnn width-4 checkpoints for fashion-mnist (1 channel, 10 classes)."""
    return {
        "baseline": _save(_cnn(seed=0), tmp_path / "base.pt"),
        "smooth": _save(_cnn(seed=1), tmp_path / "smooth.pt"),
    }


# --------------------------------------------------------------------------- loading and refusals
def test_load_checkpoint_gives_the_saved_model(tmp_path):
    model = _cnn()
    loaded = load_checkpoint(_save(model, tmp_path / "m.pt"), "cnn", 1, 10, width=4)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(loaded(x), model(x)) and not loaded.training


def test_a_wrapped_state_dict_is_unwrapped(tmp_path):
    model = _cnn()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "w.pt")
    state = load_state_dict(tmp_path / "w.pt")
    assert state.keys() == model.state_dict().keys()


def test_mismatch_names_the_first_mismatched_key_and_both_shapes(tmp_path):
    path = _save(_cnn(width=4), tmp_path / "m.pt")
    with pytest.raises(ConfigError) as err:
        load_checkpoint(path, "cnn", 1, 10, width=8, name="smooth")
    text = str(err.value)
    assert "checkpoint 'smooth' does not match the model" in text
    assert "first mismatched key '0.weight' is (4, 1, 3, 3) in the file but (8, 1, 3, 3)" in text
    assert "model 'cnn', width 8" in text


def test_mismatch_lists_missing_and_unexpected_keys():
    model = _cnn()
    state = dict(model.state_dict())
    del state["19.weight"]
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(
        ConfigError, match=r"missing key\(s\) '19.weight'.*unexpected key\(s\) 'extra"
    ):
        check_state_dict(model, state)
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=r"model.module.state_dict\(\)"):
        check_state_dict(model, wrapped)


def test_a_pickled_model_is_refused_with_the_state_dict_advice(tmp_path):
    torch.save(_cnn(), tmp_path / "whole.pt")  # the whole nn.Module, pickled
    with pytest.raises(ConfigError) as err:
        load_state_dict(tmp_path / "whole.pt", name="baseline")
    text = str(err.value)
    assert "checkpoint 'baseline'" in text and "weights_only=True" in text
    assert "torch.save(model.state_dict(), PATH)" in text


def test_a_missing_file_and_a_non_state_dict_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint 'smooth': no file at .*nope.pt"):
        load_state_dict(tmp_path / "nope.pt", name="smooth")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match="holds list, not a state_dict"):
        load_state_dict(tmp_path / "list.pt")


def test_the_classifier_is_checked_against_the_classes(tmp_path):
    path = _save(_cnn(num_classes=10), tmp_path / "m.pt")
    with pytest.raises(
        ConfigError, match=r"'19.weight' is \(10, 16\) in the file but \(3, 16\).*3 classes"
    ):
        load_checkpoint(path, "cnn", 1, 3, width=4)


def test_save_models_writes_state_dicts_that_load(tmp_path):
    paths = save_models({"baseline": _cnn(seed=2)}, tmp_path / "models")
    assert Path(paths["baseline"]).is_absolute()
    loaded = load_checkpoint(paths["baseline"], "cnn", 1, 10, width=4)
    assert torch.equal(loaded.state_dict()["0.weight"], _cnn(seed=2).state_dict()["0.weight"])


# --------------------------------------------------------------------------- notebook parameters
def test_params_take_both_checkpoints_with_absolute_paths(pair, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = TrainParams(
        model="cnn", width=4, checkpoints={"baseline": "base.pt", "smooth": "smooth.pt"}
    )
    assert params.checkpoints == {k: str(Path(v).resolve()) for k, v in pair.items()}
    assert params.all_training_configs() == []  # nothing to train, on a cluster or here
    models = params.load_models(device="cpu")
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(models["smooth"](x), _cnn(seed=1)(x))


@pytest.mark.parametrize(
    ("checkpoints", "message"),
    [
        ({"baseline": "base.pt"}, r"'smooth' is missing .*give both"),
        (
            {"baseline": "base.pt", "smooth": "smooth.pt", "other": "base.pt"},
            r"unknown model name\(s\) \['other'\]",
        ),
        ({"baseline": "base.pt", "smooth": "gone.pt"}, r"'smooth': no file at .*gone.pt"),
    ],
)
def test_params_refuse_bad_checkpoints(pair, tmp_path, monkeypatch, checkpoints, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        TrainParams(checkpoints=checkpoints)


def test_params_refuse_several_seeds_with_checkpoints(pair):
    with pytest.raises(ConfigError, match="'seeds' is \\[0, 1\\], but 'checkpoints'"):
        TrainParams(checkpoints=pair, seeds=[0, 1])


def test_checkpoint_runs_hold_the_models_and_their_accuracy(pair):
    params = TrainParams(model="cnn", width=4, eval_subset=200, checkpoints=pair, device="cpu")
    runs = params.train_seed_runs()
    table = checkpoint_table(runs)
    assert list(table["training"]) == ["baseline", "smooth"]
    data = params.load_data()
    for row in table.itertuples():
        model = runs[0][row.training].model
        expected = (model(data.x_test).argmax(1) == data.y_test).sum().item() / len(data.y_test)
        assert row.test_acc == pytest.approx(expected, abs=1e-9)
        assert row.parameters == sum(p.numel() for p in model.parameters())
        assert row.checkpoint == pair[row.training]


def test_plan_injects_absolute_paths_and_names_a_mismatch_before_any_work(
    pair, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rel = {"baseline": "base.pt", "smooth": "smooth.pt"}
    points = plan("default", {"model": "cnn", "width": 4, "checkpoints": rel})
    for nb in points[0].notebooks:
        assert nb.parameters["checkpoints"] == {k: str(Path(v).resolve()) for k, v in pair.items()}
    assert points[0].training_configs() == []
    with pytest.raises(ConfigError, match="checkpoint 'baseline' does not match.*'0.weight'"):
        plan("default", {"model": "cnn", "width": 8, "checkpoints": rel})


# --------------------------------------------------------------------------- image folders
def _write_folder(root: Path, classes=("cat", "dog", "eel"), size=(12, 12), mode="RGB", n=(4, 2)):
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), n):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                    root / split / c / f"{i}.png"
                )
    return f"folder:{root}"


def test_image_folder_loads_as_image_data(tmp_path):
    name = _write_folder(tmp_path / "imgs")
    # One larger, non-square image: resized (shorter side 12) and centre-cropped.
    Image.fromarray(np.zeros((20, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs/test/dog/big.png")
    assert dataset_shape(name) == (3, 3, 12)
    data = load_dataset(name)
    assert data.classes == ("cat", "dog", "eel")
    assert tuple(data.x_train.shape) == (12, 3, 12, 12) and tuple(data.x_test.shape) == (
        7,
        3,
        12,
        12,
    )
    assert data.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # Normalised by the training split's own per-channel statistics.
    assert torch.allclose(data.x_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(data.x_train.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4)


def test_a_grayscale_folder_has_one_channel(tmp_path):
    name = _write_folder(tmp_path / "gray", mode="L", size=(10, 10))
    assert dataset_shape(name) == (1, 3, 10)
    assert load_dataset(name).in_channels == 1


def test_a_folder_without_its_subfolders_is_named(tmp_path):
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"missing subfolder\(s\) \['test/'\]"):
        dataset_shape(f"folder:{tmp_path / 'half'}")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        dataset_shape(f"folder:{tmp_path / 'absent'}")
    _write_folder(tmp_path / "odd")
    (tmp_path / "odd" / "test" / "extra").mkdir()
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "odd/test/extra/x.png")
    with pytest.raises(ValueError, match="same class folders"):
        dataset_shape(f"folder:{tmp_path / 'odd'}")
    with pytest.raises(ConfigError, match=r"missing subfolder"):
        plan("default", {"dataset": f"folder:{tmp_path / 'half'}"})


def test_a_folder_dataset_with_a_torchvision_checkpoint(tmp_path):
    name = _write_folder(tmp_path / "imgs", size=(32, 32), n=(2, 2))
    torch.manual_seed(0)
    net = build_model("torchvision:mobilenet_v2", 3, 3)
    ckpt = {"baseline": _save(net, tmp_path / "a.pt"), "smooth": _save(net, tmp_path / "a.pt")}
    params = SpectraParams(dataset=name, model="torchvision:mobilenet_v2", checkpoints=ckpt)
    assert TrainConfig(dataset=name).dataset == name
    params.check_checkpoints()
    runs = params.train_runs()
    assert 0.0 <= runs["smooth"].history["test_acc"].iloc[0] <= 1.0
    ten = {"baseline": _save(build_model("torchvision:mobilenet_v2", 3, 10), tmp_path / "b.pt")}
    ten["smooth"] = ten["baseline"]
    bad = SpectraParams(dataset=name, model="torchvision:mobilenet_v2", checkpoints=ten)
    with pytest.raises(
        ConfigError, match=r"'classifier.1.weight' is \(10, 1280\).*\(3, 1280\).*3 classes"
    ):
        bad.check_checkpoints()


# --------------------------------------------------------------------------- the command line
def test_cli_passes_checkpoints_model_and_dataset_to_the_report(pair, monkeypatch):
    import smoothviz.report as report
    from smoothviz.report.execute import ReportResult

    seen = {}

    def fake_run_report(preset, parameters, grid, **kwargs):
        seen.update(parameters)
        return ReportResult(index=Path("index.html"), ok=True, points=[])

    monkeypatch.setattr(report, "run_report", fake_run_report)
    argv = ["report", "--model", "cnn", "--dataset", "fashion-mnist-mini"]
    argv += [
        "--checkpoint",
        f"baseline={pair['baseline']}",
        "--checkpoint",
        f"smooth={pair['smooth']}",
    ]
    assert main(argv) == 0
    assert seen == {"model": "cnn", "dataset": "fashion-mnist-mini", "checkpoints": pair}


CNN4 = ["--model", "cnn", "-p", "width=4"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "baseline={b}"], "--checkpoint: 'smooth' is missing"),
        (
            ["--checkpoint", "baseline={b}", "--checkpoint", "teacher={b}"],
            r"unknown model name\(s\) \['teacher'\]",
        ),
        (["--checkpoint", "baseline"], "--checkpoint expects NAME=PATH, got 'baseline'"),
        (
            ["--checkpoint", "baseline={b}", "--checkpoint", "baseline={b}"],
            "--checkpoint baseline given twice",
        ),
        (["--model", "cnn", "-p", "model=mlp"], "give --model or -p/--grid model, not both"),
        (
            [
                "--model",
                "cnn",
                "-p",
                "width=8",
                "--checkpoint",
                "baseline={b}",
                "--checkpoint",
                "smooth={b}",
            ],
            r"'0.weight' is \(4, 1, 3, 3\) in the file but \(8, 1, 3, 3\)",
        ),
        (
            [*CNN4, "--checkpoint", "baseline={w}", "--checkpoint", "smooth={b}"],
            r"'baseline'.*torch.save\(model.state_dict\(\), PATH\)",
        ),
        (
            [*CNN4, "--checkpoint", "baseline={b}", "--checkpoint", "smooth={b}", "--seeds", "2"],
            r"'seeds' is \[0, 1\]",
        ),
        (["--dataset", "folder:{missing}"], "no such folder"),
    ],
)
def test_cli_errors_exit_2_naming_the_value(pair, tmp_path, capsys, extra, message):
    torch.save(_cnn(), tmp_path / "whole.pt")
    fill = {"b": pair["baseline"], "w": tmp_path / "whole.pt", "missing": tmp_path / "none"}
    args = [a.format(**fill) for a in extra]
    assert main(["report", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(message, err), err
    assert not (tmp_path / "r").exists()  # refused before any work


def test_run_report_saves_in_memory_models_to_the_run_folder(tmp_path, monkeypatch):
    from smoothviz.report import execute

    def fake_run_point(point, run_dir, nb_dir, kernel_name, timeout, on_notebook=None):
        for nb in point.notebooks:
            nb.status = "ok"
        return point

    monkeypatch.setattr(execute, "run_point", fake_run_point)
    result = execute.run_report(
        parameters={"model": "cnn", "width": 4},
        models={"baseline": _cnn(seed=0), "smooth": _cnn(seed=1)},
        out_dir=tmp_path,
        run_id="mine",
        notebooks=["03_spectra"],
        log=None,
    )
    folder = tmp_path / "mine" / "models"
    assert result.ok and sorted(p.name for p in folder.iterdir()) == ["baseline.pt", "smooth.pt"]
    injected = result.points[0].notebooks[0].parameters["checkpoints"]
    assert injected == {n: str(folder / f"{n}.pt") for n in ("baseline", "smooth")}
    # A model that does not fit: refused before any work, and the run folder is gone.
    with pytest.raises(ConfigError, match="does not match"):
        execute.run_report(
            parameters={"model": "cnn", "width": 8},
            models={"baseline": _cnn(), "smooth": _cnn()},
            out_dir=tmp_path,
            run_id="bad",
            log=None,
        )
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="models=.*'checkpoints', not both"):
        execute.run_report(
            parameters={"checkpoints": {}},
            models={"baseline": "a", "smooth": "b"},
            out_dir=tmp_path,
        )


# --------------------------------------------------------------------------- the whole report
SMALL = {
    "dataset": "fashion-mnist-mini",
    "model": "cnn",
    "width": 8,
    "eval_subset": 300,
    "drag_subset": 100,
    "reductions": [0.5],
    "methods": ["svd", "prune_magnitude"],
    "bn_reestimate": False,
}


@pytest.mark.slow
def test_report_on_your_own_checkpoints_end_to_end(tmp_path):
    from smoothviz.measure import evaluate

    paths = {
        "baseline": _save(_cnn(width=8, seed=0), tmp_path / "baseline.pt"),
        "smooth": _save(_cnn(width=8, seed=1), tmp_path / "smooth.pt"),
    }
    cache = tmp_path / "cache"
    env = {**os.environ, "SMOOTHVIZ_CACHE": str(cache)}
    args = [
        sys.executable,
        "-m",
        "smoothviz",
        "report",
        "--out",
        str(tmp_path / "reports"),
        "--quiet",
    ]
    args += [
        "--checkpoint",
        f"baseline={paths['baseline']}",
        "--checkpoint",
        f"smooth={paths['smooth']}",
    ]
    for name, value in SMALL.items():
        args += ["-p", f"{name}={value}"]
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    index = Path(out.stdout.strip().splitlines()[-1])
    record = json.loads((index.parent / "report.json").read_text())
    assert record["state"] == "succeeded"
    assert record["points"][0]["parameters"]["checkpoints"] == paths
    assert not (cache / "checkpoints").exists()  # nothing was trained
    own = {k: v for k, v in SMALL.items() if k in TradeoffParams.field_names()}
    data = TradeoffParams.from_dict(own).load_data()
    for row in record["headline"]:
        model = load_checkpoint(paths[row["training"]], "cnn", 1, 10, width=8)
        # report.json keeps 10 digits; one image of 300 is 0.0033
        expected = evaluate(model, data)["accuracy"]
        assert row["test_acc_uncompressed"] == pytest.approx(expected, abs=1e-9)
    landing = index.read_text()
    assert f"your checkpoint {paths['smooth']}" in landing and "epochs on" not in landing
    page = (index.parent / "00-defaults" / "01_train.html").read_text()
    assert "baseline.pt" in page and "no training curves" in page
