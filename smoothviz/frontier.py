"""The trained-small frontier: the same architecture trained from scratch at narrower widths.

A compressed model has two references: its own uncompressed accuracy, and the same architecture
trained from scratch, with the same recipe, at the same parameter count. The second answers the
question every compression result is asked: would simply training a smaller network have done as
well?

- :func:`reference_frontier` trains the configuration at narrower widths (every other field
  unchanged, through :func:`smoothviz.training.train` and its checkpoint cache; on a Dask cluster
  when asked) and returns one row per (width, seed): parameters and test accuracy.
- :func:`compare_to_frontier` places compressed results against it at their own parameter count
  and says, per training, method and target, whether they are above or below it, with the
  interval over seeds where there are seeds.
- :func:`committed_frontier` reads a measurement committed under ``benchmarks/results`` (by
  ``benchmarks/trained_small_frontier.py``) when its recipe matches a configuration, so a run
  that cannot afford the trainings can still show it, labelled as a committed measurement.

**Interpolation (ours).** Within one seed, accuracy is interpolated linearly in the logarithm of
the parameter count between the two measured widths whose counts bracket the compressed model's:
``acc(p) = acc_i + (acc_{i+1} − acc_i)·(ln p − ln p_i)/(ln p_{i+1} − ln p_i)``. Log-parameters
because parameter counts grow with the square of the width, and accuracy grows roughly evenly per
doubling of the parameters. The measured points are used as they are (a width that trained a
little worse than a narrower one is not smoothed away). Outside the measured range (fewer
parameters than the narrowest width or more than the widest) there is no value: the frontier is
never extrapolated, and the verdict says so.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd

from smoothviz._validation import check_int
from smoothviz.config import ConfigError, TrainConfig
from smoothviz.stats import t_interval

if TYPE_CHECKING:
    from distributed import Client

    from smoothviz.data import ImageData

FRONTIER_COLUMNS = ["width", "seed", "params", "test_acc", "config_hash", "source"]
# What benchmarks/trained_small_frontier.py commits (the main job's recipe by default).
COMMITTED_FRONTIER = (
    Path(__file__).resolve().parent.parent
    / "benchmarks"
    / "results"
    / "trained_small_frontier.json"
)
# Fields that may differ between a configuration and a committed frontier measured for its recipe.
RECIPE_FREE = ("width", "seed", "device", "compile")
PLACEMENT_COLUMNS = [
    "params",
    "test_acc",
    "frontier_acc",
    "frontier_gap",
    "gap_low",
    "gap_high",
    "seeds",
    "paired",
    "versus_frontier",
]


# ------------------------------------------------------------------------------------ training
def frontier_configs(
    config: TrainConfig, widths: Sequence[int], seeds: Sequence[int] | None = None
) -> list[TrainConfig]:
    """``config`` at every width and seed (every other field, the recipe, unchanged).

    Raises
    ------
    ConfigError
        For an empty or invalid ``widths``/``seeds``, or a model without a width.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.model.startswith("torchvision:"):
        raise ConfigError(
            f"widths: model {config.model!r} has no width to narrow; the frontier needs cnn, mlp "
            "or resnet18"
        )
    if isinstance(widths, (str, int)) or not isinstance(widths, Sequence) or not widths:
        raise ConfigError(f"widths must be a non-empty list of ints >= 1, got {widths!r}")
    widths = [check_int("widths", w, low=1, error=ConfigError) for w in widths]
    seeds = [config.seed] if seeds is None else seeds
    if isinstance(seeds, (str, int)) or not isinstance(seeds, Sequence) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of ints >= 0, got {seeds!r}")
    seeds = [check_int("seeds", s, low=0, error=ConfigError) for s in seeds]
    return [
        replace(config, width=w, seed=s)
        for w in dict.fromkeys(widths)
        for s in dict.fromkeys(seeds)
    ]


def _train_on_cluster(
    configs: list[TrainConfig],
    workers: int | None,
    scheduler: str | None,
    client: Client | None,
    log: TextIO | None,
) -> None:
    """Train every config into the workers' checkpoint cache (shared with this process)."""
    from smoothviz import distributed

    def run(c: Client) -> None:
        futures = distributed.submit_trainings(c, configs)
        by_key = {f.key: cfg for cfg, f in futures.items()}
        failed = {}
        for future in distributed.as_completed_with_progress(
            list(futures.values()), desc="frontier", unit="training", log=log
        ):
            error = future.result()
            if error is not None:
                failed[by_key[future.key]] = error
        if failed:
            lines = "; ".join(f"width {c.width}, seed {c.seed}: {e}" for c, e in failed.items())
            raise RuntimeError(f"reference_frontier: trainings failed on the cluster: {lines}")

    if client is not None:
        run(client)
        return
    request = distributed.resolve(workers, scheduler)
    if request is None:
        raise ConfigError("reference_frontier: give workers=N or a scheduler to use Dask")
    with distributed.connect(request, log=log) as new_client:
        run(new_client)


