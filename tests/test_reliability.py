"""Reliability and security (issue 6): bad input everywhere a user types, the cache under
concurrency and code changes, and reports that are killed, run side by side or fed hostile strings.

The table ``BAD_INPUT`` lists every bad-input case as ``(id, callable, exception, regex)``; the regex
must name the parameter (and, where there is one, what is allowed). ``pytest -v -k bad_input`` lists
the case ids, and ``test_bad_input_table_covers_every_area`` prints them grouped by area.
Bad values of single ``TrainConfig`` fields live in ``tests/test_config.py`` and are not repeated.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from smoothviz.cli import main
from smoothviz.compress import (
    BudgetError,
    data_aware_svd_compress,
    data_aware_svd_factors,
    interpolative_compress,
    prune_channels,
    prune_magnitude,
    svd_compress,
    svd_factors,
)
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.data import ImageData, from_tensors, load_dataset
from smoothviz.layers import select_layers
from smoothviz.measure import evaluate
from smoothviz.models import build_model
from smoothviz.notebook_params import (
    ExploreParams,
    SmoothnessParams,
    SpectraParams,
    TradeoffParams,
    TrainParams,
)
from smoothviz.training import CheckpointError, cache_key, load_cached, train

ROOT = Path(__file__).resolve().parent.parent
# The tiny run of the cache tests: a couple of seconds on two CPU cores.
TINY = dict(model="mlp", width=16, epochs=2, train_subset=500, batch_size=50, device="cpu")
# Tiny notebook parameters for the report tests (01_train only: two trainings of 8 steps).
REPORT_TINY = [
    "--notebooks", "01_train", "-p", "model=mlp", "-p", "epochs=2", "-p", "train_subset=512",
    "-p", "eval_subset=200", "-p", "device=cpu", "--quiet",
]  # fmt: skip


# ============================================================================ bad input, as a table
class CLIError(Exception):
    """A CLI call ended with exit status 2 and a message, without a traceback (the text is it)."""


def _cli(*argv: str) -> Callable[[], None]:
    """A case that runs ``main(argv)`` and raises CLIError(stderr) if it exited 2 cleanly."""

    def run() -> None:
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(list(argv))
            except SystemExit as exc:  # argparse's own errors
                code = exc.code
        text = err.getvalue()
        assert code == 2, f"exit status {code} (expected 2); stderr: {text!r}"
        assert "Traceback" not in text, text
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and re.search(r"error: ", lines[-1]), text  # the message is its last line
        raise CLIError(lines[-1])

    return run


@functools.cache
def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", 1, 10, width=4).eval()


@functools.cache
def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", 1, 10, width=16, image_size=8).eval()


@functools.cache
def _grouped() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3, groups=4), torch.nn.Conv2d(4, 2, 1)
    ).eval()


def _da_factors():
    return data_aware_svd_factors(_cnn(), _calib(4, 1, 8, 8))


class _Untraceable(torch.nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.b(h if h.sum() > 0 else -h)


def _calib(*shape: int, fill: float | None = None) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    if fill is not None:
        x[0].view(-1)[0] = fill
    return x


def _tensors(n: int = 64, c: int = 1, classes: int = 2) -> ImageData:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n,), generator=g)
    y[:classes] = torch.arange(classes)
    return from_tensors(torch.randn(n, c, 8, 8, generator=g), y, torch.randn(16, c, 8, 8), y[:16])


def _ft(**changes: Any) -> Callable[[], ImageData]:
    """from_tensors on small valid tensors with some of its arguments replaced."""
    g = torch.Generator().manual_seed(0)
    args = dict(
        x_train=torch.randn(32, 1, 8, 8, generator=g),
        y_train=torch.randint(0, 3, (32,), generator=g),
        x_test=torch.randn(8, 1, 8, 8, generator=g),
        y_test=torch.randint(0, 3, (8,), generator=g),
    )
    args.update(changes)
    kwargs = {k: args.pop(k) for k in ("name", "classes") if k in args}
    return lambda: from_tensors(*args.values(), **kwargs)


def _nan(shape: tuple[int, ...], value: float) -> torch.Tensor:
    x = torch.randn(*shape)
    x.view(-1)[3] = value
    return x


def _train(cfg_fields: dict[str, Any] | None = None, **kwargs: Any) -> Callable[[], Any]:
    def run():
        cfg = TrainConfig(**{**TINY, **(cfg_fields or {})})
        return train(cfg, progress=False, **kwargs)

    return run


@dataclass(frozen=True)
class Case:
    id: str  # "<area>/<what is wrong>"
    call: Callable[[], Any]
    exc: type[BaseException] | tuple[type[BaseException], ...]
    match: str  # must name the parameter


_PM = "pass exactly one of"
BAD_INPUT: list[Case] = [
    # --- command line: `train` and `quickstart` (argparse type errors and TrainConfig checks)
    Case("cli/train-epochs-not-an-int", _cli("train", "--epochs", "abc"), CLIError,
         r"--epochs: invalid int value: 'abc'"),
    Case("cli/train-width-float", _cli("train", "--width", "2.5"), CLIError, r"--width"),
    Case("cli/train-lr-not-a-number", _cli("train", "--lr", "fast"), CLIError, r"--lr"),
    Case("cli/train-flip-not-a-bool", _cli("train", "--flip", "maybe"), CLIError,
         r"--flip: expected true or false"),
    Case("cli/train-unknown-option", _cli("train", "--lamda", "0.1"), CLIError,
         r"unrecognized arguments: --lamda"),
    Case("cli/train-missing-value", _cli("train", "--epochs"), CLIError,
         r"--epochs: expected one argument"),
    Case("cli/unknown-command", _cli("fit"), CLIError, r"invalid choice: 'fit'"),
    Case("cli/train-epochs-zero", _cli("train", "--epochs", "0", "--quiet"), CLIError,
         r"epochs must be an int >= 1"),
    Case("cli/train-negative-lr", _cli("train", "--lr", "-1", "--quiet"), CLIError,
         r"lr must be a finite number >= 0"),
    Case("cli/train-lr-nan", _cli("train", "--lr", "nan", "--quiet"), CLIError, r"lr must be"),
    Case("cli/train-unknown-model", _cli("train", "--model", "resnet50"), CLIError,
         r"model must be one of \['resnet18', 'cnn', 'mlp', 'vit'\]"),
    Case("cli/train-unknown-dataset", _cli("train", "--dataset", "mnist"), CLIError,
         r"dataset must be one of"),
    Case("cli/train-unknown-schedule", _cli("train", "--schedule", "step"), CLIError,
         r"schedule must be one of \['onecycle', 'cosine'\]"),
    Case("cli/train-unknown-device", _cli("train", "--device", "tpu"), CLIError,
         r"device must be one of"),
    Case("cli/train-momentum-1", _cli("train", "--momentum", "1"), CLIError,
         r"momentum must be a number in \[0, 1\)"),
    Case("cli/train-empty-layers", _cli("train", "--layers", ","), CLIError,
         r"layers must be None or a non-empty list"),
    Case("cli/train-unknown-layer",
         _cli("train", "--model", "mlp", "--epochs", "1", "--train-subset", "512",
              "--batch-size", "64", "--layers", "nope", "--quiet"),
         CLIError, r"layers: \['nope'\] are not Conv2d/Linear layers of this model; allowed names"),
    Case("cli/train-subset-larger-than-data",
         _cli("train", "--model", "mlp", "--train-subset", "999999", "--quiet"), CLIError,
         r"train_subset is 999999 but the training split has only \d+ images"),
    Case("cli/train-batch-larger-than-data",
         _cli("train", "--model", "mlp", "--train-subset", "100", "--batch-size", "128",
              "--quiet"),
         CLIError, r"batch_size is 128 but the training split has only 100 images"),
    Case("cli/train-unknown-torchvision-arch",
         _cli("train", "--model", "torchvision:resnet99", "--train-subset", "200", "--quiet"),
         CLIError, r"model: unknown torchvision architecture 'resnet99'"),
    Case("cli/train-cache-dir-is-a-file",
         _cli("train", "--cache-dir", str(ROOT / "pyproject.toml"), "--quiet"), CLIError,
         r"smoothviz train: error: .*Not a directory: '.*pyproject.toml/checkpoints'"),
    Case("cli/quickstart-epochs-not-an-int", _cli("quickstart", "--epochs", "x"), CLIError,
         r"--epochs: invalid int value"),
    Case("cli/quickstart-epochs-zero", _cli("quickstart", "--epochs", "0", "--quiet"), CLIError,
         r"epochs must be an int >= 1"),
    # --- command line: `report` (checked against the notebooks' parameter classes, nothing runs)
    Case("cli/report-unknown-parameter", _cli("report", "-p", "widht=8", "--out", "/nonexistent"),
         CLIError, r"unknown parameter\(s\) \['widht'\] \(-p\); the notebooks take"),
    Case("cli/report-parameter-wrong-type", _cli("report", "-p", "width=eight"), CLIError,
         r"'width' must be int or None, got 'eight'"),
    Case("cli/report-parameter-out-of-range", _cli("report", "-p", "epochs=0"), CLIError,
         r"epochs must be an int >= 1"),
    Case("cli/report-parameter-without-value", _cli("report", "-p", "width"), CLIError,
         r"-p expects name=value, got 'width'"),
    Case("cli/report-grid-bad-value", _cli("report", "--grid", "reductions=[0.5],[1.5]"),
         CLIError, r"'reductions' must be in \[0.0, 1.0\)"),
    Case("cli/report-grid-unknown", _cli("report", "--grid", "nope=1,2"), CLIError,
         r"unknown parameter\(s\) \['nope'\] \(--grid\)"),
    Case("cli/report-both-p-and-grid", _cli("report", "-p", "width=8", "--grid", "width=8,16"),
         CLIError, r"parameter\(s\) \['width'\] given both with -p and --grid"),
    Case("cli/report-unknown-method", _cli("report", "-p", "methods=svd,svdd"), CLIError,
         r"'methods' must be a non-empty list from"),
    Case("cli/report-unknown-preset", _cli("report", "--preset", "huge"), CLIError,
         r"--preset: invalid choice: 'huge'"),
    Case("cli/report-unknown-notebook", _cli("report", "--notebooks", "99_nope"), CLIError,
         r"notebooks \['99_nope'\] are not bundled"),
    Case("cli/report-out-is-a-file",
         _cli("report", "--out", str(ROOT / "pyproject.toml"), "--notebooks", "01_train"),
         CLIError, r"smoothviz report: error: .*Not a directory: '.*pyproject.toml/"),
    Case("cli/report-run-id-path", _cli("report", "--run-id", "../escape", "--out", "/nonexistent"),
         CLIError, r"run_id may hold only letters, digits"),
    # --- train() arguments and data that does not fit the config
    Case("train/cfg-not-a-config", lambda: train({"epochs": 1}), TypeError,
         r"cfg must be a TrainConfig, got dict"),
    Case("train/data-not-imagedata", _train(data=(torch.zeros(4, 1, 8, 8), torch.zeros(4))),
         TypeError, r"data must be an ImageData"),
    Case("train/batch-larger-than-own-data", _train({"train_subset": None, "batch_size": 100},
                                                    data=_tensors(64)),
         ConfigError, r"batch_size is 100 but the training split has only 64 images"),
    Case("train/subset-larger-than-own-data", _train({"train_subset": 65}, data=_tensors(64)),
         ConfigError, r"train_subset is 65 but the training split has only 64 images"),
    Case("train/unknown-layer", _train({"layers": ("0.weight",)}), ValueError,
         r"layers: \['0.weight'\] are not Conv2d/Linear layers"),
    Case("train/from-dict-unknown-field", lambda: TrainConfig.from_dict({"epoch": 3}), ConfigError,
         r"unknown TrainConfig field\(s\) \['epoch'\]"),
    # --- data: a user's own tensors and the registry
    Case("train/too-few-steps", _train({"epochs": 1, "train_subset": 100}), ConfigError,
         r"epochs x \(training images // batch_size\) = 1 x 2 optimiser steps; at least \d+ are "
         r"needed: raise epochs or lower batch_size"),
    Case("train/cache-dir-not-a-path", _train(cache_dir=5), TypeError,
         r"cache_dir must be a folder path \(str or Path\) or None, got 5"),
    Case("data/empty", _ft(x_train=torch.zeros(0, 1, 8, 8), y_train=torch.zeros(0, dtype=torch.long)),
         ValueError, r"x_train is empty"),
    Case("data/length-mismatch", _ft(y_train=torch.zeros(31, dtype=torch.long)), ValueError,
         r"y_train must have shape \(32,\) to match x_train"),
    Case("data/nan-image", _ft(x_train=_nan((32, 1, 8, 8), float("nan"))), ValueError,
         r"x_train contains NaN or infinite values"),
    Case("data/inf-test-image", _ft(x_test=_nan((8, 1, 8, 8), float("inf"))), ValueError,
         r"x_test contains NaN or infinite values"),
    Case("data/label-out-of-range", _ft(classes=("a", "b")), ValueError,
         r"y_train labels must lie in \[0, 2\)"),
    Case("data/negative-label", _ft(y_test=torch.full((8,), -1)), ValueError,
         r"y_test labels must lie in"),
    Case("data/float-labels", _ft(y_train=torch.zeros(32)), TypeError,
         r"y_train must hold integer class labels, got dtype torch.float32"),
    Case("data/bool-labels", _ft(y_test=torch.zeros(8, dtype=torch.bool)), TypeError,
         r"y_test must hold integer class labels"),
    Case("data/images-without-channel-axis", _ft(x_train=torch.zeros(32, 8, 8)), ValueError,
         r"x_train must have shape \(N, C, H, W\), got \(32, 8, 8\)"),
    Case("data/labels-2d", _ft(y_train=torch.zeros(32, 1, dtype=torch.long)), ValueError,
         r"y_train must have shape \(32,\)"),
    Case("data/train-test-shapes-differ", _ft(x_test=torch.zeros(8, 3, 8, 8)), ValueError,
         r"x_train images are \(1, 8, 8\) but x_test images are \(3, 8, 8\)"),
    Case("data/numpy-not-tensors", _ft(x_train=np.zeros((32, 1, 8, 8))), TypeError,
         r"x_train and y_train must be torch tensors"),
    Case("data/unknown-dataset", lambda: load_dataset("mnist"), ValueError,
         r"dataset: unknown dataset 'mnist'; allowed: \['fashion-mnist-mini'"),
    Case("data/download-not-bool", lambda: load_dataset("cifar10", download="yes"), TypeError,
         r"download must be True or False, got 'yes'"),
    Case("data/missing-root", lambda: load_dataset(root="/nonexistent/smoothviz"),
         FileNotFoundError, r"embedded subset /nonexistent/smoothviz/.* is missing"),
    Case("data/subset-too-large", lambda: _tensors(64).subset(n_train=65), ValueError,
         r"n_train must be in \[1, 64\], got 65"),
    # --- models and layer selection
    Case("data/root-not-a-path", lambda: load_dataset(root=5), TypeError,
         r"root must be a folder path \(str or Path\) or None, got 5"),
    Case("model/unknown-name", lambda: build_model("vgg"), ValueError,
         r"model: unknown model 'vgg'; allowed: \['resnet18', 'cnn', 'mlp', 'vit'\]"),
    Case("model/unknown-torchvision-arch", lambda: build_model("torchvision:nope"), ValueError,
         r"model: unknown torchvision architecture 'nope'"),
    Case("model/name-not-a-string", lambda: build_model(18), TypeError,
         r"model must be a string, got int"),
    Case("model/zero-in-channels", lambda: build_model("cnn", 0), ValueError,
         r"in_channels must be a positive int, got 0"),
    Case("model/one-class", lambda: build_model("cnn", 1, 1), ValueError,
         r"num_classes must be an int >= 2, got 1"),
    Case("model/zero-width", lambda: build_model("mlp", width=0), ValueError,
         r"width must be a positive int, got 0"),
    Case("layers/unknown-name", lambda: select_layers(_cnn(), ["3", "nope"]), ValueError,
         r"layers: \['nope'\] are not Conv2d/Linear layers of this model; allowed names: \['0'"),
    Case("layers/bad-keyword", lambda: select_layers(_cnn(), "first"), ValueError,
         r"layers must be None, 'all' or a sequence of layer names, got 'first'"),
    Case("layers/not-a-sequence", lambda: select_layers(_cnn(), 3), TypeError,
         r"layers must be None, 'all' or a sequence of layer names, got 3"),
    Case("layers/batchnorm-name", lambda: select_layers(_cnn(), ["1"]), ValueError,
         r"layers: \['1'\] are not Conv2d/Linear layers"),
    # --- compression arguments
    Case("svd/reduction-1", lambda: svd_compress(_cnn(), param_reduction=1.0), ValueError,
         r"param_reduction must be in \[0, 1\), got 1.0"),
    Case("svd/reduction-negative", lambda: svd_compress(_cnn(), param_reduction=-0.1), ValueError,
         r"param_reduction must be in \[0, 1\)"),
    Case("svd/reduction-string", lambda: svd_compress(_cnn(), param_reduction="half"), TypeError,
         r"param_reduction must be a number in \[0, 1\), got 'half'"),
    Case("svd/reduction-unreachable", lambda: svd_compress(_cnn(), param_reduction=0.99),
         BudgetError, r"param_reduction=0.990 cannot be reached"),
    Case("svd/rank-too-large", lambda: svd_compress(_cnn(), ranks=1000), ValueError,
         r"ranks\['3'\] must be an int in \[1, \d+\], got 1000"),
    Case("svd/rank-zero", lambda: svd_compress(_cnn(), ranks={"3": 0}), ValueError,
         r"ranks\['3'\] must be an int in \[1, \d+\], got 0"),
    Case("svd/rank-float", lambda: svd_compress(_cnn(), ranks=2.5), TypeError,
         r"ranks must be a dict \{layer name: rank\} or an int, got 2.5"),
    Case("svd/rank-unknown-layer", lambda: svd_compress(_cnn(), ranks={"nope": 2}), ValueError,
         r"\['nope'\] are not"),
    Case("svd/energy-above-1", lambda: svd_compress(_cnn(), energy=1.5), ValueError,
         r"energy must be a number in \(0, 1\], got 1.5"),
    Case("svd/no-option", lambda: svd_compress(_cnn()), TypeError,
         _PM + r" param_reduction, energy, ranks; got none"),
    Case("svd/two-options", lambda: svd_compress(_cnn(), energy=0.9, ranks=2), TypeError,
         _PM + r" param_reduction, energy, ranks; got \['energy', 'ranks'\]"),
    Case("svd/unknown-layer", lambda: svd_compress(_cnn(), ranks=2, layers=["nope"]), ValueError,
         r"layers: \['nope'\] are not"),
    Case("svd/allocation-unknown", lambda: svd_compress(_cnn(), param_reduction=0.3,
                                                        allocation="loss"),
         ValueError, r"allocation must be one of \['energy', 'output_error', 'sensitivity'\]"),
    Case("svd/allocation-without-calibration",
         lambda: svd_compress(_cnn(), param_reduction=0.3, allocation="output_error"), TypeError,
         r"calibration is required for allocation='output_error'"),
    Case("svd/allocation-with-ranks", lambda: svd_compress(_cnn(), ranks=2,
                                                           allocation="sensitivity"),
         TypeError, r"allocation='sensitivity' splits a param_reduction budget"),
    Case("svd/allocation-calibration-nan", lambda: svd_compress(
        _cnn(), param_reduction=0.3, allocation="sensitivity",
        calibration=_calib(4, 1, 8, 8, fill=float("nan"))), ValueError,
         r"calibration contains NaN or infinite values"),
    # --- data-aware SVD
    Case("svd_data_aware/calibration-missing",
         lambda: data_aware_svd_compress(_cnn(), param_reduction=0.3), TypeError,
         r"calibration is required \(no factors are given\)"),
    Case("svd_data_aware/calibration-missing-sequential",
         lambda: data_aware_svd_compress(_cnn(), param_reduction=0.3, factors=_da_factors()),
         TypeError, r"calibration is required \(sequential=True refits on it\)"),
    Case("svd_data_aware/calibration-list",
         lambda: data_aware_svd_compress(_cnn(), [[0.0]], param_reduction=0.3), TypeError,
         r"calibration must be a tensor of inputs \(N, ...\), got list"),
    Case("svd_data_aware/calibration-wrong-channels",
         lambda: data_aware_svd_compress(_cnn(), _calib(4, 3, 8, 8), param_reduction=0.3),
         ValueError,
         r"calibration must have shape \(N, 1, H, W\) for this model, got \(4, 3, 8, 8\)"),
    Case("svd_data_aware/calibration-wrong-features",
         lambda: data_aware_svd_factors(_mlp(), _calib(4, 1, 7, 7)), ValueError,
         r"calibration of shape \(4, 1, 7, 7\) does not fit the model"),
    Case("svd_data_aware/calibration-nan", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8, fill=float("nan")), param_reduction=0.3), ValueError,
         r"calibration contains NaN or infinite values"),
    Case("svd_data_aware/calibration-inf", lambda: data_aware_svd_factors(
        _cnn(), _calib(4, 1, 8, 8, fill=float("inf"))), ValueError,
         r"calibration contains NaN or infinite values"),
    Case("svd_data_aware/calibration-empty", lambda: data_aware_svd_factors(
        _cnn(), torch.zeros(0, 1, 8, 8)), ValueError, r"calibration must be a float tensor"),
    Case("svd_data_aware/damping-zero", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), param_reduction=0.3, damping=0), ValueError,
         r"damping must be a number in \(0, 1\], got 0"),
    Case("svd_data_aware/damping-nan", lambda: data_aware_svd_factors(
        _cnn(), _calib(4, 1, 8, 8), damping=float("nan")), ValueError, r"damping must be"),
    Case("svd_data_aware/output-weighting-unknown", lambda: data_aware_svd_factors(
        _cnn(), _calib(4, 1, 8, 8), output_weighting="bn"), ValueError,
         r"output_weighting must be one of \['batchnorm', 'none'\], got 'bn'"),
    Case("svd_data_aware/allocation-unknown", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), param_reduction=0.3, allocation="flops"), ValueError,
         r"allocation must be one of \['output_error', 'energy', 'sensitivity'\], got 'flops'"),
    Case("svd_data_aware/sequential-not-bool", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), param_reduction=0.3, sequential="yes"), TypeError,
         r"sequential must be True or False, got 'yes'"),
    Case("svd_data_aware/batch-size-zero", lambda: data_aware_svd_factors(
        _cnn(), _calib(4, 1, 8, 8), batch_size=0), ValueError,
         r"batch_size must be an int >= 1, got 0"),
    Case("svd_data_aware/weight-only-factors", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), param_reduction=0.3, factors=svd_factors(_cnn())), TypeError,
         r"factors must come from data_aware_svd_factors"),
    Case("svd_data_aware/no-option", lambda: data_aware_svd_compress(_cnn(), _calib(4, 1, 8, 8)),
         TypeError, _PM + r" param_reduction, energy, ranks; got none"),
    Case("svd_data_aware/reduction-unreachable", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), param_reduction=0.99), BudgetError,
         r"param_reduction=0.990 cannot be reached"),
    Case("svd_data_aware/rank-too-large", lambda: data_aware_svd_compress(
        _cnn(), _calib(4, 1, 8, 8), ranks={"3": 1000}), ValueError,
         r"ranks\['3'\] must be an int in \[1, \d+\], got 1000"),
    Case("svd_data_aware/grouped-layer-named",
         lambda: data_aware_svd_compress(_grouped(), _calib(2, 1, 8, 8), ranks={"1": 2}),
         ValueError, r"layers: \['1'\] are grouped/depthwise convolutions"),
    Case("prune/amount-1", lambda: prune_magnitude(_cnn(), amount=1.0), ValueError,
         r"amount must be in \[0, 1\), got 1.0"),
    Case("prune/amount-string", lambda: prune_magnitude(_cnn(), amount="0.5"), TypeError,
         r"amount must be a number in \[0, 1\)"),
    Case("prune/amount-bool", lambda: prune_magnitude(_cnn(), amount=True), TypeError,
         r"amount must be a number"),
    Case("prune/no-option", lambda: prune_magnitude(_cnn()), TypeError,
         _PM + r" amount, param_reduction; got none"),
    Case("prune/two-options", lambda: prune_magnitude(_cnn(), amount=0.5, param_reduction=0.5),
         TypeError, _PM + r" amount, param_reduction"),
    Case("prune/unknown-scope", lambda: prune_magnitude(_cnn(), amount=0.5, scope="local"),
         ValueError, r"scope must be one of \['global', 'layer'\], got 'local'"),
    Case("prune/unknown-layer", lambda: prune_magnitude(_cnn(), amount=0.5, layers=["x"]),
         ValueError, r"layers: \['x'\] are not"),
    Case("prune_channels/reduction-above-1", lambda: prune_channels(_cnn(), param_reduction=1.2),
         ValueError, r"param_reduction must be in \[0, 1\)"),
    Case("prune_channels/amount-negative", lambda: prune_channels(_cnn(), amount=-0.1),
         ValueError, r"amount must be in \[0, 1\)"),
    Case("prune_channels/no-option", lambda: prune_channels(_cnn()), TypeError,
         _PM + r" param_reduction, amount, channels; got none"),
    Case("prune_channels/unknown-layer", lambda: prune_channels(_cnn(), amount=0.3, layers=["x"]),
         ValueError, r"layers: \['x'\] are not"),
    Case("prune_channels/unknown-importance", lambda: prune_channels(
        _cnn(), _calib(4, 1, 8, 8), amount=0.3, importance="L2"), ValueError,
         r"importance must be one of \['fisher', 'activation', 'bn_scale', 'l1'\], got 'L2'"),
    Case("prune_channels/fisher-without-calibration", lambda: prune_channels(
        _cnn(), amount=0.3, importance="fisher"), TypeError,
         r"calibration is required for importance='fisher'"),
    Case("prune_channels/compensate-without-calibration", lambda: prune_channels(
        _cnn(), amount=0.3, compensate=True), TypeError,
         r"calibration is required for compensate=True"),
    Case("prune_channels/compensate-not-a-bool", lambda: prune_channels(
        _cnn(), _calib(4, 1, 8, 8), amount=0.3, compensate="yes"), TypeError,
         r"compensate must be True, False or None, got 'yes'"),
    Case("prune_channels/residual-not-a-bool", lambda: prune_channels(
        _cnn(), amount=0.3, residual=1), TypeError, r"residual must be True or False, got 1"),
    Case("prune_channels/calibration-wrong-channels", lambda: prune_channels(
        _cnn(), _calib(4, 3, 8, 8), amount=0.3), ValueError,
         r"calibration must have shape \(N, 1, H, W\) for this model, got \(4, 3, 8, 8\)"),
    Case("prune_channels/calibration-nan", lambda: prune_channels(
        _cnn(), _calib(4, 1, 8, 8, fill=float("nan")), amount=0.3), ValueError,
         r"calibration contains NaN or infinite values"),
    Case("prune_channels/calibration-wrong-features", lambda: prune_channels(
        _mlp(), _calib(4, 1, 7, 7), amount=0.3), ValueError,
         r"calibration of shape \(4, 1, 7, 7\) does not fit the model"),
    Case("prune_channels/batch-size-zero", lambda: prune_channels(
        _cnn(), _calib(4, 1, 8, 8), amount=0.3, batch_size=0), ValueError,
         r"batch_size must be an int >= 1, got 0"),
    Case("prune_channels/channels-too-many", lambda: prune_channels(_cnn(), channels={"3": 99}),
         ValueError, r"channels\['3'\] must be an int in \[1, 8\], got 99"),
    Case("prune_channels/untraceable-model", lambda: prune_channels(_Untraceable(), amount=0.3),
         TypeError, r"model: structured compression .* needs a model that torch.fx"),
    Case("id/unknown-variant", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8), rtol=0.1, variant="iterative"), ValueError,
         r"variant must be one of \['corrected', 'sequential', 'one_shot'\], got 'iterative'"),
    Case("id/compensate-not-a-bool", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8), rtol=0.1, compensate=None), TypeError,
         r"compensate must be True or False, got None"),
    Case("id/residual-not-a-bool", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8), rtol=0.1, residual="all"), TypeError,
         r"residual must be True or False, got 'all'"),
    Case("id/factors-wrong-type", lambda: interpolative_compress(
        _cnn(), rtol=0.1, factors={"3": 1}), TypeError,
         r"factors must come from interpolative_factors"),
    Case("layers/unknown-default-method", lambda: select_layers(_cnn(), method="prune"),
         ValueError, r"method must be one of \['regularizers', 'svd', 'channels'\], got 'prune'"),
    Case("id/reduction-1", lambda: interpolative_compress(_cnn(), _calib(4, 1, 8, 8),
                                                          param_reduction=1.0),
         ValueError, r"param_reduction must be in \[0, 1\)"),
    Case("id/rtol-string", lambda: interpolative_compress(_cnn(), _calib(4, 1, 8, 8),
                                                          rtol="low"),
         TypeError, r"rtol must be a number in \[0, 1\)"),
    Case("id/calibration-wrong-channels", lambda: interpolative_compress(
        _cnn(), _calib(4, 3, 8, 8), rtol=0.1), ValueError,
         r"calibration must have shape \(N, 1, H, W\) for this model, got \(4, 3, 8, 8\)"),
    Case("id/calibration-wrong-features", lambda: interpolative_compress(
        _mlp(), _calib(4, 1, 7, 7), rtol=0.1), ValueError,
         r"calibration of shape \(4, 1, 7, 7\) does not fit the model"),
    Case("id/calibration-missing", lambda: interpolative_compress(_cnn(), rtol=0.1),
         TypeError, r"calibration is required unless cached factors are passed"),
    Case("id/calibration-list", lambda: interpolative_compress(_cnn(), [[0.0]], rtol=0.1),
         TypeError, r"calibration must be a tensor of inputs \(N, ...\), got list"),
    Case("id/calibration-int", lambda: interpolative_compress(
        _cnn(), torch.zeros(4, 1, 8, 8, dtype=torch.long), rtol=0.1), ValueError,
         r"calibration must be a float tensor"),
    Case("id/calibration-nan", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8, fill=float("nan")), rtol=0.1), ValueError,
         r"calibration contains NaN or infinite values"),
    Case("id/channels-unknown-layer", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8), channels={"nope": 2}),
         ValueError, r"channels: \['nope'\] are not prunable producers; allowed: \['0', '3'"),
    Case("id/channels-too-many", lambda: interpolative_compress(
        _cnn(), _calib(4, 1, 8, 8), channels={"3": 1000}),
         ValueError, r"channels\['3'\] must be an int in \[1, 8\], got 1000"),
    Case("id/no-option", lambda: interpolative_compress(_cnn(), _calib(4, 1, 8, 8)), TypeError,
         _PM + r" param_reduction, rtol, channels; got none"),
    Case("id/two-options", lambda: interpolative_compress(_cnn(), _calib(4, 1, 8, 8),
                                                          rtol=0.1, channels={"3": 2}),
         TypeError, _PM + r" param_reduction, rtol, channels; got \['rtol', 'channels'\]"),
    # --- measuring and sweeping
    Case("measure/unknown-split", lambda: evaluate(_cnn(), _tensors(), split="val"), ValueError,
         r"split must be one of \['train', 'test'\], got 'val'"),
    Case("measure/batch-size-zero", lambda: evaluate(_cnn(), _tensors(), batch_size=0),
         ValueError, r"batch_size must be an int >= 1, got 0"),
    Case("measure/data-wrong-type", lambda: evaluate(_cnn(), "test"), TypeError,
         r"data must be an ImageData or an \(x, y\) tuple, got str"),
    Case("measure/data-channels-differ-from-model", lambda: evaluate(_cnn(), _tensors(c=3)),
         ValueError, r"(data|x).*3 channels.*(model|expects|1)"),
    Case("measure/xy-length-mismatch",
         lambda: evaluate(_cnn(), (torch.randn(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))),
         ValueError, r"data.*\b4\b.*\b3\b"),
    Case("measure/float-labels", lambda: evaluate(_cnn(), (torch.randn(4, 1, 8, 8), torch.zeros(4))),
         TypeError, r"data: y must hold integer class labels"),
    Case("sweep/unknown-method", lambda: _sweep(methods=["svdd"]), ValueError,
         r"methods: \['svdd'\] given; allowed"),
    Case("sweep/reduction-out-of-range", lambda: _sweep(reductions=[0.5, 1.0]), ValueError,
         r"reductions must be in \[0, 1\), got 1.0"),
    Case("sweep/no-models", lambda: _sweep(models={}), TypeError,
         r"models must be a non-empty dict"),
    Case("sweep/calibration-size-zero", lambda: _sweep(calibration_size=0), ValueError,
         r"calibration_size must be an int >= 1, got 0"),
    Case("sweep/compress-unknown-method", lambda: _compress("SVD", 0.5), ValueError,
         r"method must be one of \['svd'"),
    Case("sweep/compress-id-without-calibration", lambda: _compress("interpolative", 0.5),
         TypeError, r"calibration is required for method='interpolative'"),
    Case("sweep/compress-data-aware-without-calibration",
         lambda: _compress("svd_data_aware", 0.5), TypeError,
         r"calibration is required for method='svd_data_aware'"),
    Case("sweep/options-for-a-method-not-swept",
         lambda: _sweep(options={"interpolative": {"keep": {}}}), ValueError,
         r"options: \['interpolative'\] are not among the methods swept"),
    Case("sweep/options-not-a-dict", lambda: _sweep(options={"svd": "sensitivity"}), TypeError,
         r"options must be a dict \{method: \{keyword: value\}\}"),
    # --- notebook parameters (what papermill injects)
    Case("notebook/unknown-parameter", lambda: TrainParams.from_notebook({"widht": 8}),
         ConfigError, r"unknown notebook parameter\(s\) \['widht'\] for 01_train; allowed"),
    Case("notebook/wrong-type", lambda: TrainParams(width="eight"), ConfigError,
         r"notebook parameter 'width' must be int or None, got 'eight' \(str\)"),
    Case("notebook/bool-for-int", lambda: TrainParams(epochs=True), ConfigError,
         r"notebook parameter 'epochs' must be int"),
    Case("notebook/training-field-out-of-range", lambda: TrainParams(epochs=0), ConfigError,
         r"epochs must be an int >= 1"),
    Case("notebook/no-smoothing", lambda: TrainParams(first_order=0.0), ConfigError,
         r"'first_order', 'second_order', 'nuclear': at least one must be > 0"),
    Case("notebook/eval-subset-zero", lambda: TrainParams(eval_subset=0), ConfigError,
         r"'eval_subset' must be None or >= 1"),
    Case("notebook/nan-weight", lambda: TrainParams(nuclear=float("nan")), ConfigError,
         r"'nuclear' must be finite"),
    Case("notebook/max-layers-zero", lambda: SmoothnessParams(max_layers=0), ConfigError,
         r"'max_layers' must be >= 1"),
    Case("notebook/show-layers-empty", lambda: SmoothnessParams(show_layers=[]), ConfigError,
         r"'show_layers' must be None or a non-empty list"),
    Case("notebook/spectra-reduction-1", lambda: SpectraParams(param_reduction=1.0), ConfigError,
         r"'param_reduction' must be in \[0.0, 1.0\)"),
    Case("notebook/unknown-method", lambda: TradeoffParams(methods=["svd", "lowrank"]),
         ConfigError, r"'methods' must be a non-empty list from"),
    Case("notebook/no-reductions", lambda: TradeoffParams(reductions=[]), ConfigError,
         r"'reductions' must be a non-empty list"),
    Case("notebook/methods-as-string", lambda: TradeoffParams(methods="svd"), ConfigError,
         r"'methods' must be list\[str\]"),
    Case("notebook/prune-ratio-1", lambda: ExploreParams(prune_ratio=1.0), ConfigError,
         r"prune_ratio must be a number in \[0, 0.95\] \(the slider's range\)"),
    Case("notebook/explore-reduction-beyond-slider", lambda: ExploreParams(param_reduction=0.97),
         ConfigError, r"param_reduction must be a number in \[0, 0.95\]"),
    Case("notebook/drag-subset-zero", lambda: ExploreParams(drag_subset=0), ConfigError,
         r"'drag_subset' must be >= 1"),
    # --- widgets (their constructor arguments are typed in notebooks too)
    Case("widget/drag-subset-zero", lambda: _widget("RankExplorer", drag_subset=0), ValueError,
         r"drag_subset must be an int >= 1, got 0"),
    Case("widget/data-wrong-type", lambda: _widget("PruneExplorer", data="test"), TypeError,
         r"data must be a smoothviz.data.ImageData, got str"),
    Case("widget/no-models", lambda: _widget("RankExplorer", models={}), TypeError,
         r"models must be an nn.Module or a non-empty mapping"),
    Case("widget/rank-reduction-out-of-range", lambda: _widget("RankExplorer", param_reduction=1.5),
         ValueError, r"param_reduction must be .*got 1.5"),
    Case("widget/prune-reduction-out-of-range",
         lambda: _widget("PruneExplorer", param_reduction=2.0),
         ValueError, r"param_reduction must be .*got 2.0"),
    Case("widget/prune-reduction-string", lambda: _widget("PruneExplorer", param_reduction="half"),
         (TypeError, ValueError), r"param_reduction must be .*got 'half'"),
]  # fmt: skip


if not torch.cuda.is_available():
    BAD_INPUT.append(
        Case("train/cuda-not-available", _train({"device": "cuda:0"}), ConfigError,
             r"device is 'cuda:0' but CUDA is not available here; use 'auto' or 'cpu'")
    )  # fmt: skip


def _sweep(**changes: Any):
    from smoothviz.sweep import sweep

    args = dict(models={"m": _cnn()}, methods=["svd"], reductions=[0.3], data=_tensors(64, 1, 10))
    args.update(changes)
    return sweep(**args, progress=False)


def _compress(method: str, reduction: float):
    from smoothviz.sweep import compress

    return compress(_cnn(), method, reduction)


def _widget(kind: str, **changes: Any):
    from smoothviz import widgets

    args = dict(models=_cnn(), data=_tensors(64, 1, 10), settle_seconds=None)
    args.update(changes)
    return getattr(widgets, kind)(args.pop("models"), args.pop("data"), **args)


# Cases whose check is missing from a module: {id: the fix that is needed} (none at present).
KNOWN_GAPS: dict[str, str] = {}  # case id -> reason, for gaps marked xfail(strict=True)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            c,
            id=c.id,
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[c.id])]
            if c.id in KNOWN_GAPS
            else [],
        )
        for c in BAD_INPUT
    ],
)
def test_bad_input(case: Case, cache_dir):
    """Each bad input raises the expected error naming the parameter, before any work is saved."""
    with pytest.raises(case.exc, match=case.match):
        case.call()
    assert not list(cache_dir.rglob("*.pt")), "a checkpoint was written for bad input"


def test_bad_input_table_covers_every_area(capsys):
    ids = [c.id for c in BAD_INPUT]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    areas = Counter(i.split("/")[0] for i in ids)
    with capsys.disabled():  # list the cases in the test output
        print(f"\n{len(ids)} bad-input cases ({len(KNOWN_GAPS)} known gaps):")
        for area in areas:
            names = [i.split("/", 1)[1] for i in ids if i.split("/")[0] == area]
            print(f"  {area} ({len(names)}): {', '.join(names)}")
    assert len(ids) >= 40
    for area in (
        "cli",
        "train",
        "data",
        "model",
        "layers",
        "svd",
        "svd_data_aware",
        "prune",
        "id",
        "notebook",
        "measure",
        "sweep",
        "widget",
    ):
        assert areas[area] >= 1, area


def test_bad_compression_input_leaves_the_model_untouched():
    model = _cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for case in BAD_INPUT:
        if case.id.split("/")[0] in ("svd", "prune", "prune_channels", "id"):
            with pytest.raises(case.exc):
                case.call()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ============================================================================ the cache never lies
_WORKER = """
import hashlib, json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from smoothviz.config import TrainConfig
from smoothviz.training import train
cfg, ready, go = TrainConfig(**json.loads(sys.argv[1])), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():  # start both trainings at the same instant
    time.sleep(0.005)
