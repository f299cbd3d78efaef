"""How the trade-off notebook hands its sweep to the report: ``tradeoff.csv`` and, beside it, each
row's per-image correctness.

:func:`save_results` writes a :func:`smoothviz.sweep.sweep` frame as CSV (atomically) with the test
split it was measured on; when the frame carries the per-image correctness of each compressed model
(column ``test_correct``, ``sweep(..., per_image=True)``), that goes beside it, bit-packed, into
``tradeoff_correct.npz`` (10,000 test images take 1,250 bytes per row), also atomically and
*before* the CSV, so a CSV never names a correctness file that is not complete.
:func:`load_results` reads both back (the correctness only when its rows match the CSV's).
The one-seed interval of :mod:`smoothviz.headline` needs that correctness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from smoothviz.atomic import atomic_write, atomic_write_text

RESULTS_FILE = "tradeoff.csv"  # the trade-off notebook's sweep, in its grid point's folder
CORRECT_COLUMN = "test_correct"  # per row: a bool vector over the test images (plain accuracy)
_KEYS = ("seed", "training", "method", "target_reduction")
REQUIRED = ("training", "method", "target_reduction", "test_acc", "test_acc_uncompressed")


def check_results(results: object, what: str) -> None:
    """Raise unless ``results`` is a DataFrame with the columns a headline needs (:data:`REQUIRED`)."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"{what} needs a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(f"{what}: the frame lacks column(s) {missing}; it has {list(results)}")


def correctness_path(path: str | Path) -> Path:
    """Where the per-image correctness of the results at ``path`` lives (``<stem>_correct.npz``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}_correct.npz")


def _keys(frame: pd.DataFrame, rows: list[int]) -> dict[str, np.ndarray]:
    seeds = frame["seed"] if "seed" in frame.columns else pd.Series(0, index=frame.index)
    return {
        "seed": seeds.iloc[rows].to_numpy(dtype=np.int64),
        "training": frame["training"].iloc[rows].astype(str).to_numpy(dtype=str),
        "method": frame["method"].iloc[rows].astype(str).to_numpy(dtype=str),
        "target_reduction": frame["target_reduction"].iloc[rows].to_numpy(dtype=np.float64),
    }


def _save_correctness(frame: pd.DataFrame, path: Path) -> None:
    vectors = frame[CORRECT_COLUMN].tolist()
    rows = [i for i, v in enumerate(vectors) if isinstance(v, np.ndarray)]
    sizes = {vectors[i].size for i in rows}
    if len(sizes) > 1:
        raise ValueError(
            f"{CORRECT_COLUMN}: rows cover different numbers of images {sorted(sizes)}"
        )
    n = sizes.pop() if sizes else 0
    bits = (
        np.packbits(np.stack([vectors[i].astype(bool) for i in rows]), axis=1)
        if rows
        else np.zeros((0, 0), dtype=np.uint8)
    )
    arrays = {"row": np.asarray(rows, dtype=np.int64), "bits": bits, "n_images": np.int64(n)}
    arrays.update(_keys(frame, rows))
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _load_correctness(frame: pd.DataFrame, path: Path) -> pd.Series:
    with np.load(path, allow_pickle=False) as z:
        rows, bits, n = z["row"], z["bits"], int(z["n_images"])
        stored = {k: z[k] for k in _KEYS}
    if len(rows) and (rows.max() >= len(frame) or rows.min() < 0):
        raise ValueError(f"{path.name} has rows beyond the {len(frame)} rows of its results file")
    here = _keys(frame, rows.tolist())
    same = all(
        np.array_equal(here[k], stored[k])
        if k != "target_reduction"
        else np.allclose(here[k], stored[k], rtol=0, atol=1e-12)
        for k in _KEYS
    )
    if not same:
        raise ValueError(
            f"{path.name} does not match its results file (its rows name other seeds, trainings, "
            "methods or targets): written by another run?"
        )
    column = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    for i, r in enumerate(rows):
        column.iloc[int(r)] = np.unpackbits(bits[i])[:n].astype(bool)
    return column


def save_results(results: pd.DataFrame, data, path: str | Path = RESULTS_FILE) -> Path:
    """Write a sweep frame to ``path`` (CSV, atomically) with the test split it was measured on.

    Adds ``dataset`` (the data's name) and ``test_images`` (its number of test images) columns.
    A ``test_correct`` column (per-image correctness, from ``sweep(..., per_image=True)``) is
    written bit-packed to :func:`correctness_path` instead of the CSV; without one, a stale
    correctness file from an earlier run is removed.
    """
    check_results(results, "save_results")
    out = results.assign(dataset=data.name, test_images=len(data.y_test))
    side = correctness_path(path)
    if CORRECT_COLUMN in out.columns:
        _save_correctness(out.reset_index(drop=True), side)
        out = out.drop(columns=CORRECT_COLUMN)
    else:
        side.unlink(missing_ok=True)
    return atomic_write_text(path, out.to_csv(index=False))


def load_results(path: str | Path) -> pd.DataFrame:
    """Read back what :func:`save_results` wrote (``error`` stays None where there was none).

    With a correctness file beside it, the frame gets the ``test_correct`` column back (None on
    rows that measured nothing).

    Raises
    ------
    ValueError
        When the correctness file beside ``path`` does not match its rows.
    """
    df = pd.read_csv(path)
    if "error" in df.columns:
        df["error"] = df["error"].astype(object).where(df["error"].notna(), None)
    check_results(df, f"load_results({path})")
    side = correctness_path(path)
    if side.is_file():
        df[CORRECT_COLUMN] = _load_correctness(df, side)
    return df


def describe_test_split(results: pd.DataFrame) -> str:
    """Which test split the numbers come from, in words (from :func:`save_results`' columns)."""
    if not {"dataset", "test_images"} <= set(results.columns) or results.empty:
        return "test split not recorded"
    name, n = results["dataset"].iloc[0], int(results["test_images"].iloc[0])
    words = {
        "fashion-mnist": "Fashion-MNIST test split",
        "fashion-mnist-mini": "the embedded Fashion-MNIST subset's test split",
        "cifar10": "CIFAR-10 test split",
    }.get(name, f"{name} test split")
    full = {"fashion-mnist": 10000, "cifar10": 10000, "fashion-mnist-mini": 2000}.get(name)
    amount = f"all {n:,} images" if n == full else f"{n:,} images"
    return f"{words}, {amount}"
