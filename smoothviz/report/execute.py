"""Running a report's plan: papermill executes each grid point's notebooks, here or on Dask.

:func:`run_report` is the whole report: :func:`~smoothviz.report.plan.plan` (every check before any
work), then every notebook of every point executed by papermill into
``reports/<run-id>/<point>/``, rendered to HTML without its input cells (with its headline figure as a
PNG), and the landing page (:mod:`smoothviz.report.page`) written.

- A failing notebook marks its point and the run failed, its partial output stays linked, the later
  notebooks of that point are skipped, and :func:`run_report` returns ``ok=False``.
- Serially, ``index.html`` is rewritten atomically after every notebook and says "running" until
  the end, so a killed run never leaves a page that claims success. With ``workers`` or
  ``scheduler`` the points run in parallel on Dask (:mod:`smoothviz.distributed`), after the
  distinct trainings they share, and the page is written once, when every point has ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smoothviz.atomic import atomic_write, atomic_write_text
from smoothviz.config import ConfigError
from smoothviz.errors import error_text
from smoothviz.notebook_params import notebook_path
from smoothviz.presets import PRESETS
from smoothviz.provenance import environment_info, package_versions, utc_now
from smoothviz.report.page import write_index
from smoothviz.report.plan import GridPoint, NotebookRun, plan
from smoothviz.training import resolve_device


@dataclass
class ReportResult:
    """Where the report is and whether every notebook ran."""

    index: Path
    ok: bool
    points: list[GridPoint]


# nbconvert's lab page without the scripts it fetches from CDNs, none of which these pages need:
# their text has no LaTeX (MathJax) or diagrams (mermaid), and no widget runs without a kernel
# (require.js, the widget manager). A widget's output becomes one line saying so; the static
# figure each notebook draws below it is the record.
_OFFLINE_TEMPLATE = """{%- extends 'index.html.j2' -%}
{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{% block html_head_js_mathjax %}{% endblock html_head_js_mathjax %}
{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}
{% block data_widget_view %}<div class="jp-OutputArea-output smoothviz-widget-note"><p><em>An
interactive widget: it runs in a live notebook only, so this page loads no widget scripts; the
static figure below shows its state.</em></p></div>{% endblock data_widget_view %}
"""


def offline_html_exporter():
    """nbconvert's HTML exporter for report pages that open offline: no input cells, and no
    script fetched from the internet (no MathJax, mermaid, require.js or widget manager)."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        extra_loaders=[jinja2.DictLoader({"smoothviz_offline.html.j2": _OFFLINE_TEMPLATE})],
        template_file="smoothviz_offline.html.j2",
    )


def _export_html(ipynb: Path, target: Path) -> None:
    import nbformat

    exporter = offline_html_exporter()
    body, _ = exporter.from_notebook_node(nbformat.read(ipynb, as_version=4))
    atomic_write_text(target, body)


HEADLINE_TAG = "headline-figure"  # the cell whose figure is the notebook's thumbnail
THUMBNAIL_ASPECT = 0.45  # a thumbnail's height at most this times its width: a tall figure's top


