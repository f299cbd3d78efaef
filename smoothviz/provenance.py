"""What produced a number: device, driver, versions, git SHA, date. Stored next to every result.

The one place smoothviz asks which versions, which machine and what time it is:
:func:`environment_info` (device, driver, torch, Python, platform, git SHA, date),
:func:`package_versions` (the installed versions of the packages a report depends on) and
:func:`utc_now` (the UTC timestamps of results, reports and run ids).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# What a report records the versions of (its landing page's "Produced by" table).
REPORT_PACKAGES = (
    "smoothviz",
    "torch",
    "torchvision",
    "numpy",
    "pandas",
    "matplotlib",
    "papermill",
    "nbconvert",
    "ipywidgets",
)


# A copy of the tree sent elsewhere (e.g. to a remote GPU machine) may carry no .git folder, or a
# stale one: whoever sends it names the commit, and that name wins.
GIT_SHA_ENV = "SMOOTHVIZ_GIT_SHA"


def git_sha(short: bool = False) -> str:
    """The checkout's HEAD commit (with ``+dirty`` when files differ), or ``"unknown"``.

    ``$SMOOTHVIZ_GIT_SHA``, when set, is returned instead (marked ``(from $SMOOTHVIZ_GIT_SHA)``).
    """
    given = os.environ.get(GIT_SHA_ENV, "").strip()
    if given:
        return f"{given} (from ${GIT_SHA_ENV})"
    try:
        args = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
        sha = subprocess.run(
            args,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: str | torch.device = "cpu") -> str:
    """A human-readable device name: the GPU's model, or the CPU's."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({torch.get_num_threads()} threads)"


def environment_info(device: str | torch.device = "cpu") -> dict[str, str]:
    """Device, driver, versions, git SHA and UTC date, as strings ready for JSON."""
    info = {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": git_sha(),
        "date": utc_now(),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except Exception:  # torchvision is optional for provenance; its absence is recorded
        info["torchvision"] = "not importable"
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["cuda"] = str(torch.version.cuda)
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = "unknown"
    return info


def utc_now(fmt: str = ISO_FORMAT) -> str:
    """The current UTC time formatted with ``fmt`` (default ``2026-01-31T12:00:00Z``)."""
    return _dt.datetime.now(_dt.UTC).strftime(fmt)


def package_versions(packages: Sequence[str] = REPORT_PACKAGES) -> dict[str, str]:
    """``{package: installed version}``, ``"not installed"`` for a missing one."""
    import importlib.metadata as md

    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