run = train(cfg, progress=False)
digest = hashlib.sha256()
for k, v in run.model.state_dict().items():
    digest.update(k.encode()); digest.update(v.detach().cpu().contiguous().numpy().tobytes())
print(json.dumps({"from_cache": run.from_cache, "weights": digest.hexdigest(),
                  "checkpoint": str(run.checkpoint)}))
"""


@pytest.mark.slow
def test_two_processes_asking_for_the_same_config_at_once_train_it_once(cache_dir, tmp_path):
    cfg = TrainConfig(**TINY)
    env = dict(os.environ, SMOOTHVIZ_CACHE=str(cache_dir))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(cfg.to_dict()), str(tmp_path / f"r{i}"),
             str(go)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    deadline = time.time() + 120
    while not all((tmp_path / f"r{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "worker died"
        time.sleep(0.01)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["from_cache"] for r in results) == [False, True], results  # one trained
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["checkpoint"] == results[1]["checkpoint"]
    # The cache holds one complete checkpoint and nothing half-written.
    key = cache_key(cfg)
    files = sorted(p.name for p in (cache_dir / "checkpoints").iterdir() if p.suffix != ".lock")
    assert files == [f"{key}.json", f"{key}.pt"], files  # no partial or temporary file either
    cached = load_cached(cfg, cache_dir)
    assert cached is not None and cached.from_cache


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A cache holding the TINY run, trained once; tests copy it (``cached_tiny``)."""
    path = tmp_path_factory.mktemp("tiny-cache")
    assert not train(TrainConfig(**TINY), cache_dir=path, progress=False).from_cache
    return path


