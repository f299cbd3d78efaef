"""One line that names an error, as a report, a sweep row or a widget's status line shows it."""

from __future__ import annotations

import re

# Long tracebacks stay in the notebook or the log; the line keeps their start.
MAX_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_text(exc: BaseException) -> str:
    """``"ValueError: what went wrong"``: the exception's type and message on one line.

    A notebook's error raised through papermill names the notebook's own exception (its ``ename``
    and ``evalue``), not papermill's wrapper. Terminal colour codes are removed and the text is cut
    to :data:`MAX_CHARS` characters.
    """
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return _ANSI.sub("", text).strip()[:MAX_CHARS]
