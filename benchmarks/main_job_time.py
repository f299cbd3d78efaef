"""Wall time of the README's main job (``bash scripts/main.sh``) after install, with an empty cache.

Runs the command in a subprocess with a fresh temporary ``SMOOTHVIZ_CACHE`` (so both trainings
really happen), checks that it printed the path of an ``index.html`` that exists, and writes
benchmarks/results/main_job_time.{json,md}. The issue's limit is 5 minutes on a 2-core CPU.

    .venv/bin/python benchmarks/main_job_time.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from smoothviz.atomic import atomic_write_text
from smoothviz.provenance import REPO_ROOT, environment_info

LIMIT_S = 300


def main() -> None:
    out = Path(__file__).parent / "results" / "main_job_time"
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, SMOOTHVIZ_CACHE=cache)
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "scripts/main.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - t0
    index = [line for line in proc.stdout.splitlines() if line.strip().endswith("index.html")]
    ok = proc.returncode == 0 and bool(index) and Path(index[-1].strip()).is_file()
    if not ok:
        sys.exit(
            f"main job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    env_info = environment_info("cpu")
    result = {
        "command": "bash scripts/main.sh",
        "wall_seconds": seconds,
        "limit_seconds": LIMIT_S,
        "index_html": index[-1].strip(),
        "load_average_after": os.getloadavg(),
        "environment": env_info,
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(result, indent=2))
    atomic_write_text(
        out.with_suffix(".md"),
        "\n".join(
            [
                "# Main job wall time (empty checkpoint cache, after install)",
                "",
                f"Device: {env_info['device']} · torch {env_info['torch']} · git {env_info['git_sha']} · "
                f"{env_info['date']}",
                "",
                "| command | wall time (s) | limit (s) | 1-min load average after |",
                "|---|---:|---:|---:|",
                f"| `bash scripts/main.sh` | {seconds:.1f} | {LIMIT_S} | {os.getloadavg()[0]:.2f} |",
                "",
                "Reproduce: `.venv/bin/python benchmarks/main_job_time.py`",
                "",
            ]
        ),
    )
    print(f"{seconds:.1f} s -> {index[-1].strip()}")


if __name__ == "__main__":
    main()