@pytest.fixture()
def cached_tiny(tiny_cache, cache_dir):
    """A private cache (``$SMOOTHVIZ_CACHE``) that already holds the finished TINY run."""
    shutil.copytree(tiny_cache, cache_dir)
    run = train(TrainConfig(**TINY), progress=False)
    assert run.from_cache
    return run


def test_a_checkpoint_of_a_changed_model_definition_is_not_used(
    cached_tiny, cache_dir, monkeypatch
):
    import smoothviz.training as train_module

    cfg, first = TrainConfig(**TINY), cached_tiny  # same code: the cache is used
    monkeypatch.setattr(train_module, "MODEL_CODE_VERSION", "edited-models-py")
    assert load_cached(cfg, cache_dir) is None  # the old checkpoint is not found for new code
    second = train(cfg, progress=False)
    assert not second.from_cache and second.checkpoint != first.checkpoint
    meta = json.loads(second.checkpoint.with_suffix(".json").read_text())
    assert meta["model_code_version"] == "edited-models-py"


def test_a_checkpoint_written_for_another_config_is_refused_and_retrained(cached_tiny, cache_dir):
    cfg = TrainConfig(**TINY)
    sidecar = cached_tiny.checkpoint.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["config"]["lr"] = 0.5  # e.g. a file copied in under the wrong name
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="written for another config"):
        load_cached(cfg, cache_dir)
    with pytest.warns(UserWarning, match="another config; retraining"):
        again = train(cfg, progress=False)
    assert not again.from_cache


