"""Data-parallel training under torchrun (2 gloo processes on the CPU): the same training as one
process, one writer, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smoothviz import ddp
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.training import cache_key, train

ROOT = Path(__file__).resolve().parent.parent
# The regulariser is on so that its scaling under DDP is checked too.
CFG = TrainConfig(
    model="mlp",
    width=32,
    epochs=3,
    train_subset=1024,
    batch_size=64,
    first_order=0.05,
    device="cpu",
)
CLI_ARGS = [
    "train",
    "--model=mlp",
    "--width=32",
    "--epochs=3",
    "--train-subset=1024",
    "--batch-size=64",
    "--first-order=0.05",
    "--device=cpu",
    "--quiet",
]
# Runs `python -m smoothviz` (smoothviz.cli.main) with every atomic write logged per rank; with
# PROBE_EXIT_AFTER_PARTIALS=k, rank 0 dies (os._exit) right after its k-th partial checkpoint,
# as a killed job would.
PROBE = """
import os, sys
import smoothviz.atomic as atomic

rank = os.environ["RANK"]
log = open(os.path.join(os.environ["PROBE_DIR"], f"writes-rank{rank}.txt"), "a")
exit_after = int(os.environ.get("PROBE_EXIT_AFTER_PARTIALS", "0"))
partials = 0
original = atomic.atomic_write

def recording(path, write):
    global partials
    out = original(path, write)
    log.write(f"{path}\\n")
    log.flush()
    partials += str(path).endswith(".partial.pt")
    if exit_after and partials == exit_after:
        os._exit(17)
    return out

atomic.atomic_write = recording
from smoothviz.cli import main
sys.exit(main())
"""


def _torchrun(tmp: Path, cache: Path, args: list[str], **env: str) -> subprocess.CompletedProcess:
    (tmp / "ddp_probe.py").write_text(PROBE)
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = (
        [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    )
    cmd = [*launcher, "--standalone", "--nproc_per_node=2", "-m", "ddp_probe", *args]
    cmd += ["--cache-dir", str(cache)]
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "PROBE_DIR": str(tmp),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def _weights(cache: Path, key: str) -> dict[str, torch.Tensor]:
    return torch.load(cache / "checkpoints" / f"{key}.pt", weights_only=True)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """One uninterrupted 2-process run of CFG: (folder, cache, completed process)."""
    tmp = tmp_path_factory.mktemp("ddp")
    cache = tmp / "cache"
    out = _torchrun(tmp, cache, CLI_ARGS)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, cache, out


@pytest.mark.slow
def test_two_process_training_equals_the_single_process_one_and_rank0_alone_writes(ddp_run):
    tmp, cache, out = ddp_run
    key = cache_key(CFG)  # an mlp has no BatchNorm: the single-process cache entry
    single = train(CFG, use_cache=False, progress=False)
    ddp_weights = _weights(cache, key)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # Not trivially equal: both learned (ten classes, chance is 0.1).
    assert single.history.test_acc.iloc[-1] > 0.25
    sidecar = json.loads((cache / "checkpoints" / f"{key}.json").read_text())
    assert sidecar["data_parallel"] == {"world_size": 2, "backend": "gloo", "batchnorm": "none"}
    assert [round(v, 4) for v in single.history.test_acc] == [
        round(r["test_acc"], 4) for r in sidecar["history"]
    ]
    # Rank 0 wrote one partial per epoch, then the weights and the sidecar; rank 1 wrote nothing.
    rank0 = (tmp / "writes-rank0.txt").read_text().split()
    assert [Path(p).name for p in rank0] == [f"{key}.partial.pt"] * 3 + [f"{key}.pt", f"{key}.json"]
    assert not (tmp / "writes-rank1.txt").read_text().strip()
    assert sorted(p.name for p in (cache / "checkpoints").iterdir()) == sorted(
        [f"{key}.pt", f"{key}.json", f"{key}.lock"]
    )
    assert out.stdout.count("checkpoint:") == 1  # rank 0 alone reports


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_identical_weights(ddp_run, tmp_path):
    _, reference_cache, _ = ddp_run
    key = cache_key(CFG)
    killed = _torchrun(tmp_path, tmp_path / "cache", CLI_ARGS, PROBE_EXIT_AFTER_PARTIALS="1")
    assert killed.returncode != 0
    partial = tmp_path / "cache" / "checkpoints" / f"{key}.partial.pt"
    assert partial.is_file() and not partial.with_name(f"{key}.json").exists()
    first_epoch_seconds = torch.load(partial, weights_only=True)["history"][0]["seconds"]
    resumed = _torchrun(tmp_path, tmp_path / "cache", CLI_ARGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    sidecar = json.loads((tmp_path / "cache" / "checkpoints" / f"{key}.json").read_text())
    assert len(sidecar["history"]) == 3
    assert sidecar["history"][0]["seconds"] == pytest.approx(
        first_epoch_seconds
    )  # kept, not redone
    # Same seed, same world size: the same weights, bit for bit, as the uninterrupted run.
    for name, value in _weights(reference_cache, key).items():
        assert torch.equal(_weights(tmp_path / "cache", key)[name], value), name
    assert not partial.exists()


@pytest.mark.slow
def test_a_batchnorm_model_on_cpu_trains_with_per_rank_statistics_under_its_own_key(tmp_path):
    args = ["train", "--model=cnn", "--width=8", "--epochs=1", "--train-subset=512"]
    out = _torchrun(tmp_path, tmp_path / "cache", [*args, "--batch-size=64", "--device=cpu"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SyncBatchNorm needs GPUs" in out.stderr
    cfg = TrainConfig(model="cnn", width=8, epochs=1, train_subset=512, batch_size=64, device="cpu")
    sidecars = list((tmp_path / "cache" / "checkpoints").glob("*.json"))
    assert len(sidecars) == 1 and sidecars[0].stem != cache_key(cfg)  # not the single-process entry
    meta = json.loads(sidecars[0].read_text())
    assert meta["data_parallel"]["batchnorm"] == "per-rank"
    assert sidecars[0].stem == cache_key(cfg, suffix="ddp-per-rank-batchnorm-2")


def test_the_global_batch_must_split_evenly_over_the_processes():
    ddp.check_batch_size(64, 2)
    with pytest.raises(ConfigError, match=r"batch_size is 63.*multiple of the world size"):
        ddp.check_batch_size(63, 2)


def test_a_single_process_keeps_its_cache_key_and_never_joins_a_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert ddp.setup(torch.device("cpu")) is None
    assert cache_key(CFG) == cache_key(CFG, suffix=None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="torchrun"):
        ddp.setup(torch.device("cpu"))
