"""Batch reports: the notebooks executed by papermill, rendered to HTML, behind one landing page.

``python -m smoothviz report [--preset default|full|cifar10] [-p name=value ...] [--grid name=v1,v2]``
(its options are in :mod:`smoothviz.cli`) runs every notebook in ``notebooks/`` in order into
``reports/<run-id>/<point>/`` (one folder per grid point), renders each executed notebook to HTML
without its input cells, and writes ``reports/<run-id>/index.html`` and ``report.json``.
With ``--checkpoint baseline=PATH --checkpoint smooth=PATH`` (``run_report(models=...)``, the
notebooks' ``checkpoints`` parameter) it analyses the user's own two models instead of training
them (:mod:`smoothviz.checkpoints`).

Three steps, one module each:

- :mod:`~smoothviz.report.plan`: presets applied (:mod:`smoothviz.presets`), every parameter name
  and value validated against the notebooks' parameter classes (:mod:`smoothviz.notebook_params`)
  before any notebook runs, one :class:`GridPoint` per combination of ``--grid`` values, each
  notebook carrying its validated parameters; a wrong one raises
  :class:`~smoothviz.config.ConfigError` naming it;
- :mod:`~smoothviz.report.execute`: papermill execution, one point after another here or in
  parallel on a Dask cluster (:mod:`smoothviz.distributed`); a failing notebook marks its point
  and the run failed, its partial output stays linked, and :func:`run_report` returns ``ok=False``
  (the CLI exits 1);
- :mod:`~smoothviz.report.page`: the landing page, which opens with each point's headline
  (:mod:`smoothviz.headline`), says "running" until the run has ended, and escapes every
  user-given string.
"""

from smoothviz.presets import EMBEDDED_FALLBACK, PRESETS
from smoothviz.report.execute import ReportResult, kernel_config, new_run_id, run_point, run_report
from smoothviz.report.page import point_headline, render_index, write_index
from smoothviz.report.plan import (
    STATUSES,
    GridPoint,
    NotebookRun,
    known_parameters,
    parse_grid,
    parse_parameters,
    parse_value,
    plan,
    resolve_preset,
)

__all__ = [
    "EMBEDDED_FALLBACK",
    "PRESETS",
    "STATUSES",
    "GridPoint",
    "NotebookRun",
    "ReportResult",
    "kernel_config",
    "known_parameters",
    "new_run_id",
    "parse_grid",
    "parse_parameters",
    "parse_value",
    "plan",
    "point_headline",
    "render_index",
    "resolve_preset",
    "run_point",
    "run_report",
    "write_index",
]