def test_weights_without_their_sidecar_are_never_loaded(cached_tiny, cache_dir):
    """The sidecar is written last: weights alone (a crash between the two writes) are not used."""
    cfg = TrainConfig(**TINY)
    cached_tiny.checkpoint.with_suffix(".json").unlink()
    assert load_cached(cfg, cache_dir) is None
    assert not train(cfg, progress=False).from_cache


def test_a_compressed_model_file_carrying_a_pickle_payload_is_refused(tmp_path):
    """load_compressed reads weights only: a payload that would run code on load is refused."""
    from smoothviz.compress import load_compressed, save_compressed

    arch = {"name": "cnn", "in_channels": 1, "num_classes": 10, "width": 4}
    path = save_compressed(svd_compress(_cnn(), ranks=2), tmp_path / "m.pt", arch=arch)
    assert load_compressed(path) is not None
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"0.weight": Payload()}, path)
    with pytest.raises(Exception, match=r"(?i)weights.only|unpickl|unsupported"):
        load_compressed(path)
    assert not marker.exists()
    path.write_bytes(b"\x80\x02garbage")  # truncated / corrupted: an error, never garbage weights
    with pytest.raises(Exception):  # noqa: B017 - torch raises several kinds here
        load_compressed(path)


# ============================================================================ reports
def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), so a test can stop exactly what it started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _report_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "smoothviz", "report", "--out", str(out), *REPORT_TINY, *extra]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def _work_started(executed: Path) -> bool:
    """True once papermill has started a code cell after the notebook's validation cell."""
    try:
        cells = [c for c in json.loads(executed.read_text())["cells"] if c["cell_type"] == "code"]
    except (OSError, ValueError):  # not written yet, or caught mid-write
        return False
    first = next(i for i, c in enumerate(cells) if "from_notebook(" in "".join(c["source"]))
    return any(
        c["metadata"].get("papermill", {}).get("status") in ("running", "completed")
        for c in cells[first + 1 :]
    )


