"""Batch reports: the notebooks executed by papermill, rendered to HTML, behind one landing page.

``python -m smoothviz report [--preset default|full|cifar10] [-p name=value ...] [--grid name=v1,v2]``
runs every notebook in ``notebooks/`` in order into ``reports/<run-id>/<point>/`` (one folder per
grid point), renders each executed notebook to HTML without its input cells, and writes
``reports/<run-id>/index.html``. The page opens with the headline of each grid point: the table of
test accuracies (per training, method and target, without and with BatchNorm re-estimation, next to
the uncompressed accuracy; the best method per target) and one sentence computed from it
(:mod:`smoothviz.headline`), on the test split it names. Then the status, a summary table with
links, the parameters of every point, and the device, versions and git SHA that produced it.
``report.json`` holds the same content, the headline as records under ``headline``.

Guarantees:

- every parameter name and value is validated against the notebooks' config dataclasses
  (:mod:`smoothviz.notebook_params`) before any notebook runs; a wrong one raises
  :class:`~smoothviz.config.ConfigError` naming it;
- a failing notebook marks its point and the run failed, its partial output stays linked, the later
  notebooks of that point are skipped, and :func:`run_report` returns ``ok=False`` (the CLI exits 1);
- ``index.html`` is rewritten atomically after every notebook and says "running" until the end, so
  a killed run never leaves a page that claims success; with ``--workers N`` or ``--scheduler``
  (grid points in parallel on Dask, :mod:`smoothviz.distributed`) it is written once, when every
  point has ended;
- every user-given string is HTML-escaped.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as _dt
import html
import itertools
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoothviz.atomic import atomic_write_text
from smoothviz.config import ConfigError
from smoothviz.headline import (
    RESULTS_FILE,
    best_methods,
    describe_test_split,
    headline_sentence,
    headline_table,
    load_results,
)
from smoothviz.notebook_params import NOTEBOOKS, NotebookParams, notebook_path
from smoothviz.presets import EMBEDDED_FALLBACK, PRESETS

STATUSES = ("pending", "running", "ok", "failed", "skipped")


# --------------------------------------------------------------------------- parsing and planning
def parse_value(text: str) -> Any:
    """A command-line value as a Python literal when it is one (``16``, ``0.5``, ``None``,
    ``[0.3, 0.5]``, ``true``), else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _name_value(item: str, option: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ConfigError(f"{option} expects name=value, got {item!r}")
    return name, value


def parse_parameters(items: Sequence[str] | None) -> dict[str, Any]:
    """``["width=8", "epochs=2"]`` -> ``{"width": 8, "epochs": 2}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        name, value = _name_value(item, "-p")
        out[name] = parse_value(value)
    return out


def parse_grid(items: Sequence[str] | None) -> dict[str, list[Any]]:
    """``["width=8,16"]`` -> ``{"width": [8, 16]}`` (commas inside brackets stay in one value)."""
    out: dict[str, list[Any]] = {}
    for item in items or ():
        name, value = _name_value(item, "--grid")
        values = [parse_value(v) for v in _split_top_level(value) if v.strip()]
        if not values:
            raise ConfigError(f"--grid {name}: no values given")
        if name in out:
            raise ConfigError(f"--grid {name} given twice")
        out[name] = values
    return out


def known_parameters() -> dict[str, list[str]]:
    """Every notebook parameter name and the notebooks that take it."""
    names: dict[str, list[str]] = {}
    for nb, cls in NOTEBOOKS.items():
        for name in cls.field_names():
            names.setdefault(name, []).append(nb)
    return names


@dataclass
class NotebookRun:
    """One notebook of one grid point, and what became of it."""

    name: str
    title: str
    parameters: dict[str, Any]
    status: str = "pending"
    seconds: float | None = None
    error: str | None = None
    ipynb: str | None = None  # paths relative to the run folder
    html: str | None = None
    figure: str | None = None  # the notebook's last figure as a PNG, shown on the landing page


@dataclass
class GridPoint:
    """One set of parameters and its notebooks."""

    label: str
    folder: str
    parameters: dict[str, Any]
    notebooks: list[NotebookRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # said on the landing page (data fallback...)

    @property
    def status(self) -> str:
        states = {nb.status for nb in self.notebooks}
        for s in ("failed", "running", "pending"):
            if s in states:
                return s
        return "ok"


def _coerce_list(cls: type, name: str, value: Any) -> Any:
    """A bare string for a list-typed parameter becomes a list (``svd,prune_magnitude``)."""
    from typing import get_type_hints

    hint = str(get_type_hints(cls)[name])
    if isinstance(value, str) and hint.startswith("tuple"):
        return [parse_value(v) for v in value.split(",") if v.strip()]
    return value


def _slug(values: Mapping[str, Any]) -> str:
    text = "_".join(f"{k}-{v}" for k, v in values.items()) or "defaults"
    return re.sub(r"[^A-Za-z0-9._-]+", "", text.replace(" ", ""))[:80] or "point"


def resolve_preset(
    preset: str, named: set[str] | frozenset[str] = frozenset()
) -> tuple[dict, list]:
    """A preset's values, with the embedded-data fallback applied when it is needed.

    When the preset (or the notebooks' default) asks for the full Fashion-MNIST, the user did not
    name ``dataset`` (``named``: the parameter names given with -p/--grid), and the full set is not
    installed, the values of :data:`EMBEDDED_FALLBACK` replace the preset's. Returns the values and
    the notes to show on the landing page.
    """
    from smoothviz.data import fashion_mnist_available

    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    values = dict(PRESETS[preset])
    dataset = values.get("dataset", NotebookParams.default("dataset"))
    if "dataset" in named or dataset != "fashion-mnist" or fashion_mnist_available():
        return values, []
    values.update(EMBEDDED_FALLBACK)
    note = (
        "The full Fashion-MNIST is not installed (Debian package dataset-fashion-mnist, which "
        "scripts/setup.sh installs when run as root, or $SMOOTHVIZ_FASHION_MNIST), so this run "
        "trained and tested on the embedded subset (10,000 training, 2,000 test images): "
        "accuracies are lower than the full set gives."
    )
    return values, [note]


def plan(
    preset: str = "default",
    parameters: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    notebooks: Sequence[str] | None = None,
) -> list[GridPoint]:
    """Validate everything and lay out the grid points; nothing runs.

    Raises
    ------
    ConfigError
        For an unknown preset, a parameter no notebook takes, a name given twice, or a value one of
        the notebooks' config dataclasses rejects (the message names the parameter).
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    parameters = dict(parameters or {})
    grid = {k: list(v) for k, v in (grid or {}).items()}
    names = list(notebooks) if notebooks is not None else list(NOTEBOOKS)
    unknown_nb = [n for n in names if n not in NOTEBOOKS]
    if unknown_nb:
        raise ConfigError(f"notebooks {unknown_nb} are not bundled; allowed: {list(NOTEBOOKS)}")
    known = {p for n in names for p in NOTEBOOKS[n].field_names()}
    for source, given in (("-p", parameters), ("--grid", grid)):
        bad = sorted(set(given) - known)
        if bad:
            raise ConfigError(
                f"unknown parameter(s) {bad} ({source}); the notebooks take: {sorted(known)}"
            )
    both = sorted(set(parameters) & set(grid))
    if both:
        raise ConfigError(f"parameter(s) {both} given both with -p and --grid")
    preset_values, notes = resolve_preset(preset, named=set(parameters) | set(grid))
    points = []
    combos = list(itertools.product(*grid.values())) if grid else [()]
    for i, combo in enumerate(combos):
        point_values = dict(zip(grid, combo))
        values = {**preset_values, **parameters, **point_values}
        point = GridPoint(
            label=", ".join(f"{k}={v!r}" for k, v in point_values.items()) or "(no grid)",
            folder=f"{i:02d}-{_slug(point_values)}",
            parameters={},
            notes=list(notes),
        )
        for name in names:
            cls = NOTEBOOKS[name]
            own = {k: _coerce_list(cls, k, v) for k, v in values.items() if k in cls.field_names()}
            try:
                config = cls.from_dict(own)  # raises ConfigError naming the parameter
            except TypeError as exc:  # defensive: anything the dataclass itself rejects
                raise ConfigError(f"{name}: {exc}") from exc
            point.parameters.update(config.to_dict())
            point.notebooks.append(NotebookRun(name, cls.title, own))
        points.append(point)
    return points


# --------------------------------------------------------------------------- execution
@dataclass
class ReportResult:
    """Where the report is and whether every notebook ran."""

    index: Path
    ok: bool
    points: list[GridPoint]


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in (
        "smoothviz",
        "torch",
        "torchvision",
        "numpy",
        "pandas",
        "matplotlib",
        "papermill",
        "nbconvert",
        "ipywidgets",
    ):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _export_html(ipynb: Path, target: Path) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    atomic_write_text(target, body)


def _extract_figure(ipynb: Path, target: Path) -> bool:
    """Save the last ``image/png`` output of an executed notebook; False when it has none."""
    import base64

    import nbformat

    nb = nbformat.read(ipynb, as_version=4)
    pngs = [
        o["data"]["image/png"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    if not pngs:
        return False
    data = base64.b64decode(pngs[-1])
    from smoothviz.atomic import atomic_write

    atomic_write(target, lambda f: f.write(data))
    return True


def kernel_config() -> Any:
    """Traitlets config for the kernels papermill starts: their traffic encrypted, or local only.

    ipykernel warns on every start ("Kernel is running over TCP without encryption") unless the
    kernel manager provisions CurveZMQ keys or uses IPC sockets. So: CurveZMQ where jupyter_client
    offers it (``KernelManager.transport_encryption``) and pyzmq was built with it; else IPC sockets
    on POSIX; else jupyter_client's defaults. Real kernel errors still reach the terminal.
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        return Config({"KernelManager": {"transport_encryption": "auto"}})
    if os.name == "posix":
        return Config({"KernelManager": {"transport": "ipc"}})
    return Config()


def _error_text(exc: BaseException) -> str:
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return re.sub(r"\x1b\[[0-9;]*m", "", text).strip()[:2000]


def new_run_id(preset: str) -> str:
    """A unique, sortable run id: UTC time, preset and a random suffix (parallel runs never clash)."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{preset}-{secrets.token_hex(3)}"


def run_report(
    preset: str = "default",
    parameters: Mapping[str, Any] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    out_dir: str | Path = "reports",
    notebooks: Sequence[str] | None = None,
    notebook_dir: str | Path | None = None,
    run_id: str | None = None,
    kernel_name: str = "python3",
    timeout: int | None = None,
    command: str | None = None,
    log=sys.stderr,
    workers: int | None = None,
    scheduler: str | None = None,
) -> ReportResult:
    """Validate, execute every notebook of every grid point, render HTML, write ``index.html``.

    Parameters
    ----------
    preset
        ``"default"`` (embedded data, small CNN), ``"full"`` or ``"cifar10"``.
    parameters
        ``{name: value}`` overrides applied to every notebook that takes the name.
    grid
        ``{name: [values]}``; one grid point per combination, each in its own folder.
    out_dir
        Parent folder of the run folder.
    notebooks
        Which bundled notebooks to run, by name (default: all, in order).
    notebook_dir
        Where the notebooks live (default: the repository's ``notebooks/``).
    run_id
        The run folder's name (default: :func:`new_run_id`).
    kernel_name, timeout
        Passed to papermill (``timeout``: seconds per cell, None for no limit).
    command
        The command line to record on the page.
    log
        Where progress lines go (``None``: nowhere).
    workers, scheduler
        Run the grid points in parallel on Dask (:mod:`smoothviz.distributed`): a new local
        cluster of ``workers`` processes, or the existing cluster whose scheduler is at
        ``scheduler`` (default ``$SMOOTHVIZ_SCHEDULER``). Then ``index.html`` is written once,
        when every point has ended, and a progress bar over points goes to ``log``. Without
        either (and no ``$SMOOTHVIZ_SCHEDULER``) the points run one after another here.

    Returns
    -------
    ReportResult
        ``index`` (path of index.html) and ``ok`` (False when a notebook failed).
    """
    from smoothviz import distributed

    points = plan(preset, parameters, grid, notebooks)  # every check before any work
    cluster = distributed.resolve(workers, scheduler)
    run_id = run_id or new_run_id(preset)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
        raise ConfigError(f"run_id may hold only letters, digits, '.', '_' and '-', got {run_id!r}")
    with distributed.connect(cluster, log=log) if cluster else contextlib.nullcontext() as client:
        return _run_report(
            points,
            preset,
            parameters,
            grid,
            out_dir=out_dir,
            notebook_dir=notebook_dir,
            run_id=run_id,
            kernel_name=kernel_name,
            timeout=timeout,
            command=command,
            log=log,
            client=client,
        )


def _run_report(  # the body of run_report, inside its Dask client when there is one
    points,
    preset,
    parameters,
    grid,
    *,
    out_dir,
    notebook_dir,
    run_id,
    kernel_name,
    timeout,
    command,
    log,
    client,
) -> ReportResult:
    run_dir = Path(out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    nb_dir = Path(notebook_dir) if notebook_dir is not None else None
    meta = {
        "run_id": run_id,
        "preset": preset,
        "command": command or "",
        "overrides": dict(parameters or {}),
        "grid": {k: list(v) for k, v in (grid or {}).items()},
        "environment": _environment(),
        "versions": _versions(),
        "started": _now(),
        "finished": None,
    }
    index = run_dir / "index.html"
    meta["execution"] = "dask: " + client.scheduler.address if client else "serial"
    if client is not None:
        # Points end in any order on the cluster: the page appears once, when all have ended.
        _run_points_on_cluster(client, points, run_dir, nb_dir, kernel_name, timeout, log)
    else:
        _write_index(index, meta, points, state="running")
        total = sum(len(p.notebooks) for p in points)
        done = 0

        def on_notebook(point: GridPoint, nb: NotebookRun) -> None:
            nonlocal done
            if nb.status == "running":
                done += 1
                _write_index(index, meta, points, state="running")
                _log(log, f"[{done}/{total}] {point.folder}/{nb.name} ...")
            elif nb.status == "skipped":
                done += 1
            else:
                _log(
                    log,
                    f"[{done}/{total}] {point.folder}/{nb.name} {nb.status} "
                    f"({nb.seconds:.1f} s){': ' + nb.error if nb.error else ''}",
                )
                _write_index(index, meta, points, state="running")

        with _inline_matplotlib():
            for point in points:
                _run_point(point, run_dir, nb_dir, kernel_name, timeout, on_notebook)
    ok = all(p.status == "ok" for p in points)
    meta["finished"] = _now()
    _write_index(index, meta, points, state="succeeded" if ok else "failed")
    return ReportResult(index=index.resolve(), ok=ok, points=points)


@contextlib.contextmanager
def _inline_matplotlib():
    """The kernels draw with the inline backend whatever the caller's MPLBACKEND says."""
    saved_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    try:
        yield
    finally:
        if saved_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = saved_backend


def _run_point(
    point: GridPoint,
    run_dir: Path,
    nb_dir: Path | None,
    kernel_name: str,
    timeout: int | None,
    on_notebook=None,
) -> GridPoint:
    """Execute one point's notebooks in order into ``run_dir/<point folder>``; returns the point.

    A failing notebook is recorded (status, error, partial output linked) and the point's later
    notebooks are skipped. ``on_notebook(point, nb)`` is called when a notebook starts, ends or is
    skipped. Run again (a point whose worker died), it starts over and overwrites its files.
    """
    import papermill

    folder = run_dir / point.folder
    folder.mkdir(exist_ok=True)
    failed = False
    for nb in point.notebooks:
        nb.error, nb.seconds, nb.ipynb, nb.html, nb.figure = None, None, None, None, None
        if failed:
            nb.status = "skipped"
            if on_notebook:
                on_notebook(point, nb)
            continue
        source = (nb_dir / f"{nb.name}.ipynb") if nb_dir else notebook_path(nb.name)
        out_nb = folder / f"{nb.name}.ipynb"
        nb.status = "running"
        if on_notebook:
            on_notebook(point, nb)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source),
                str(out_nb),
                parameters=nb.parameters,
                kernel_name=kernel_name,
                progress_bar=False,
                log_output=False,
                cwd=str(folder),
                execution_timeout=timeout,
                config=kernel_config(),
            )
            nb.status = "ok"
        except Exception as exc:  # a failed notebook is reported, not fatal to the run
            nb.status, nb.error, failed = "failed", _error_text(exc), True
        nb.seconds = time.perf_counter() - t0
        if out_nb.exists():
            nb.ipynb = f"{point.folder}/{out_nb.name}"
            try:
                _export_html(out_nb, out_nb.with_suffix(".html"))
                nb.html = f"{point.folder}/{out_nb.stem}.html"
                if _extract_figure(out_nb, out_nb.with_suffix(".png")):
                    nb.figure = f"{point.folder}/{out_nb.stem}.png"
            except Exception as exc:
                nb.error = (nb.error or "") + f" (HTML export failed: {_error_text(exc)})"
        if on_notebook:
            on_notebook(point, nb)
    return point


def _point_task(point, run_dir, nb_dir, kernel_name, timeout, *trainings) -> GridPoint:
    """A grid point as a Dask task (``trainings``: the finished training tasks it waited for)."""
    with _inline_matplotlib():
        return _run_point(point, run_dir, nb_dir, kernel_name, timeout)


def _point_trainings(point: GridPoint) -> list:
    """The TrainConfigs a point's notebooks train (the same for each of its notebooks)."""
    configs = []
    for nb in point.notebooks:
        for cfg in NOTEBOOKS[nb.name].from_dict(nb.parameters).training_configs().values():
            if cfg not in configs:
                configs.append(cfg)
    return configs


def _run_points_on_cluster(client, points, run_dir, nb_dir, kernel_name, timeout, log) -> None:
    """Every point as a Dask task, after the distinct trainings they share (one task each).

    A point's task replaces its entry in ``points`` with the executed point; a task that fails for
    good (it raised on every retry, or its worker died more often than the scheduler allows) marks
    its point failed with the reason, and the other points go on.
    """
    from smoothviz import distributed

    needs = [_point_trainings(p) for p in points]
    trained = distributed.submit_trainings(client, [c for cfgs in needs for c in cfgs])
    futures = [
        client.submit(
            _point_task,
            point,
            run_dir,
            nb_dir,
            kernel_name,
            timeout,
            *[trained[c] for c in cfgs],
            key=f"smoothviz-point-{run_dir.name}-{point.folder}",
            retries=distributed.RETRIES,
        )
        for point, cfgs in zip(points, needs)
    ]
    position = {f.key: i for i, f in enumerate(futures)}
    for future in distributed.as_completed_with_progress(
        futures, desc="grid points", unit="point", log=log
    ):
        i = position[future.key]
        try:
            points[i] = future.result()
        except Exception as exc:
            first, *rest = points[i].notebooks
            first.status, first.error = (
                "failed",
                "the point's task failed on the cluster: " + (distributed.error_text(exc)),
            )
            for nb in rest:
                nb.status = "skipped"
        point = points[i]
        errors = [f"{nb.name}: {nb.error}" for nb in point.notebooks if nb.error]
        _log(log, f"{point.folder} {point.status}" + (f" ({'; '.join(errors)})" if errors else ""))


def _log(log, text: str) -> None:
    if log is not None:
        print(text, file=log, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _environment() -> dict[str, str]:
    from smoothviz.provenance import environment_info
    from smoothviz.training import resolve_device

    return environment_info(resolve_device("auto"))  # "auto" always resolves


# --------------------------------------------------------------------------- the landing page
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;max-width:75rem;
color:#1d1d1f}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.3rem .6rem;
text-align:left;vertical-align:top;font-size:.9rem}th{background:#f4f4f6}
.state{display:inline-block;padding:.15rem .6rem;border-radius:.8rem;font-weight:600;color:#fff}
.succeeded,.ok{background:#1b7f3b}.failed{background:#b00020}.running,.pending{background:#a15c00}
.skipped{background:#777}
td .state{font-size:.8rem}.err{color:#b00020;white-space:pre-wrap;font-family:monospace;
font-size:.8rem;max-width:40rem}code{font-size:.85rem}
.sentence{font-size:1.1rem;font-weight:600;margin:.6rem 0;max-width:60rem}
.headline td.num{text-align:right;font-variant-numeric:tabular-nums}.headline .best{font-weight:700;
background:#e8f5ec}.headline tr.bestrow td{background:#f8f8fa;font-size:.8rem}
.note{background:#fff4e0;border-left:4px solid #a15c00;padding:.4rem .8rem;max-width:60rem}
.muted{color:#555;font-size:.85rem}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def point_headline(run_dir: Path, point: GridPoint) -> dict[str, Any] | None:
    """The headline of one grid point from its trade-off results, or None before they exist.

    Returns ``{"table", "best", "best_bn", "sentence", "test_split"}`` (DataFrames and strings), or
    ``{"error": text}`` when the results file cannot be read or lacks what the headline needs.
    """
    path = Path(run_dir) / point.folder / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        results = load_results(path)
        table = headline_table(results)
        return {
            "table": table,
            "best": best_methods(table),
            "best_bn": best_methods(table, "test_acc_bn_reestimated"),
            "sentence": headline_sentence(table),
            "test_split": describe_test_split(results),
        }
    except (OSError, ValueError, KeyError) as exc:
        return {"error": f"{path.name}: {_error_text(exc)}"}


def _pct_cell(value: Any, best: bool) -> str:
    if value is None or value != value:  # None or NaN: not measured, or the target not reached
        return '<td class="num">—</td>'
    return f'<td class="num{" best" if best else ""}">{100 * float(value):.1f}</td>'


def _headline_html(point: GridPoint, headline: Mapping[str, Any] | None, label: bool) -> str:
    """One point's headline: the sentence, the test split, the table with the best methods."""
    title = f"<h3>{_e(point.label)}</h3>" if label else ""
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in point.notes)
    if headline is None:
        waiting = {"failed": "not measured: the run failed before the trade-off notebook ended"}
        text = waiting.get(point.status, "not measured yet: the trade-off notebook has not ended")
        return f'{title}{notes}<p class="muted">Headline {_e(text)}.</p>'
    if "error" in headline:
        return f'{title}{notes}<p class="err">headline unavailable: {_e(headline["error"])}</p>'
    table = headline["table"]
    targets = sorted(set(table["target_reduction"].dropna()))
    trainings = list(dict.fromkeys(table["training"]))
    methods = list(dict.fromkeys(table["method"]))
    best = {(r.training, r.target_reduction): r.method for r in headline["best"].itertuples()}
    best_bn = {(r.training, r.target_reduction): r.method for r in headline["best_bn"].itertuples()}
    configs = {}
    try:  # the trainings compared, in words (every notebook of a point trains the same two)
        params = NOTEBOOKS[point.notebooks[0].name].from_dict(point.notebooks[0].parameters)
        configs = {k: _describe_training(v) for k, v in params.training_configs().items()}
    except (ConfigError, IndexError):
        pass
    with_bn = bool(table["test_acc_bn_reestimated"].notna().any())
    span = 2 if with_bn else 1
    head1 = (
        "<tr><th rowspan=2>training</th><th rowspan=2>method</th><th rowspan=2>uncompressed</th>"
        + "".join(f"<th colspan={span}>{100 * t:.0f} % fewer parameters</th>" for t in targets)
        + "</tr>"
    )
    head2 = (
        "<tr>"
        + ("<th>plain</th><th>BN re-est.</th>" if with_bn else "<th>plain</th>") * len(targets)
        + "</tr>"
    )
    body = []
    for training in trainings:
        rows = table[table["training"] == training]
        unc = rows["test_acc_uncompressed"].iloc[0]
        for i, method in enumerate(methods):
            cells = [
                f"<td>{_e(training)}</td>" if i == 0 else "<td></td>",
                f"<td>{_e(method)}</td>",
            ]
            cells.append(_pct_cell(unc, False) if i == 0 else "<td></td>")
            for t in targets:
                row = rows[(rows["method"] == method) & (rows["target_reduction"] == t)]
                plain = row["test_acc"].iloc[0] if len(row) else None
                bn = row["test_acc_bn_reestimated"].iloc[0] if len(row) else None
                cells.append(_pct_cell(plain, best.get((training, t)) == method))
                if with_bn:
                    cells.append(_pct_cell(bn, best_bn.get((training, t)) == method))
            body.append("<tr>" + "".join(cells) + "</tr>")
        cells = [f"<td>{_e(training)}</td>", "<td>best method</td>", "<td></td>"]
        for t in targets:
            cells.append(f"<td>{_e(best.get((training, t)) or '—')}</td>")
            if with_bn:
                cells.append(f"<td>{_e(best_bn.get((training, t)) or '—')}</td>")
        body.append('<tr class="bestrow">' + "".join(cells) + "</tr>")
    described = "".join(f"<li><b>{_e(name)}</b>: {_e(text)}</li>" for name, text in configs.items())
    return f"""{title}{notes}<p class="sentence">{_e(headline["sentence"])}</p>
<p class="muted">Test accuracy in %, on the {_e(headline["test_split"])}, straight after
compression (no gradient step){_BN_WORDS if with_bn else ""}. Bold: the best method of each training at each target. — : not measured, or the
method could not reach the target.</p>
<table class="headline"><thead>{head1}{head2}</thead><tbody>{"".join(body)}</tbody></table>
<ul class="muted">{described}</ul>"""


_BN_WORDS = '; "BN re-est." re-estimates the BatchNorm statistics on training images first'


def _describe_training(cfg: Any) -> str:
    """A TrainConfig in words: model, data, epochs and the regulariser weights that are on."""
    regs = [
        f"{name.replace('_', '-')} weight {getattr(cfg, name):g}"
        for name in ("first_order", "second_order", "nuclear", "proximal")
        if getattr(cfg, name) > 0
    ]
    images = "all" if cfg.train_subset is None else f"{cfg.train_subset:,}"
    width = "" if cfg.width is None else f" width {cfg.width}"
    return (
        f"{cfg.model}{width}, {cfg.epochs} epochs on {images} {cfg.dataset} training images, "
        + (", ".join(regs) if regs else "no regulariser")
        + f" (config {cfg.config_hash()})"
    )


def render_index(
    meta: Mapping[str, Any],
    points: Sequence[GridPoint],
    state: str,
    headlines: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> str:
    """The landing page's HTML (every user-given string escaped).

    ``headlines`` maps a point's folder to its :func:`point_headline`; the page opens with them.
    """
    headlines = headlines or {}
    headline_html = "\n".join(
        _headline_html(p, headlines.get(p.folder), label=len(points) > 1) for p in points
    )
    words = {
        "running": "RUNNING — incomplete (or interrupted)",
        "succeeded": "SUCCEEDED",
        "failed": "FAILED",
    }
    summary = []
    for p in points:
        for nb in p.notebooks:
            links = []
            if nb.html:
                links.append(f'<a href="{_e(nb.html)}">HTML</a>')
            if nb.ipynb:
                links.append(f'<a href="{_e(nb.ipynb)}">notebook</a>')
            if nb.figure:
                target = _e(nb.html or nb.figure)
                links.append(
                    f'<br><a href="{target}"><img src="{_e(nb.figure)}" alt="last figure of '
                    f'{_e(nb.name)}" style="max-width:22rem;max-height:9rem;margin-top:.3rem"></a>'
                )
            summary.append(
                [
                    _e(p.label),
                    _e(f"{nb.name} · {nb.title}"),
                    f'<span class="state {_e(nb.status)}">{_e(nb.status)}</span>',
                    "" if nb.seconds is None else f"{nb.seconds:.1f} s",
                    " · ".join(links),
                    f'<div class="err">{_e(nb.error)}</div>' if nb.error else "",
                ]
            )
    names = sorted({k for p in points for k in p.parameters})
    param_rows = [
        [f"<code>{_e(n)}</code>"] + [_e(repr(p.parameters.get(n, "—"))) for p in points]
        for n in names
    ]
    env_rows = [
        [_e(k), _e(v)]
        for k, v in {
            **meta["environment"],
            **{f"version: {k}": v for k, v in meta["versions"].items()},
        }.items()
    ]
    overrides = ", ".join(f"{k}={v!r}" for k, v in meta["overrides"].items()) or "none"
    grid = ", ".join(f"{k}={v!r}" for k, v in meta["grid"].items()) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>smoothviz report {_e(meta["run_id"])}</title><style>{_CSS}</style></head>
<body data-state="{_e(state)}">
<h1>smoothviz report <code>{_e(meta["run_id"])}</code></h1>
<p><span class="state {_e(state)}">{_e(words.get(state, state))}</span></p>
<h2>Headline: accuracy without fine-tuning, smooth vs baseline</h2>
{headline_html}
<p>Preset <code>{_e(meta["preset"])}</code> · parameters: <code>{_e(overrides)}</code> ·
grid: <code>{_e(grid)}</code><br>started {_e(meta["started"])}
{"· finished " + _e(meta["finished"]) if meta.get("finished") else ""}<br>
command: <code>{_e(meta["command"])}</code></p>
<h2>Summary</h2>
{_table(summary, ["grid point", "notebook", "status", "time", "output", "error"])}
<h2>Parameters</h2>
{_table(param_rows, ["parameter"] + [p.folder for p in points])}
<h2>Produced by</h2>
{_table(env_rows, ["", ""])}
<p>Accuracy is measured on the held-out test split straight after compression, with no gradient
step (design.md); notebooks show their outputs only, their code is in <code>notebooks/</code>.</p>
</body></html>
"""


def _write_index(
    index: Path, meta: Mapping[str, Any], points: Sequence[GridPoint], state: str
) -> None:
    headlines = {p.folder: point_headline(index.parent, p) for p in points}
    records, sentences, splits = [], {}, {}
    for p in points:
        h = headlines[p.folder]
        if not h or "error" in h:
            continue
        table = h["table"].assign(point=p.folder)
        records += json.loads(table.to_json(orient="records"))  # NaN becomes null
        sentences[p.folder], splits[p.folder] = h["sentence"], h["test_split"]
    record = {
        **meta,
        "state": state,
        "headline": records,
        "headline_sentence": sentences,
        "test_split": splits,
        "points": [
            {
                "label": p.label,
                "folder": p.folder,
                "status": p.status,
                "parameters": p.parameters,
                "notes": p.notes,
                "notebooks": [nb.__dict__ for nb in p.notebooks],
            }
            for p in points
        ],
    }
    atomic_write_text(index.parent / "report.json", json.dumps(record, indent=2, default=str))
    atomic_write_text(index, render_index(meta, points, state, headlines))


# --------------------------------------------------------------------------- command line
def add_report_parser(sub: Any) -> None:
    """Register the ``report`` subcommand on an argparse subparsers object."""
    p = sub.add_parser(
        "report",
        help="run the notebooks through papermill into an HTML report",
        description="Execute notebooks/ with papermill into reports/<run-id>/ (one folder per "
        "grid point), render them to HTML and write index.html; prints its path.",
    )
    p.add_argument(
        "--preset",
        default="default",
        choices=list(PRESETS),
        help="parameter set to start from (default: default)",
    )
    p.add_argument(
        "-p",
        "--parameter",
        dest="parameters",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a notebook parameter (repeatable)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="run every combination of these values (repeatable)",
    )
    p.add_argument("--out", default="reports", help="parent folder of the run (default: reports)")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: time-based)")
    p.add_argument(
        "--notebooks",
        default=None,
        metavar="NAME,NAME",
        help=f"run only these notebooks (default: all of {list(NOTEBOOKS)})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the grid points in parallel on a local Dask cluster of N worker processes",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the grid points on the existing Dask cluster at ADDRESS (tcp://host:8786; "
        "default: $SMOOTHVIZ_SCHEDULER when set)",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: Any) -> int:
    """Run the ``report`` subcommand; prints the path of index.html, returns the exit status."""
    notebooks = [n.strip() for n in args.notebooks.split(",")] if args.notebooks else None
    result = run_report(
        args.preset,
        parse_parameters(args.parameters),
        parse_grid(args.grid),
        out_dir=args.out,
        notebooks=notebooks,
        run_id=args.run_id,
        command="python -m smoothviz " + " ".join(sys.argv[1:]),
        log=None if args.quiet else sys.stderr,
        workers=args.workers,
        scheduler=args.scheduler,
    )
    print(result.index)
    if not result.ok:
        failed = [
            f"{p.folder}/{nb.name}"
            for p in result.points
            for nb in p.notebooks
            if nb.status == "failed"
        ]
        print(
            f"smoothviz report: failed notebook(s) {failed}; partial output linked from "
            f"{result.index}",
            file=sys.stderr,
        )
        return 1
    return 0
