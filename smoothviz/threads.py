"""Torch's CPU threads when several smoothviz processes share a machine.

Torch starts as many threads as the machine has cores in *every* process, so a sweep beside a
notebook beside a training on one 2-core machine runs six threads on two cores, and each
compression call took 130-230 s instead of 9-15 s (issue 25). Dask workers started by
:mod:`smoothviz.distributed` already get their share through ``OMP_NUM_THREADS``; this module gives
every other smoothviz process its share:

- each process that does heavy work (:func:`smoothviz.training.train`,
  :func:`smoothviz.sweep.compress`) calls :func:`share_threads`, which registers it in a folder of
  small files (one per process: its pid and start time, removed when it exits) and sets
  ``torch.set_num_threads(cores // live processes)`` (at least 1);
- a file whose process is gone (killed, or its pid reused by another program) is ignored and
  removed by whoever sees it, so a crash never leaves a share taken;
- every call counts again, so a process speeds up when the others finish.

Why a registry and not the load average (ours): the load average lags by about a minute and counts
the process's own threads, so a process would shrink after its own burst and grow back when it
idles; the registry is exact and immediate for the processes that share the work. It does not see
other programs' load; ``benchmarks/compression_speed.py`` records the load before and after.

The folder is machine-local (``$TMPDIR/smoothviz-<user>-threads``, or ``$SMOOTHVIZ_THREADS_DIR``),
never the checkpoint cache, which a cluster may share across machines. Cores are those this
process may run on (``os.sched_getaffinity``), else ``os.cpu_count()``.

Opting out: ``SMOOTHVIZ_THREADS=off`` leaves torch's thread count alone; ``SMOOTHVIZ_THREADS=<n>``
sets exactly ``n``; ``OMP_NUM_THREADS`` set in the environment (as Dask workers and many clusters
do) is left to torch. A ``torch.set_num_threads`` call made after smoothviz set the count is
respected: smoothviz stops adjusting it in that process.
"""

from __future__ import annotations

import atexit
import getpass
import json
import os
import tempfile
from pathlib import Path

import torch

THREADS_ENV = "SMOOTHVIZ_THREADS"
DIR_ENV = "SMOOTHVIZ_THREADS_DIR"
OFF = ("off", "0", "false", "no")

_state: dict[str, object] = {"registered": None, "set": None, "user": False}


def registry_dir() -> Path:
    """The folder where smoothviz processes on this machine register (created when needed)."""
    given = os.environ.get(DIR_ENV)
    if given:
        return Path(given)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"smoothviz-{user}-threads"


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS says, else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _start_time(pid: int) -> str | None:
    """The process's start time (``/proc/<pid>/stat``, Linux), or None where not readable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]  # field 22 of the whole line: starttime


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    now = _start_time(pid)
    return start is None or now is None or now == start


def live_processes(folder: Path | None = None) -> list[int]:
    """The pids registered in ``folder`` (default :func:`registry_dir`) whose process still runs;
    files of finished processes are removed."""
    folder = registry_dir() if folder is None else Path(folder)
    pids = []
    for path in folder.glob("*.json"):
        try:
            entry = json.loads(path.read_text())
            pid, start = int(entry["pid"]), entry.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written, or not ours
        if _alive(pid, start):
            pids.append(pid)
        else:
            path.unlink(missing_ok=True)
    return sorted(set(pids))


def register(folder: Path | None = None) -> Path:
    """Register this process in ``folder`` (once; the file goes when the process exits)."""
    folder = registry_dir() if folder is None else Path(folder)
    done = _state["registered"]
    if isinstance(done, Path) and done.parent == folder and done.exists():
        return done
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}-{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
    os.replace(tmp, path)  # a reader sees the whole entry or none
    if _state["registered"] is None:
        atexit.register(_unregister)
    _state["registered"] = path
    return path


def _unregister() -> None:
    path = _state["registered"]
    if isinstance(path, Path):
        path.unlink(missing_ok=True)


def threads_setting() -> int | str | None:
    """What the environment asks for: an int from ``$SMOOTHVIZ_THREADS``, ``"off"`` (leave torch
    alone: ``SMOOTHVIZ_THREADS=off``, or ``OMP_NUM_THREADS`` set), or None (share the cores)."""
    text = os.environ.get(THREADS_ENV, "").strip().lower()
    if text in OFF:
        return "off"
    if text:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(
                f"${THREADS_ENV} must be 'off' or a number of threads >= 1, got {text!r}"
            ) from None
        if value < 1:
            raise ValueError(
                f"${THREADS_ENV} must be 'off' or a number of threads >= 1, got {text!r}"
            )
        return value
    if os.environ.get("OMP_NUM_THREADS"):
        return "off"
    return None


def share_threads(*, cores: int | None = None, folder: Path | None = None) -> int | None:
    """Set torch's CPU threads to this process's share of the machine's cores.

    Parameters
    ----------
    cores
        The cores to share (default :func:`available_cores`).
    folder
        The registry (default :func:`registry_dir`).

    Returns
    -------
    int or None
        The thread count set, or None when it was left alone (see the module docstring:
        ``SMOOTHVIZ_THREADS=off``, ``OMP_NUM_THREADS``, or a count the user set after smoothviz).
    """
    setting = threads_setting()
    if setting == "off":
        return None
    current = torch.get_num_threads()
    if _state["user"] or (_state["set"] is not None and current != _state["set"]):
        _state["user"] = True  # someone called torch.set_num_threads after us: theirs wins
        return None
    if isinstance(setting, int):
        threads = setting
    else:
        try:
            register(folder)
            others = max(1, len(live_processes(folder)))
        except OSError:  # an unwritable temporary folder: keep torch's choice
            return None
        threads = max(1, (cores or available_cores()) // others)
    if threads != current:
        torch.set_num_threads(threads)
    _state["set"] = threads
    return threads