@pytest.mark.slow
def test_a_report_killed_midway_leaves_no_page_claiming_success(tmp_path, cache_dir):
    log = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        # More epochs than the other report tests: the kill must land while the kernel trains.
        _report_cmd(tmp_path / "reports", "-p", "width=8", "-p", "epochs=20"),
        cwd=ROOT, env=dict(os.environ, SMOOTHVIZ_CACHE=str(cache_dir)),
        stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    executed = None
    deadline = time.time() + 180
    try:
        while executed is None or not _work_started(executed):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.time() < deadline, "the notebook never got past its parameters"
            executed = next((tmp_path / "reports").glob("*/00-defaults/01_train.ipynb"), None)
            time.sleep(0.02)
    finally:
        doomed = _descendants(proc.pid)  # the kernel too, not only the report process
        proc.send_signal(signal.SIGKILL)
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert doomed, "the notebook's kernel should have been running"
    run_dir = executed.parent.parent
    page = (run_dir / "index.html").read_text()
    assert page.rstrip().endswith("</html>")  # complete (written atomically), and says so:
    assert 'data-state="running"' in page and "incomplete (or interrupted)" in page
    assert "SUCCEEDED" not in page and 'data-state="succeeded"' not in page
    assert json.loads((run_dir / "report.json").read_text())["state"] == "running"
    assert not (run_dir / "00-defaults" / "01_train.html").exists()  # no half-rendered output


