"""Torch's threads shared out among the smoothviz processes of one machine (smoothviz.threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from smoothviz import threads


@pytest.fixture()
def sharing(tmp_path, monkeypatch):
    """Sharing switched on (conftest fixes the thread count), a private registry, and torch's
    thread count and the module's state restored afterwards."""
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(threads.DIR_ENV, str(tmp_path / "registry"))
    before, state = torch.get_num_threads(), dict(threads._state)
    threads._state.update(registered=None, set=None, user=False)
    yield tmp_path / "registry"
    torch.set_num_threads(before)
    threads._unregister()
    threads._state.clear()
    threads._state.update(state)


def _entry(folder: Path, name: str, pid: int, start) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"pid": pid, "start": start}))
    return path


def test_each_live_process_takes_its_share_and_dead_ones_are_forgotten(sharing):
    parent = os.getppid()
    _entry(sharing, "live", parent, threads._start_time(parent))
    dead = _entry(sharing, "dead", 2**22 + 7, None)  # no such pid
    reused = _entry(sharing, "reused", parent, "not-its-start-time")  # the pid, another process
    assert threads.share_threads(cores=8) == 4  # this process and its parent
    assert torch.get_num_threads() == 4
    assert not dead.exists() and not reused.exists()
    assert sorted(threads.live_processes(sharing)) == sorted({os.getpid(), parent})


def test_the_environment_decides_first(sharing, monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.share_threads(cores=8) == 3 and torch.get_num_threads() == 3
    monkeypatch.setenv(threads.THREADS_ENV, "off")
    assert threads.share_threads(cores=8) is None and torch.get_num_threads() == 3
    monkeypatch.setenv(threads.THREADS_ENV, "many")
    with pytest.raises(ValueError, match=threads.THREADS_ENV):
        threads.share_threads()
    monkeypatch.delenv(threads.THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a Dask worker, or a user's choice
    assert threads.share_threads(cores=8) is None


def test_a_count_the_user_sets_afterwards_is_respected(sharing):
    assert threads.share_threads(cores=2) == 2
    torch.set_num_threads(1)
    assert threads.share_threads(cores=2) is None and torch.get_num_threads() == 1


_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from smoothviz.threads import share_threads

    role, signals = sys.argv[1], Path(sys.argv[2])

    def wait(name):
        for _ in range(600):
            if (signals / name).exists():
                return
            time.sleep(0.05)
        raise SystemExit(f"{role}: no {name}")

    def say(name, text=""):
        (signals / name).write_text(text)

    if role == "a":
        say("a1", str(share_threads(cores=8)))   # alone so far
        wait("b1")
        say("a2", str(share_threads(cores=8)))   # both running
        say("a-done-2")
        wait("b-exited")
        say("a3", str(share_threads(cores=8)))   # alone again
    else:
        wait("a1")
        say("b1", str(share_threads(cores=8)))
        wait("a-done-2")
    """
)


@pytest.mark.slow
def test_two_real_processes_share_the_cores_and_one_speeds_up_when_the_other_ends(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    signals = tmp_path / "signals"
    signals.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (threads.THREADS_ENV, "OMP_NUM_THREADS")}
    env[threads.DIR_ENV] = str(tmp_path / "registry")
    a = subprocess.Popen([sys.executable, str(script), "a", str(signals)], env=env)
    b = subprocess.Popen([sys.executable, str(script), "b", str(signals)], env=env)
    assert b.wait(timeout=120) == 0
    (signals / "b-exited").write_text("")
    assert a.wait(timeout=120) == 0
    read = {name: (signals / name).read_text() for name in ("a1", "b1", "a2", "a3")}
    assert read == {"a1": "8", "b1": "4", "a2": "4", "a3": "8"}
    time.sleep(0.1)
    assert threads.live_processes(tmp_path / "registry") == []  # both unregistered at exit