def _extract_figure(ipynb: Path, target: Path) -> bool:
    """Save an executed notebook's headline figure as a thumbnail (:func:`thumbnail_png`): the
    ``image/png`` output of the cell tagged :data:`HEADLINE_TAG`, else its first figure; False
    when it has none."""
    import base64

    import nbformat

    nb = nbformat.read(ipynb, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in cells if HEADLINE_TAG in c.get("metadata", {}).get("tags", [])]
    pngs = [
        o["data"]["image/png"]
        for c in tagged + cells
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    if not pngs:
        return False
    data = thumbnail_png(base64.b64decode(pngs[0]))
    atomic_write(target, lambda f: f.write(data))
    return True


def thumbnail_png(data: bytes, aspect: float = THUMBNAIL_ASPECT, pad: int = 6) -> bytes:
    """A figure cropped to be read small, rather than shrunk whole until nothing can be read.

    Its white margins are cut (``pad`` pixels kept); a figure taller than ``aspect`` times its
    width keeps its top (a grid's legend and first row of panels), cut at the widest white gap
    between two rows of panels where there is one. The landing page shows it up to 40rem wide.
    """
    import io

    import numpy as np
    from PIL import Image, ImageChops

    image = Image.open(io.BytesIO(data)).convert("RGB")
    ink = ImageChops.difference(image, Image.new("RGB", image.size, "white")).convert("L")
    box = ink.point(lambda v: 255 if v > 12 else 0).getbbox()  # anti-aliasing is not ink
    if box is not None:
        left, top, right, bottom = box
        box = (
            max(0, left - pad),
            max(0, top - pad),
            min(image.width, right + pad),
            min(image.height, bottom + pad),
        )
        image, ink = image.crop(box), ink.crop(box)
    inked = np.asarray(ink) > 12
    if image.height > aspect * image.width:
        bottom = _gap(inked.any(axis=1), round(aspect * image.width), pad)
        image = image.crop((0, 0, image.width, bottom))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _gap(inked, limit: int, pad: int) -> int:
    """Where to cut rows of pixels to at most ``limit``: in the widest blank run past a third of
    ``limit`` (the gap between two rows of panels: rows through an axes are never blank, its
    spines cross them), ``pad`` pixels into it; at ``limit`` when there is none."""
    best, start, run = None, None, 0
    for i in range(limit // 3, min(limit, len(inked))):
        if inked[i]:
            start, run = None, 0
            continue
        start = i if start is None else start
        run += 1
        if best is None or run > best[1]:
            best = (start, run)
    return limit if best is None or best[1] < 4 else best[0] + min(pad, best[1] // 2)


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


def new_run_id(preset: str) -> str:
    """A unique, sortable run id: UTC time, preset and a random suffix (parallel runs never clash)."""
    stamp = utc_now("%Y%m%d-%H%M%S")
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
    models: Mapping[str, str | os.PathLike | Any] | None = None,
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
    models
        Your own trained models instead of training: ``{"baseline": ..., "smooth": ...}``, each
        the path of a state_dict file (``torch.save(model.state_dict(), PATH)``) or an
        ``nn.Module``, for the ``model`` parameter's architecture and the dataset's channels and
        classes (:mod:`smoothviz.checkpoints`). An ``nn.Module`` is saved first, atomically, as
        ``<run folder>/models/<name>.pt`` (papermill's kernels take paths). The same as the
        notebooks' ``checkpoints`` parameter (give one of the two); every file is loaded and
        checked before any notebook runs.

    Returns
    -------
    ReportResult
        ``index`` (path of index.html) and ``ok`` (False when a notebook failed).
    """
    from smoothviz import distributed

    if preset not in PRESETS:  # before the run id, which names the preset
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    run_id = run_id or new_run_id(preset)
    if not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
        raise ConfigError(f"run_id may hold only letters, digits, '.', '_' and '-', got {run_id!r}")
    run_dir = Path(out_dir) / run_id
    made = False
    if models is not None:
        parameters, made = _with_models(models, parameters, grid, run_dir)
    try:
        points = plan(preset, parameters, grid, notebooks)  # every check before any work
        cluster = distributed.resolve(workers, scheduler)
    except BaseException:
        if made:  # the run folder holds only the models saved above: nothing ran
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
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
            made=made,
        )


def _with_models(
    models: Mapping[str, Any],
    parameters: Mapping[str, Any] | None,
    grid: Mapping[str, Sequence[Any]] | None,
    run_dir: Path,
) -> tuple[dict[str, Any], bool]:
    """``parameters`` with ``checkpoints`` set from ``models`` (in-memory modules saved under
    ``run_dir/models/`` first); also whether ``run_dir`` was made here."""
    from torch import nn

    from smoothviz.checkpoints import check_checkpoint_names, save_models

    check_checkpoint_names(models, "models")
    given = sorted({"checkpoints"} & (set(parameters or {}) | set(grid or {})))
    if given:
        raise ConfigError("give models= or the parameter 'checkpoints', not both")
    bad = {
        k: type(v).__name__
        for k, v in models.items()
        if not isinstance(v, (str, os.PathLike, nn.Module))
    }
    if bad:
        raise ConfigError(
            f"models: each value must be a checkpoint path (str or Path) or an nn.Module, got {bad}"
        )
    modules = {k: v for k, v in models.items() if isinstance(v, nn.Module)}
    checkpoints = {k: os.fspath(v) for k, v in models.items() if k not in modules}
    made = False
    if modules:
        if run_dir.exists():
            raise ConfigError(f"the run folder {run_dir} exists already; choose another run_id")
        run_dir.mkdir(parents=True)
        made = True
        checkpoints.update(save_models(modules, run_dir / "models"))
    return {**dict(parameters or {}), "checkpoints": checkpoints}, made


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
    made=False,
) -> ReportResult:
    run_dir = Path(out_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=made)  # made: run_report saved the given models there
    nb_dir = Path(notebook_dir) if notebook_dir is not None else None
    meta = {
        "run_id": run_id,
        "preset": preset,
        "command": command or "",
        "overrides": dict(parameters or {}),
        "grid": {k: list(v) for k, v in (grid or {}).items()},
        "environment": environment_info(resolve_device("auto")),  # "auto" always resolves
        "versions": package_versions(),
        "started": utc_now(),
        "finished": None,
    }
    index = run_dir / "index.html"
    meta["execution"] = "dask: " + client.scheduler.address if client else "serial"
    if client is not None:
        # Points end in any order on the cluster: the page appears once, when all have ended.
        _run_points_on_cluster(client, points, run_dir, nb_dir, kernel_name, timeout, log)
    else:
        write_index(index, meta, points, state="running")
        total = sum(len(p.notebooks) for p in points)
        done = 0

        def on_notebook(point: GridPoint, nb: NotebookRun) -> None:
            nonlocal done
            if nb.status == "running":
                done += 1
                write_index(index, meta, points, state="running")
                _log(log, f"[{done}/{total}] {point.folder}/{nb.name} ...")
            elif nb.status == "skipped":
                done += 1
            else:
                _log(
                    log,
                    f"[{done}/{total}] {point.folder}/{nb.name} {nb.status} "
                    f"({nb.seconds:.1f} s){': ' + nb.error if nb.error else ''}",
                )
                write_index(index, meta, points, state="running")

        with _inline_matplotlib():
            for point in points:
                run_point(point, run_dir, nb_dir, kernel_name, timeout, on_notebook)
    ok = all(p.status == "ok" for p in points)
    meta["finished"] = utc_now()
    write_index(index, meta, points, state="succeeded" if ok else "failed")
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


def run_point(
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
            nb.status, nb.error, failed = "failed", error_text(exc), True
        nb.seconds = time.perf_counter() - t0
        if out_nb.exists():
            nb.ipynb = f"{point.folder}/{out_nb.name}"
            try:
                _export_html(out_nb, out_nb.with_suffix(".html"))
                nb.html = f"{point.folder}/{out_nb.stem}.html"
                if _extract_figure(out_nb, out_nb.with_suffix(".png")):
                    nb.figure = f"{point.folder}/{out_nb.stem}.png"
            except Exception as exc:
                nb.error = (nb.error or "") + f" (HTML export failed: {error_text(exc)})"
        if on_notebook:
            on_notebook(point, nb)
    return point


def _point_task(point, run_dir, nb_dir, kernel_name, timeout, *trainings) -> GridPoint:
    """A grid point as a Dask task (``trainings``: the finished training tasks it waited for)."""
    with _inline_matplotlib():
        return run_point(point, run_dir, nb_dir, kernel_name, timeout)


def _run_points_on_cluster(client, points, run_dir, nb_dir, kernel_name, timeout, log) -> None:
    """Every point as a Dask task, after the distinct trainings they share (one task each).

    A point's task replaces its entry in ``points`` with the executed point; a task that fails for
    good (it raised on every retry, or its worker died more often than the scheduler allows) marks
    its point failed with the reason, and the other points go on.
    """
    from smoothviz import distributed

    needs = [p.training_configs() for p in points]
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
                "the point's task failed on the cluster: " + error_text(exc),
            )
            for nb in rest:
                nb.status = "skipped"
        point = points[i]
        errors = [f"{nb.name}: {nb.error}" for nb in point.notebooks if nb.error]
        _log(log, f"{point.folder} {point.status}" + (f" ({'; '.join(errors)})" if errors else ""))


def _log(log, text: str) -> None:
    if log is not None:
        print(text, file=log, flush=True)
