"""Grid points and sweeps on a real Dask cluster (LocalCluster worker processes on this machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from smoothviz import distributed, report
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.training import cache_key

pytest.importorskip("distributed")  # a declared dependency: absent only in a broken install
from distributed import Client, LocalCluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Two small mlp trainings per point (baseline and smooth), one notebook: seconds per point. The
# embedded subset, named, so the run is the same whether or not the full Fashion-MNIST is installed.
POINT_PARAMETERS = {
    "dataset": "fashion-mnist-mini",
    "model": "mlp",
    "width": 16,
    "epochs": 1,
    "eval_subset": 200,
}
# The third point asks for more training images than the dataset has: it passes the up-front
# checks (which do not load data) and fails when its notebook validates it against the data.
GRID = {"train_subset": [600, 700, 999_999]}


def _cli_args(out: Path) -> list[str]:
    args = ["report", "--out", str(out), "--notebooks", "01_train"]
    for name, value in POINT_PARAMETERS.items():
        args += ["-p", f"{name}={value}"]
    return args + ["--grid", "train_subset=" + ",".join(map(str, GRID["train_subset"]))]


def _sidecars(cache: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (cache / "checkpoints").glob("*.json")}


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The same grid run serially here and on a 2-worker LocalCluster through the CLI."""
    tmp = tmp_path_factory.mktemp("grid")
    saved = {k: os.environ.get(k) for k in ("SMOOTHVIZ_CACHE", "OMP_NUM_THREADS")}
    # The serial kernels get one torch thread, as each worker's do on 2 cores: same float sums.
    os.environ.update(SMOOTHVIZ_CACHE=str(tmp / "cache-serial"), OMP_NUM_THREADS="1")
    try:
        serial = report.run_report(
            parameters=POINT_PARAMETERS, grid=GRID, notebooks=["01_train"], out_dir=tmp, log=None
        )
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    env = {**os.environ, "SMOOTHVIZ_CACHE": str(tmp / "cache-dask")}
    env.pop(distributed.SCHEDULER_ENV, None)
    t0 = time.perf_counter()
    cli = subprocess.run(
        [sys.executable, "-m", "smoothviz", *_cli_args(tmp / "dask"), "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - t0
    index = Path(cli.stdout.strip().splitlines()[-1])
    return serial, cli, json.loads((index.parent / "report.json").read_text()), tmp, seconds


@pytest.mark.slow
def test_a_grid_on_two_workers_gives_the_serial_runs_results(grid_runs):
    serial, cli, parallel, tmp, _ = grid_runs
    assert [p["status"] for p in parallel["points"]] == [p.status for p in serial.points]
    assert parallel["execution"].startswith("dask: tcp://")
    serial_cache, dask_cache = _sidecars(tmp / "cache-serial"), _sidecars(tmp / "cache-dask")
    compared = 0
    for point in serial.points:
        if point.status != "ok":
            continue
        for cfg in point.training_configs():
            a, b = serial_cache[cache_key(cfg)], dask_cache[cache_key(cfg)]
            assert a["weights_sha256"] == b["weights_sha256"], point.folder
            assert [r["test_acc"] for r in a["history"]] == [r["test_acc"] for r in b["history"]]
            compared += 1
    assert compared == 4  # two ok points, two trainings each


@pytest.mark.slow
def test_a_point_whose_parameters_fail_validation_fails_alone(grid_runs):
    _, cli, parallel, tmp, _ = grid_runs
    assert cli.returncode == 1
    status = {p["folder"]: p["status"] for p in parallel["points"]}
    assert status == {
        "00-train_subset-600": "ok",
        "01-train_subset-700": "ok",
        "02-train_subset-999999": "failed",
    }
    error = parallel["points"][2]["notebooks"][0]["error"]
    assert "train_subset is 999999 but the training split has only 10000 images" in error
    assert parallel["state"] == "failed"
    # Its partial notebook is kept and linked, as in a serial run.
    assert (Path(parallel["points"][2]["notebooks"][0]["html"]).name) == "01_train.html"


@pytest.mark.slow
def test_the_cli_shows_the_dashboard_link_and_a_bar_over_points(grid_runs):
    _, cli, _, _, _ = grid_runs
    assert "Dask local cluster of 2 worker process(es)" in cli.stderr
    assert "1 CPU thread(s) per worker" in cli.stderr or os.cpu_count() > 2
    assert "Dask dashboard: http://" in cli.stderr
    assert "grid points: 100%" in cli.stderr and "3/3" in cli.stderr


# --------------------------------------------------------------------------- a worker dies
@pytest.mark.slow
def test_killing_a_worker_during_a_point_still_ends_with_every_point_done(tmp_path):
    env = {"SMOOTHVIZ_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", env=env, silence_logs=40
    )
    client = Client(cluster)
    try:
        pids = client.run(os.getpid)
        outcome: dict = {}
        grid = {"train_subset": [600, 700, 800]}

        def run() -> None:
            outcome["result"] = report.run_report(
                parameters=POINT_PARAMETERS,
                grid=grid,
                notebooks=["01_train"],
                out_dir=tmp_path,
                run_id="killed",
                scheduler=cluster.scheduler_address,
                log=None,
            )

        thread = threading.Thread(target=run)
        thread.start()
        run_dir, killed = tmp_path / "killed", None
        deadline = time.time() + 300
        while thread.is_alive() and time.time() < deadline:
            if (run_dir / "index.html").exists():  # only once every point has ended
                state = json.loads((run_dir / "report.json").read_text())["state"]
                assert state in ("succeeded", "failed")
            if killed is None:
                for worker, keys in client.processing().items():
                    started = [
                        k
                        for k in keys
                        if str(k).startswith("smoothviz-point-")
                        and (run_dir / str(k).rsplit("-killed-", 1)[1]).is_dir()
                    ]
                    if started:
                        killed = (worker, pids[worker], started)
                        os.kill(pids[worker], signal.SIGKILL)
                        break
            time.sleep(0.05)
        thread.join(timeout=5)
        assert killed is not None, "no point was seen running"
        result = outcome["result"]
        assert [p.status for p in result.points] == ["ok", "ok", "ok"], [
            (p.folder, [nb.error for nb in p.notebooks]) for p in result.points
        ]
        assert result.ok and (run_dir / "index.html").is_file()
        # The worker really died (its nanny started a new process in its place).
        assert killed[1] not in client.run(os.getpid).values()
    finally:
        client.close()
        cluster.close()


# --------------------------------------------------------------------------- shared configs, sweeps
@pytest.fixture(scope="module")
def cluster_client(tmp_path_factory):
    """Two worker processes with their own checkpoint cache (never the user's)."""
    cache = tmp_path_factory.mktemp("cluster-cache")
    env = {"SMOOTHVIZ_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=":0", env=env, silence_logs=40
    )
    client = Client(cluster)
    yield client, cache
    client.close()
    cluster.close()


@pytest.mark.slow
def test_two_workers_asked_for_the_same_config_train_it_once(cluster_client, tmp_path):
    client, _ = cluster_client
    cfg = TrainConfig(model="mlp", width=64, epochs=2, train_subset=4000, batch_size=64)

    def train_and_time(cfg, cache):
        from smoothviz.training import train

        t0 = time.time()
        run = train(cfg, cache_dir=cache, progress=False)
        return run.from_cache, t0, time.time(), os.getpid()

    workers = list(client.scheduler_info()["workers"])
    futures = [
        client.submit(train_and_time, cfg, tmp_path, workers=[w], pure=False) for w in workers
    ]
    (cached_a, start_a, end_a, pid_a), (cached_b, start_b, end_b, pid_b) = client.gather(futures)
    assert pid_a != pid_b  # two processes
    assert sorted([cached_a, cached_b]) == [False, True]  # one trained, the other loaded
    assert max(start_a, start_b) < min(end_a, end_b)  # they ran at the same time: the lock decided
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 1


@pytest.mark.slow
def test_sweep_on_a_cluster_gives_the_serial_sweeps_rows(cluster_client, mini_data, trained_cnn):
    from smoothviz.sweep import sweep
    from smoothviz.training import train

    client, cache = cluster_client
    mlp = TrainConfig(model="mlp", width=32, epochs=1, train_subset=1000, device="cpu")
    broken = mlp.replace(train_subset=999_999)
    methods, reductions = ["svd", "prune_magnitude"], [0.05, 0.3]
    options = dict(bn_reestimate=False, latency_repeats=1, calibration_size=64)
    ended: list[tuple[str, pd.DataFrame]] = []
    table = distributed.sweep_on_cluster(
        {"mlp": mlp, "cnn": trained_cnn, "broken": broken},
        methods,
        reductions,
        mini_data,
        client=client,
        log=None,
        on_result=lambda name, rows: ended.append((name, rows)),
        **options,
    )
    assert list(table.training.unique()) == ["mlp", "cnn", "broken"]
    # each training's rows were handed over once, as its task ended, and are the table's rows
    assert sorted(name for name, _ in ended) == ["broken", "cnn", "mlp"]
    for name, rows in ended:
        pd.testing.assert_frame_equal(
            rows.reset_index(drop=True),
            table[table.training == name].reset_index(drop=True),
            check_dtype=False,  # a failed training's all-NaN columns are float before the concat
        )
    bad = table[table.training == "broken"]
    assert len(bad) == 4 and bad.error.str.contains("train_subset is 999999").all()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' count: the same float sums
    try:
        models = {"mlp": train(mlp, cache_dir=cache, progress=False).model, "cnn": trained_cnn}
        serial = sweep(models, methods, reductions, mini_data, progress=False, **options)
    finally:
        torch.set_num_threads(threads)
    good = table[table.training != "broken"].reset_index(drop=True)
    columns = ["training", "method", "target_reduction", "params", "flops", "test_acc"]
    pd.testing.assert_frame_equal(good[columns], serial[columns], check_dtype=False)
    errors = [[e if isinstance(e, str) else None for e in t.error] for t in (good, serial)]
    assert errors[0] == errors[1]
    assert good.test_acc.notna().sum() >= 4  # most targets were reachable and measured


# --------------------------------------------------------------------------- options
def test_cluster_options_are_validated_before_any_work(monkeypatch, tmp_path):
    monkeypatch.delenv(distributed.SCHEDULER_ENV, raising=False)
    assert distributed.resolve() is None
    assert distributed.resolve(workers=2) == distributed.ClusterRequest(workers=2)
    monkeypatch.setenv(distributed.SCHEDULER_ENV, "tcp://10.0.0.1:8786")
    assert distributed.resolve().scheduler == "tcp://10.0.0.1:8786"
    assert distributed.resolve(workers=3).workers == 3  # an explicit option wins over the env
    for kwargs, message in [
        ({"workers": 0}, "workers must be"),
        ({"workers": True}, "workers must be"),
        ({"workers": 2, "scheduler": "tcp://h:1"}, "not both"),
        ({"scheduler": "tcp://nohost"}, "scheduler address"),
    ]:
        with pytest.raises(ConfigError, match=message):
            distributed.resolve(**kwargs)
    monkeypatch.setenv(distributed.SCHEDULER_ENV, "localhost")
    with pytest.raises(ConfigError, match=r"\$SMOOTHVIZ_SCHEDULER"):
        distributed.resolve()
    assert distributed.torch_threads_per_worker(2, cores=2) == 1
    assert distributed.torch_threads_per_worker(4, cores=16) == 4
    assert distributed.torch_threads_per_worker(8, cores=2) == 1
    # Through the CLI: exit 2, one line, no run folder.
    from smoothviz.cli import main

    monkeypatch.delenv(distributed.SCHEDULER_ENV)
    assert main(["report", "--out", str(tmp_path / "r"), "--workers", "0"]) == 2
    assert not (tmp_path / "r").exists()


def test_without_bokeh_at_the_scheduler_the_dashboard_is_said_to_be_unavailable():
    no_dashboard = SimpleNamespace(scheduler_info=lambda: {"services": {}}, dashboard_link=None)
    assert "dashboard unavailable" in distributed.dashboard_message(no_dashboard)
    with_dashboard = SimpleNamespace(
        scheduler_info=lambda: {"services": {"dashboard": 8787}},
        dashboard_link="http://h:8787/status",
    )
    assert distributed.dashboard_message(with_dashboard).endswith("http://h:8787/status")


@pytest.mark.slow  # a Dask client waits out its 2 s connection timeout
def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    request = distributed.ClusterRequest(scheduler="tcp://127.0.0.1:9")
    with pytest.raises(ConfigError, match="could not reach the Dask scheduler"):
        with distributed.connect(request, log=None, timeout=2):
            pass
