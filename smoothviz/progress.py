"""Progress bars for the slow steps of a live notebook, and silence in batch runs.

:func:`progress_bar` is tqdm's notebook bar (``tqdm.auto``) that appears only when a step has taken
longer than :data:`DELAY` seconds and goes away when it ends. Whether bars are shown at all
(:func:`progress_enabled`): an explicit ``progress=True/False`` wins; else the environment variable
``SMOOTHVIZ_PROGRESS`` (``1``/``0``); else bars are shown in a kernel that a Jupyter server started
(JupyterLab or Notebook: jupyter_server gives it ``JPY_SESSION_NAME``), and nowhere else. A
papermill run (the batch report) starts its kernels without a server, so its log and its HTML pages
stay free of progress bars unless asked for with ``SMOOTHVIZ_PROGRESS=1``.
"""

from __future__ import annotations

import os
from typing import Any

ENV = "SMOOTHVIZ_PROGRESS"
DELAY = 1.0  # seconds before a bar appears: quick steps show nothing
_ON = {"1", "true", "yes", "on"}
_OFF = {"0", "false", "no", "off"}


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show progress bars: ``progress`` when given, else ``$SMOOTHVIZ_PROGRESS``, else
    whether this is a kernel of a live Jupyter front end (not a papermill batch run)."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be None, True or False, got {progress!r}")
        return progress
    env = os.environ.get(ENV, "").strip().lower()
    if env in _ON:
        return True
    if env in _OFF or env:
        return False
    return "JPY_SESSION_NAME" in os.environ


def progress_bar(total: float, desc: str, *, progress: bool | None = None, **kwargs: Any):
    """A tqdm bar over ``total`` units, shown as :func:`progress_enabled` says, left on screen
    only while it runs (``leave=False``) and only once :data:`DELAY` seconds have passed."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("delay", DELAY)
    return tqdm(total=total, desc=desc, disable=not progress_enabled(progress), **kwargs)
