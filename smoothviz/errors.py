"""How errors read: one line for a report, a sweep row or a widget's status line, and one short
paragraph in a notebook for the package's parameter and input errors.

:func:`error_text` is the line. :class:`ShortTraceback` is mixed into the errors that mean "a value
you gave is wrong" (:class:`~smoothviz.config.ConfigError`,
:class:`~smoothviz.compress.budget.BudgetError`): IPython calls their ``_render_traceback_``, so a
notebook shows the message and the line of the user's cell that raised it, instead of a long
traceback through library internals. The full traceback stays one call away
(:func:`full_traceback`), or always on with ``SMOOTHVIZ_TRACEBACK=full``. A papermill batch run
records the same ``ename``/``evalue``, so its log keeps the one-line message.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from pathlib import Path

# Long tracebacks stay in the notebook or the log; the line keeps their start.
MAX_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PACKAGE = str(Path(__file__).resolve().parent) + os.sep
TRACEBACK_ENV = "SMOOTHVIZ_TRACEBACK"
_RED, _BOLD, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"


def error_text(exc: BaseException) -> str:
    """``"ValueError: what went wrong"``: the exception's type and message on one line.

    A notebook's error raised through papermill names the notebook's own exception (its ``ename``
    and ``evalue``), not papermill's wrapper. Terminal colour codes are removed and the text is cut
    to :data:`MAX_CHARS` characters.
    """
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return _ANSI.sub("", text).strip()[:MAX_CHARS]


def _caller_line(exc: BaseException) -> str | None:
    """The line that called into smoothviz (the user's cell), as ``"line N: …"``: the last frame
    before the first one inside the package."""
    frame = None
    for f in traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []:
        if str(Path(f.filename).resolve()).startswith(_PACKAGE):
            break
        frame = f
    if frame is None:
        return None
    code = (frame.line or "").strip()
    return f"line {frame.lineno}: {code}" if code else f"line {frame.lineno}"


def short_traceback(exc: BaseException) -> list[str]:
    """The paragraph a notebook shows for a parameter or input error: the message, the line that
    raised it, and how to see the whole traceback."""
    lines = [f"{_RED}{_BOLD}{type(exc).__name__}{_RESET}: {exc}"]
    where = _caller_line(exc)
    if where:
        lines.append(f"  raised by {where}")
    lines.append(
        "  (a parameter or input error; smoothviz.full_traceback() shows where it was raised, "
        f"{TRACEBACK_ENV}=full always shows the full traceback)"
    )
    return lines


class ShortTraceback:
    """Mixin for the package's parameter and input errors: a short paragraph in IPython/Jupyter.

    IPython shows ``_render_traceback_()`` instead of the traceback; with the environment variable
    ``SMOOTHVIZ_TRACEBACK=full`` it shows the usual full traceback.
    """

    def _render_traceback_(self) -> list[str]:
        if os.environ.get(TRACEBACK_ENV, "").strip().lower() == "full":
            return _full_lines(self)
        return short_traceback(self)


def _full_lines(exc: BaseException) -> list[str]:
    try:  # IPython's own (coloured) traceback where it runs
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        return shell.InteractiveTB.structured_traceback(type(exc), exc, exc.__traceback__)
    return "".join(traceback.format_exception(exc)).splitlines()


def full_traceback(exc: BaseException | None = None) -> None:
    """Print the full traceback of ``exc``, by default of the last error raised in the notebook
    (or interactive session): what :class:`ShortTraceback` errors leave out."""
    if exc is None:
        exc = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if exc is None:
        print("no error has been raised in this session yet")
        return
    print("\n".join(_full_lines(exc)))