def reference_frontier(
    config: TrainConfig,
    widths: Sequence[int],
    seeds: Sequence[int] | None = None,
    *,
    data: ImageData | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Client | None = None,
    progress: bool = False,
    log: TextIO | None = sys.stderr,
) -> pd.DataFrame:
    """Train ``config`` at narrower ``widths`` with the same recipe; parameters and test accuracy.

    Parameters
    ----------
    config
        The recipe: every field but ``width`` and ``seed`` is kept (pass the *baseline*
        configuration for the plain reference: its regulariser weights are kept too).
    widths
        The widths to train (the configuration's own width may be among them: it is then the
        uncompressed model, from the cache).
    seeds
        Seeds to train each width with (default: the configuration's own seed).
    data
        Where to evaluate (its test split, e.g. the one the compressed models were evaluated on);
        default the configuration's dataset. Training always uses the configuration's dataset,
        so the cache serves every caller alike.
    workers, scheduler, client
        Train on Dask (:mod:`smoothviz.distributed`: a new local cluster of ``workers``
        processes, an existing scheduler, or a client you hold); by default, here, one after
        another. Either way the checkpoint cache keeps every training.
    progress
        Show each training's progress bar (serial trainings only).
    log
        Where the cluster's progress goes.

    Returns
    -------
    pandas.DataFrame
        One row per (width, seed), columns :data:`FRONTIER_COLUMNS` (``source`` is
        ``"trained"``), sorted by parameters then seed.
    """
    from smoothviz.data import load_dataset
    from smoothviz.measure import count_params, evaluate
    from smoothviz.training import train

    configs = frontier_configs(config, widths, seeds)
    if client is not None or workers is not None or scheduler is not None:
        _train_on_cluster(configs, workers, scheduler, client, log)
    test = load_dataset(config.dataset, root=config.data_root) if data is None else data
    rows = []
    for cfg in configs:
        model = train(cfg, progress=progress).model.eval()
        rows.append(
            {
                "width": cfg.width,
                "seed": cfg.seed,
                "params": count_params(model),
                "test_acc": evaluate(model, test)["accuracy"],
                "config_hash": cfg.config_hash(),
                "source": "trained",
            }
        )
    frame = pd.DataFrame(rows, columns=FRONTIER_COLUMNS)
    return frame.sort_values(["params", "seed"], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------- committed measurement
def recipe(config: TrainConfig) -> dict[str, Any]:
    """The fields of ``config`` a frontier measurement must share with it (all but
    :data:`RECIPE_FREE`)."""
    return {k: v for k, v in config.to_dict().items() if k not in RECIPE_FREE}


def committed_frontier(
    config: TrainConfig, path: str | Path = COMMITTED_FRONTIER
) -> pd.DataFrame | None:
    """The committed frontier measured for ``config``'s recipe, or None.

    Reads ``path`` (written by ``benchmarks/trained_small_frontier.py``): its rows are returned
    when its recipe equals ``config``'s (every field but :data:`RECIPE_FREE`), with ``source``
    naming the file, its date and device, so that every table and figure can say it is a
    committed measurement and not a training of this run. None when the file is missing or made
    for another recipe.
    """
    path = Path(path)
    if not path.is_file():
        return None
    payload = json.loads(path.read_text())
    if payload.get("recipe") != json.loads(json.dumps(recipe(config))):
        return None
    env = payload.get("provenance", {})
    source = (
        f"committed measurement ({path.name}, {str(env.get('date', '?'))[:10]}, "
        f"{env.get('device', '?')})"
    )
    frame = pd.DataFrame(payload["rows"]).assign(source=source)
    return frame.reindex(columns=FRONTIER_COLUMNS)


def frontier_for(
    config: TrainConfig,
    widths: Sequence[int] | None,
    *,
    data: ImageData | None = None,
    seeds: Sequence[int] | None = None,
    path: str | Path = COMMITTED_FRONTIER,
    progress: bool = False,
) -> pd.DataFrame | None:
    """What a notebook shows: the frontier trained at ``widths``, else the committed one for this
    recipe (labelled so in ``source``), else None."""
    if widths is not None:
        return reference_frontier(config, widths, seeds, data=data, progress=progress)
    return committed_frontier(config, path)


# ----------------------------------------------------------------------------------- placement
def frontier_at(frontier: pd.DataFrame, params: Sequence[float]) -> pd.DataFrame:
    """Each seed's frontier accuracy at ``params`` (interpolated in log-parameters, NaN outside
    the measured range; see the module docstring): one column per seed, one row per value."""
    _require(frontier, ["seed", "params", "test_acc"], "frontier_at")
    p = np.log(np.asarray(params, dtype=np.float64))
    out = {}
    for seed, rows in frontier.groupby("seed", sort=True):
        rows = rows.groupby("params", as_index=False)["test_acc"].mean().sort_values("params")
        xs, ys = np.log(rows["params"].to_numpy(np.float64)), rows["test_acc"].to_numpy()
        inside = (p >= xs[0]) & (p <= xs[-1])
        out[seed] = np.where(inside, np.interp(p, xs, ys), np.nan)
    return pd.DataFrame(out)


def _interval(gaps: np.ndarray) -> tuple[float, float]:
    """The 95 % Student-t interval of the mean (:func:`smoothviz.stats.t_interval`); NaN for
    fewer than two values."""
    if len(gaps) < 2:
        return float("nan"), float("nan")
    ci = t_interval(gaps)
    return ci.low, ci.high


def _verdict(gap: float, low: float, high: float, n: int) -> str:
    if n == 0 or not np.isfinite(gap):
        return "outside the frontier's measured range"
    if n == 1:
        word = "above" if gap > 0 else "below" if gap < 0 else "level with"
        return f"{word} (one seed)"
    if low > 0:
        return "above"
    if high < 0:
        return "below"
    return "no clear difference"


def compare_to_frontier(
    results: pd.DataFrame,
    frontier: pd.DataFrame,
    *,
    column: str = "test_acc",
    by: Sequence[str] = ("training", "method", "target_reduction"),
) -> pd.DataFrame:
    """Place compressed results against the trained-small frontier at their parameter count.

    Parameters
    ----------
    results
        A :func:`smoothviz.sweep.sweep` frame (``params``, ``column`` and the ``by`` columns);
        with a ``seed`` column, rows of several seeds are grouped and each is compared with the
        frontier of its own seed (paired).
    frontier
        From :func:`reference_frontier` or :func:`committed_frontier`.
    column
        The accuracy compared (e.g. ``"test_acc_bn_reestimated"``).
    by
        What one verdict is about.

    Returns
    -------
    pandas.DataFrame
        One row per group: the ``by`` columns and :data:`PLACEMENT_COLUMNS`. ``frontier_gap`` is
        the compressed accuracy minus the frontier's (a fraction; mean over seeds), ``gap_low``/
        ``gap_high`` its 95 % Student-t interval over the seeds (paired when the results carry
        seeds the frontier has; otherwise over the frontier's seeds; NaN with one seed).
        ``versus_frontier`` says ``"above"``/``"below"`` when the whole interval is on one side,
        ``"no clear difference"`` otherwise, ``"above (one seed)"`` and the like with one seed,
        and ``"outside the frontier's measured range"`` where it has no value. Rows a method
        could not compress (no ``params``) are left out.
    """
    by = list(by)
    _require(results, ["params", column, *by], "compare_to_frontier")
    _require(frontier, ["seed", "params", "test_acc"], "compare_to_frontier")
    done = results.dropna(subset=["params", column])
    seeded = "seed" in done.columns
    frontier_seeds = sorted(frontier["seed"].unique())
    rows = []
    for key, group in done.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        curve = frontier_at(frontier, group["params"].to_numpy())
        paired = seeded and set(group["seed"]) <= set(frontier_seeds)
        if paired:  # each result seed against the frontier trained with the same seed
            own = np.array([curve.iloc[i][s] for i, s in enumerate(group["seed"])])
            gaps = group[column].to_numpy(np.float64) - own
            reference = own
        else:  # one result against every seed of the frontier
            acc = float(group[column].mean())
            reference = curve.mean(axis=0, skipna=False).to_numpy()
            gaps = acc - reference
        ok = np.isfinite(gaps)
        gaps = gaps[ok]
        low, high = _interval(gaps)
        gap = float(gaps.mean()) if len(gaps) else float("nan")
        rows.append(
            {
                **dict(zip(by, key)),
                "params": float(group["params"].mean()),
                "test_acc": float(group[column].mean()),
                "frontier_acc": float(np.mean(reference[ok])) if ok.any() else float("nan"),
                "frontier_gap": gap,
                "gap_low": low,
                "gap_high": high,
                "seeds": int(len(gaps)),
                "paired": bool(paired),
                "versus_frontier": _verdict(gap, low, high, len(gaps)),
            }
        )
    return pd.DataFrame(rows, columns=[*by, *PLACEMENT_COLUMNS])


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {list(df.columns)}")
