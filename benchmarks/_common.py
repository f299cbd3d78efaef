"""What every benchmark script shares: how it writes its results and how a stopped run resumes.

Results. :class:`Results` names a script's files, ``<out>/<name>.{csv,json,md,png}``, and writes each
atomically (``smoothviz.atomic``: a reader never sees half a file). :func:`provenance` is what every
result JSON records about the run that made it: device, driver, versions, git SHA and date
(``smoothviz.provenance.environment_info``) and the command that reproduces it. Each script renders
its Markdown from the payload its JSON holds, so ``--render-only`` (:func:`add_render_only`)
rewrites the Markdown of a stored result without measuring anything.

Resume. :class:`ResumeStore` keeps the finished pieces of a long run (a row, a training's rows) in
one JSON-lines file, appended as each piece ends, so a run started again skips what is done.

The scripts import this module as ``_common`` (Python puts a script's own folder first on
``sys.path``); code that imports a script from elsewhere puts ``benchmarks/`` on the path first.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from smoothviz.atomic import atomic_write, atomic_write_text
from smoothviz.provenance import REPO_ROOT, environment_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------ provenance
def command(script: str | Path, argv: Sequence[str] | None = None) -> str:
    """The shell command that runs ``script`` with ``argv``, as one line to copy.

    Parameters
    ----------
    script : str or Path
        The benchmark script (its ``__file__``); shown relative to the repository root.
    argv : sequence of str, optional
        Its arguments (what ``main(argv)`` received); default: this process's ``sys.argv[1:]``.

    Returns
    -------
    str
        E.g. ``"python benchmarks/lambda_sweep.py --report"``.
    """
    path = Path(script).resolve()
    try:
        shown = str(path.relative_to(REPO_ROOT))
    except ValueError:  # a copy of the script outside the checkout
        shown = str(path)
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", shown, *args])


def machine_load() -> dict[str, float]:
    """The 1-, 5- and 15-minute load averages, the cores, and the 1-minute load per core."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    return {
        "load_1": one,
        "load_5": five,
        "load_15": fifteen,
        "cores": cores,
        "per_core": one / cores,
    }


def provenance(
    device: Any = "cpu", *, script: str | Path, argv: Sequence[str] | None = None
) -> dict[str, str]:
    """What produced a result: ``environment_info(device)`` plus the ``command`` that reproduces it.

    Parameters
    ----------
    device : str or torch.device
        Where the numbers were measured (named in ``device``; CUDA adds ``cuda`` and ``driver``).
    script, argv
        As for :func:`command`.

    Returns
    -------
    dict of str to str
        ``device``, ``torch``, ``python``, ``platform``, ``git_sha``, ``date``, ``torchvision``
        (and ``cuda``, ``driver`` on a GPU), then ``command``.
    """
    return environment_info(device) | {"command": command(script, argv)}


# --------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Results:
    """The result files of one benchmark: ``<out>/<name>.<suffix>``, each written atomically.

    Parameters
    ----------
    out : Path
        The folder (created on the first write).
    name : str
        The files' common stem, e.g. ``"lambda_sweep"``.
    """

    out: Path
    name: str

    def path(self, suffix: str) -> Path:
        """``<out>/<name>.<suffix>`` (``suffix`` without the dot)."""
        return Path(self.out) / f"{self.name}.{suffix}"

    def write_csv(self, table) -> Path:
        """A DataFrame as CSV, without its index."""
        return atomic_write_text(self.path("csv"), table.to_csv(index=False))

    def write_json(
        self,
        payload: Any,
        *,
        indent: int = 1,
        default: Callable[[Any], Any] | None = None,
        sort_keys: bool = False,
        final_newline: bool = False,
    ) -> Path:
        """``payload`` as JSON (the options are ``json.dumps``'s; each script keeps its layout)."""
        text = json.dumps(payload, indent=indent, default=default, sort_keys=sort_keys)
        return atomic_write_text(self.path("json"), text + ("\n" if final_newline else ""))

    def read_json(self) -> Any:
        """The stored ``<name>.json``."""
        return json.loads(self.path("json").read_text())

    def write_markdown(self, text: str) -> Path:
        """The Markdown report, exactly ``text``."""
        return atomic_write_text(self.path("md"), text)

    def write_png(self, figure, *, dpi: int) -> Path:
        """A matplotlib figure as PNG, cropped to what it draws."""
        return atomic_write(
            self.path("png"),
            lambda f: figure.savefig(f, format="png", dpi=dpi, bbox_inches="tight"),
        )


def add_render_only(parser) -> None:
    """Add ``--render-only [JSON]`` to a script's argument parser (see :func:`render_source`)."""
    parser.add_argument(
        "--render-only",
        nargs="?",
        const="",
        default=None,
        type=str,
        metavar="JSON",
        help="measure nothing: write the Markdown from a stored result JSON (default: the one "
        "under --out) into --out",
    )


def render_source(value: str | None, results: Results) -> Path | None:
    """The JSON that ``--render-only`` names (``results``' own when none is given), or None."""
    if value is None:
        return None
    source = Path(value) if value else results.path("json")
    if not source.is_file():
        raise SystemExit(f"--render-only: no result JSON at {source}")
    return source


# ---------------------------------------------------------------------------------------- resume
class ResumeStore:
    """The finished pieces of a benchmark run, kept so that a stopped run resumes where it was.

    One JSON-lines file: each finished piece is one JSON object on one line, appended and flushed
    to disk as the piece ends. ``key(record)`` says which piece a record is; the last record of a
    key wins, so a piece measured again replaces the earlier one. A file lock guards every read
    and append, so several processes may share a store. A line cut short (the machine stopped
    while writing it) is skipped with a warning, and the next append starts on a fresh line.

    Parameters
    ----------
    path : Path
        The file (created, with its folder, by the first :meth:`put`).
    key : callable
        Maps a record (a dict) to a hashable name of its piece, e.g. ``(model, setting, target)``.
        Include what must match for a piece to be reused (e.g. the git SHA of the code).
    """

    def __init__(self, path: str | Path, key: Callable[[dict], Hashable]):
        self.path = Path(path)
        self.key = key

    def _lock(self) -> FileLock:
        return FileLock(str(self.path.with_name(self.path.name + ".lock")))

    def records(self) -> dict[Hashable, dict]:
        """Every stored piece, by key, in the order first stored (the last record of a key)."""
        if not self.path.is_file():
            return {}
        with self._lock():
            text = self.path.read_text()
        out: dict[Hashable, dict] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                warnings.warn(
                    f"{self.path}:{number}: skipped a line that is not JSON (a run stopped "
                    "while writing it); that piece is measured again",
                    stacklevel=2,
                )
                continue
            out[self.key(record)] = record
        return out

    def get(self, key: Hashable, default: dict | None = None) -> dict | None:
        """The stored record of ``key``, or ``default``."""
        return self.records().get(key, default)

    def put(self, record: dict) -> None:
        """Append ``record`` (JSON-serialisable) and flush it to disk before returning."""
        line = json.dumps(record) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(), self.path.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # after a line cut short, start a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def clear(self) -> None:
        """Remove the store (once the complete results are written)."""
        with self._lock():
            self.path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)
