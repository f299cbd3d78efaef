"""Independent pieces of smoothviz work (report grid points, per-model sweeps) on a Dask cluster.

`dask.distributed <https://distributed.dask.org>`_ is the engine: a :class:`~distributed.LocalCluster`
of worker processes on this machine (``workers=N``), or any running cluster reached through its
scheduler's address (``scheduler="tcp://host:8786"`` or ``$SMOOTHVIZ_SCHEDULER``), whether started
by ``dask scheduler``/``dask worker``, dask-jobqueue on Slurm or dask-kubernetes. Nothing here
schedules, retries or moves data by itself; it only says what to run:

- each distinct training config is one task, keyed by its checkpoint-cache key, that the tasks
  needing it depend on, so a config shared by many grid points trains once while the workers run
  other configs; two tasks that still reach the same config meet at the cache's file lock, and the
  second loads the first's checkpoint;
- a task that raises is re-run by Dask (``retries=``); a task whose worker process dies is
  rescheduled on another worker by the scheduler (up to its ``allowed-failures``); a task that
  still fails marks its own grid point or training failed and the others go on;
- progress: a tqdm bar over finished tasks, and the Dask dashboard's link.

Workers must see the same files as the client (the report folder, the checkpoint cache, the
datasets) and have smoothviz installed: on one machine that is automatic; on a cluster use a
shared filesystem and the same environment.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from smoothviz._validation import check_int
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.errors import error_text

if TYPE_CHECKING:
    from distributed import Client, Future

    from smoothviz.data import ImageData

SCHEDULER_ENV = "SMOOTHVIZ_SCHEDULER"
# Re-runs of a task that raised. A notebook's or a sweep's own failure is caught inside the task
# and reported, so what is retried is the unexpected (an I/O error, a worker out of memory).
RETRIES = 2
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ClusterRequest:
    """Where to run: a new local cluster of ``workers`` processes, or an existing ``scheduler``."""

    workers: int | None = None
    scheduler: str | None = None

    def describe(self) -> str:
        if self.scheduler is not None:
            return f"Dask cluster at {self.scheduler}"
        return f"Dask local cluster of {self.workers} worker process(es)"


def resolve(workers: int | None = None, scheduler: str | None = None) -> ClusterRequest | None:
    """Validate the options; None means run serially in this process.

    Giving both is an error. Without either, ``$SMOOTHVIZ_SCHEDULER`` (when set and not empty)
    names the scheduler.

    Raises
    ------
    ConfigError
        For ``workers`` that is not an int >= 1, both options at once, or an address that is not
        ``[protocol://]host:port``.
    """
    workers = check_int("workers", workers, low=1, allow_none=True, error=ConfigError)
    if workers is not None and scheduler is not None:
        raise ConfigError(
            "give either workers (a new local cluster) or scheduler (an existing one), not both"
        )
    if workers is not None:
        return ClusterRequest(workers=workers)
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
        source = f"${SCHEDULER_ENV}"
    else:
        source = "scheduler"
    if scheduler is None:
        return None
    if not isinstance(scheduler, str) or not _looks_like_address(scheduler):
        raise ConfigError(
            f"{source} must be a Dask scheduler address such as tcp://host:8786, got {scheduler!r}"
        )
    return ClusterRequest(scheduler=scheduler)


def _looks_like_address(text: str) -> bool:
    rest = text.split("://", 1)[1] if "://" in text else text
    host, sep, port = rest.rpartition(":")
    return bool(host) and bool(sep) and port.isdigit()


def torch_threads_per_worker(workers: int, cores: int | None = None) -> int:
    """CPU threads for torch in each of ``workers`` processes: the cores shared out, at least 1.

    One worker process per point, each with one task thread, and its cores for torch: on a 2-core
    machine with 2 workers that is 1 torch thread each (more would oversubscribe the cores).
    """
    return max(1, (cores or os.cpu_count() or 1) // workers)


@contextmanager
def connect(
    request: ClusterRequest, *, log: TextIO | None = sys.stderr, timeout: float = 10.0
) -> Iterator[Client]:
    """A Dask client for ``request``; a local cluster started here is shut down on exit.

    Prints where the work goes and the dashboard's link (or why there is none) to ``log``.

    Raises
    ------
    ConfigError
        When the scheduler cannot be reached within ``timeout`` seconds.
    """
    import logging

    from distributed import Client, LocalCluster

    cluster = None
    if request.scheduler is not None:
        try:
            client = Client(request.scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(
                f"could not reach the Dask scheduler at {request.scheduler!r} (from --scheduler "
                f"or ${SCHEDULER_ENV}): {exc}"
            ) from exc
        _log(log, f"smoothviz: sending work to the {request.describe()}")
    else:
        threads = torch_threads_per_worker(request.workers)
        cluster = LocalCluster(
            n_workers=request.workers,
            threads_per_worker=1,  # one point (one notebook kernel, one training) per process
            processes=True,
            dashboard_address=":0",  # any free port: several clusters may share a machine
            # Dask's warnings (e.g. a slow worker exit at shutdown) would break the progress bar.
            silence_logs=logging.ERROR,
            env={name: str(threads) for name in _THREAD_VARIABLES},
        )
        client = Client(cluster)
        _log(
            log,
            f"smoothviz: {request.describe()} (1 task at a time each, torch using {threads} "
            "CPU thread(s) per worker)",
        )
    try:
        _log(log, dashboard_message(client))
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def dashboard_message(client: Client) -> str:
    """The dashboard's link, or why there is none (it needs bokeh where the scheduler runs)."""
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        return f"smoothviz: Dask dashboard: {client.dashboard_link}"
    return (
        "smoothviz: Dask dashboard unavailable (the scheduler has no bokeh>=3.1 installed); "
        "progress is shown here only"
    )


def _log(log: TextIO | None, text: str) -> None:
    if log is not None:
        print(text, file=log, flush=True)


def as_completed_with_progress(
    futures: Sequence[Future], *, desc: str, unit: str = "task", log: TextIO | None = sys.stderr
) -> Iterator[Future]:
    """The futures in the order they finish, with a tqdm bar on ``log`` (None: no bar)."""
    from distributed import as_completed

    with tqdm(total=len(futures), desc=desc, unit=unit, file=log, disable=log is None) as bar:
        for future in as_completed(futures):
            bar.update()
            yield future


# --------------------------------------------------------------------------- trainings
def _train_task(cfg: TrainConfig) -> str | None:
    """Train ``cfg`` into the worker's checkpoint cache; the error text if that failed."""
    from smoothviz.training import train

    try:
        train(cfg, progress=False)
    except Exception as exc:  # the tasks that need it re-raise it in context, with their notes
        return error_text(exc)
    return None


def submit_trainings(client: Client, configs: Sequence[TrainConfig]) -> dict[TrainConfig, Future]:
    """One task per distinct config (keyed by its cache key), trained into the workers' cache.

    The futures resolve to None, or to the error text of a training that failed; they exist so that
    the tasks needing a training can depend on it.
    """
    from smoothviz.training import cache_key

    out: dict[TrainConfig, Future] = {}
    for cfg in configs:
        if cfg not in out:
            out[cfg] = client.submit(
                _train_task, cfg, key=f"smoothviz-train-{cache_key(cfg)}", retries=RETRIES
            )
    return out


# --------------------------------------------------------------------------- sweeps
Source = nn.Module | TrainConfig


def _sweep_task(
    name: str,
    source: Source,
    data: ImageData,
    methods: Sequence[str],
    reductions: Sequence[float],
    options: Mapping[str, Any],
    _training: Any = None,
) -> pd.DataFrame:
    from smoothviz.sweep import sweep
    from smoothviz.training import train

    try:
        model = train(source, progress=False).model if isinstance(source, TrainConfig) else source
        return sweep({name: model}, methods, reductions, data, progress=False, **options)
    except Exception as exc:  # this training's own failure: its rows say why, no retry
        return _failed_rows(name, methods, reductions, error_text(exc))


def _failed_rows(
    name: str, methods: Sequence[str], reductions: Sequence[float], error: str
) -> pd.DataFrame:
    from smoothviz.sweep import COLUMNS

    rows = [
        {"training": name, "method": m, "target_reduction": r, "error": error}
        for m in methods
        for r in reductions
    ]
    return pd.DataFrame(rows).reindex(columns=COLUMNS)


def sweep_on_cluster(
    trainings: Mapping[str, Source],
    methods: Sequence[str],
    reductions: Sequence[float],
    data: ImageData,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    log: TextIO | None = sys.stderr,
    on_result: Callable[[str, pd.DataFrame], None] | None = None,
    **sweep_options: Any,
) -> pd.DataFrame:
    """:func:`smoothviz.sweep.sweep` with one Dask task per training; the same table out.

    Parameters
    ----------
    trainings
        ``{training name: model or TrainConfig}``. A :class:`~smoothviz.config.TrainConfig` is
        trained (or loaded from the checkpoint cache) on a worker, so nothing large travels; a
        model is sent as it is (on its device).
    methods, reductions, data
        As in :func:`~smoothviz.sweep.sweep`; ``data`` is sent once to every worker.
    workers, scheduler
        A new local cluster of ``workers`` processes, or an existing cluster's scheduler address
        (default ``$SMOOTHVIZ_SCHEDULER``); ignored when ``client`` is given.
    client
        A :class:`distributed.Client` you already hold.
    log
        Where the progress bar and the dashboard link go (None: nowhere).
    on_result
        Called with ``(training name, its rows)`` as each training's task ends, in the order they
        end, so a caller can keep each result at once (a run stopped later loses none of them).
    **sweep_options
        Passed to :func:`~smoothviz.sweep.sweep` (``bn_reestimate``, ``seed``, ``layers``, ...).

    Returns
    -------
    pandas.DataFrame
        The rows of every training, in the order of ``trainings``, with the columns of
        :data:`smoothviz.sweep.COLUMNS`. A training whose task failed (its training diverged, its
        worker died more often than the scheduler allows, ...) gets one row per (method, target)
        with the reason in ``error``; the other trainings are unaffected.

    Raises
    ------
    ConfigError, ValueError, TypeError
        For bad arguments, before any work is sent.
    """
    from smoothviz.compress import METHODS
    from smoothviz.compress.budget import check_reduction
    from smoothviz.data import ImageData

    if not isinstance(trainings, Mapping) or not trainings:
        raise TypeError("trainings must be a non-empty dict {name: nn.Module or TrainConfig}")
    bad = {
        k: type(v).__name__
        for k, v in trainings.items()
        if not isinstance(v, (nn.Module, TrainConfig))
    }
    if bad:
        raise TypeError(f"trainings values must be nn.Module or TrainConfig, got {bad}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods: {unknown or 'none'} given; allowed: {list(METHODS)}")
    reductions = [check_reduction(r, "reductions") for r in reductions]
    if not isinstance(data, ImageData):
        raise TypeError(f"data must be an ImageData, got {type(data).__name__}")
    if "progress" in sweep_options:
        raise TypeError("progress is not a sweep_on_cluster option; pass log=None for no bar")
    if on_result is not None and not callable(on_result):
        raise TypeError(f"on_result must be a callable or None, got {on_result!r}")
    args = (trainings, methods, reductions, data, log, sweep_options, on_result)
    if client is not None:
        return _sweep(client, *args)
    request = resolve(workers, scheduler)
    if request is None:
        raise ConfigError(
            f"sweep_on_cluster needs workers=N, scheduler='tcp://host:port' or ${SCHEDULER_ENV}; "
            "for a serial sweep use smoothviz.sweep.sweep"
        )
    with connect(request, log=log) as new_client:
        return _sweep(new_client, *args)


def _sweep(client, trainings, methods, reductions, data, log, options, on_result) -> pd.DataFrame:
    configs = [s for s in trainings.values() if isinstance(s, TrainConfig)]
    trained = submit_trainings(client, configs)
    shared_data = client.scatter(data, broadcast=True)
    futures = {}
    for name, source in trainings.items():
        futures[name] = client.submit(
            _sweep_task,
            name,
            source,
            shared_data,
            list(methods),
            list(reductions),
            dict(options),
            trained.get(source) if isinstance(source, TrainConfig) else None,
            key=f"smoothviz-sweep-{uuid.uuid4().hex}",
            retries=RETRIES,
        )
    names = {f.key: n for n, f in futures.items()}
    frames: dict[str, pd.DataFrame] = {}
    for future in as_completed_with_progress(
        list(futures.values()), desc="sweep", unit="training", log=log
    ):
        name = names[future.key]
        try:
            frames[name] = future.result()
        except Exception as exc:
            frames[name] = _failed_rows(name, methods, reductions, error_text(exc))
        if on_result is not None:
            on_result(name, frames[name])
    return pd.concat([frames[n] for n in trainings], ignore_index=True)
