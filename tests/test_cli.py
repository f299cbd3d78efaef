"""The command line: documented options, clean errors, a real training run."""

import subprocess
import sys

import pytest

from smoothviz.cli import main
from smoothviz.config import TrainConfig


def test_every_config_field_is_a_documented_train_option(capsys):
    try:
        main(["train", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    docs = TrainConfig.field_help()
    for name in TrainConfig.field_names():
        assert "--" + name.replace("_", "-") in out, name
        assert docs.get(name), f"{name} has no help text"


def test_bad_value_exits_2_with_a_one_line_message_and_no_traceback(capsys):
    assert main(["train", "--epochs", "0"]) == 2
    err = capsys.readouterr().err
    assert "epochs must be an int >= 1" in err and "Traceback" not in err


@pytest.mark.slow
def test_train_command_runs_and_the_second_call_uses_the_cache(cache_dir):
    cmd = [
        sys.executable,
        "-m",
        "smoothviz",
        "train",
        "--model",
        "mlp",
        "--width",
        "16",
        "--epochs",
        "1",
        "--train-subset",
        "500",
        "--batch-size",
        "64",
        "--quiet",
        "--cache-dir",
        str(cache_dir),
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "test_acc" in first.stdout
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "(from cache)" in second.stdout