@pytest.mark.slow
def test_two_reports_at_once_with_different_parameters_finish_separately(tmp_path, cache_dir):
    env = dict(os.environ, SMOOTHVIZ_CACHE=str(cache_dir))
    widths = (8, 12)
    procs = [
        subprocess.Popen(
            _report_cmd(tmp_path / "reports", "-p", f"width={w}"), cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in widths
    ]  # fmt: skip
    indexes = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        indexes.append(Path(out.strip().splitlines()[-1]))
    assert indexes[0].parent != indexes[1].parent
    for index, width in zip(indexes, widths):
        page = index.read_text()
        assert 'data-state="succeeded"' in page and "SUCCEEDED" in page
        record = json.loads((index.parent / "report.json").read_text())
        assert record["state"] == "succeeded" and record["overrides"]["width"] == width
        assert record["points"][0]["parameters"]["width"] == width
        # The executed notebook ran with its own parameters and trained its own models.
        executed = json.loads((index.parent / "00-defaults" / "01_train.ipynb").read_text())
        injected = next(
            c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
        )
        assert f"width = {width}" in "".join(injected["source"])
        outputs = json.dumps([c.get("outputs", []) for c in executed["cells"]])
        assert f"width={width}," in outputs  # the kernel's validated params, as it printed them
        assert (index.parent / "00-defaults" / "01_train.html").stat().st_size > 0
    # Both trainings of both widths are in the shared cache, complete.
    assert len(list((cache_dir / "checkpoints").glob("*.json"))) == 4
    assert not list((cache_dir / "checkpoints").glob("*.partial.pt"))


@pytest.mark.slow
def test_a_report_escapes_user_given_strings(tmp_path, cache_dir, capsys):
    """A hostile model name passes validation (torchvision:<anything>), fails inside the notebook,
    and reaches the page in the parameters, the command line and the error: always escaped."""
    hostile = "torchvision:<script>alert(1)</script>"
    code = main(["report", "--out", str(tmp_path), *REPORT_TINY, "-p", f"model={hostile}"])
    captured = capsys.readouterr()
    assert code == 1, captured.err  # the notebook failed, and the run says so
    index = Path(captured.out.strip().splitlines()[-1])
    page = index.read_text()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'data-state="failed"' in page
    notebook_html = (index.parent / "00-defaults" / "01_train.html").read_text()
    assert "<script>alert(1)" not in notebook_html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in notebook_html  # shown, escaped
