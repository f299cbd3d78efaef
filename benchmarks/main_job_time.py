"""Wall time of the README's main job (``bash scripts/main.sh``) after install, with an empty cache.

Runs the command in a subprocess with a fresh temporary ``SMOOTHVIZ_CACHE`` (so both trainings
really happen), checks that it printed the path of an ``index.html`` that exists, and writes
benchmarks/results/main_job_time.{json,md}: the wall time against the issue's limit (5 minutes on a
2-core CPU), the CPU time of the whole process tree, the 1-minute load average before and after
(a loaded machine inflates the wall time), each notebook's time, the two trainings' uncompressed
accuracies on the test split the report names, and the report's headline sentence. It also copies
the report's trade-off figure (``04_tradeoff``'s last figure) to ``docs/figures/report-tradeoff.png``,
the README's figure, so that figure always comes from the measured default run.

    .venv/bin/python benchmarks/main_job_time.py
    .venv/bin/python benchmarks/main_job_time.py --render-only JSON --out DIR  # only the .md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Results, add_render_only, provenance, render_source

from smoothviz.atomic import atomic_write
from smoothviz.provenance import REPO_ROOT

LIMIT_S = 300
README_FIGURE = REPO_ROOT / "docs" / "figures" / "report-tradeoff.png"


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def markdown(result: dict) -> str:
    """The report of a result JSON: the wall time against the limit, each notebook, the headline."""
    env_info = result["environment"]
    rows = "\n".join(f"| `{name}` | {s:.1f} |" for name, s in result["notebook_seconds"].items())
    accs = ", ".join(f"{k} {v:.4f}" for k, v in result["test_acc_uncompressed"].items())
    split = "; ".join(result["test_split"].values())
    sentence = " ".join(result["headline_sentence"].values())
    return "\n".join(
        [
            "# Main job wall time (empty checkpoint cache, after install)",
            "",
            f"Device: {env_info['device']} · torch {env_info['torch']} · git "
            f"{env_info['git_sha']} · {env_info['date']}",
            "",
            "| command | wall time (s) | limit (s) | CPU time of all processes (s) | "
            "1-min load average before / after |",
            "|---|---:|---:|---:|---:|",
            f"| `bash scripts/main.sh` | {result['wall_seconds']:.1f} | "
            f"{result['limit_seconds']} | {result['cpu_seconds']:.1f} | "
            f"{result['load_average_before']:.2f} / {result['load_average_after']:.2f} |",
            "",
            "A load average above the core count means other work shared the CPU: the wall "
            "time is then an upper bound.",
            "",
            "| notebook | seconds (kernel start to end) |",
            "|---|---:|",
            rows,
            "",
            f"Uncompressed test accuracy ({split}): {accs}.",
            "",
            f"Headline: {sentence}",
            "",
            "Reproduce: `.venv/bin/python benchmarks/main_job_time.py`",
            "",
        ]
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    add_render_only(p)
    args = p.parse_args(argv)
    results = Results(args.out, "main_job_time")
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(markdown(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, SMOOTHVIZ_CACHE=cache)
        cpu0 = _children_cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["bash", "scripts/main.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - t0
        cpu_seconds = _children_cpu_seconds() - cpu0
    load_after = os.getloadavg()[0]
    index = [line for line in proc.stdout.splitlines() if line.strip().endswith("index.html")]
    ok = proc.returncode == 0 and bool(index) and Path(index[-1].strip()).is_file()
    if not ok:
        sys.exit(
            f"main job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    report = json.loads((Path(index[-1].strip()).parent / "report.json").read_text())
    notebooks = {nb["name"]: nb["seconds"] for p in report["points"] for nb in p["notebooks"]}
    uncompressed = {r["training"]: r["test_acc_uncompressed"] for r in report.get("headline", [])}
    run_dir = Path(index[-1].strip()).parent
    figure = next(
        (
            run_dir / nb["figure"]
            for p in report["points"]
            for nb in p["notebooks"]
            if nb["name"] == "04_tradeoff" and nb.get("figure")
        ),
        None,
    )
    copied = figure is not None and figure.is_file()
    if copied:
        png = figure.read_bytes()
        atomic_write(README_FIGURE, lambda f: f.write(png))
    result = {
        "command": "bash scripts/main.sh",
        "wall_seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "limit_seconds": LIMIT_S,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "notebook_seconds": notebooks,
        "test_acc_uncompressed": uncompressed,
        "test_split": report.get("test_split", {}),
        "headline_sentence": report.get("headline_sentence", {}),
        "index_html": index[-1].strip(),
        "readme_figure": str(README_FIGURE.relative_to(REPO_ROOT)) if copied else None,
        "terminal_stderr": proc.stderr,
        "environment": provenance("cpu", script=__file__, argv=argv),
    }
    results.write_json(result, indent=2)
    results.write_markdown(markdown(result))
    print(f"{seconds:.1f} s -> {index[-1].strip()}")


if __name__ == "__main__":
    main()
