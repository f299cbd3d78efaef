"""The trained-small frontier of a recipe, measured once and committed for the notebooks to show.

The main job (the report's ``default`` preset, resnet18 width 8 on 24,000 Fashion-MNIST images)
cannot train a frontier in its 5 minutes; this script trains the same recipe from scratch at
narrower widths (:func:`smoothviz.frontier.reference_frontier`, through the checkpoint cache; on
a Dask cluster with ``--workers``/``--scheduler``) and writes ``<out>/<name>.{json,csv,md}``. The
JSON carries the recipe (every training field but width, seed, device and compile); the
trade-off notebook shows its rows, labelled as a committed measurement, whenever its own baseline
has that recipe and it was not asked to train a frontier itself
(:func:`smoothviz.frontier.committed_frontier`).

Presets: ``main_job`` (default; widths 3, 4, 5, 6, 8 as issue 25 measured them) and
``benchmark_model`` (resnet18 width 16; the full preset's widths). Run from the repository root:
``PYTHONPATH=. python benchmarks/trained_small_frontier.py [--seeds 0 1 2]``. ``--render-only
[JSON]`` rewrites the Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _common import Results, add_render_only, provenance, render_source

from smoothviz.frontier import recipe, reference_frontier
from smoothviz.notebook_params import TradeoffParams
from smoothviz.presets import BENCHMARK_MODEL, FRONTIER_WIDTHS, MAIN_JOB
from smoothviz.training import resolve_device

RECIPES = {
    "main_job": ({k: v for k, v in MAIN_JOB.items() if k != "first_order"}, (3, 4, 5, 6, 8)),
    "benchmark_model": (BENCHMARK_MODEL, FRONTIER_WIDTHS),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", default="main_job", choices=list(RECIPES))
    p.add_argument("--widths", type=int, nargs="+", default=None, help="default: the recipe's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="train on a local Dask cluster")
    p.add_argument("--scheduler", default=None, help="train on this Dask cluster")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="trained_small_frontier")
    add_render_only(p)
    return p.parse_args(argv)


def baseline_config(name: str, device: str):
    """The baseline training of a recipe, as the trade-off notebook builds it."""
    values, _ = RECIPES[name]
    params = TradeoffParams.from_dict({**values, "device": device})
    return params.training_configs()["baseline"]


def render(payload: dict) -> str:
    """The Markdown of a stored result."""
    env, rec = payload["provenance"], payload["recipe"]
    df = pd.DataFrame(payload["rows"])
    agg = df.groupby(["width", "params"], as_index=False)["test_acc"].agg(["mean", "min", "max"])
    seeds = sorted(df.seed.unique())
    lines = [
        "# Trained-small frontier (committed measurement)",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}.",
        "",
        f"Recipe ({payload['arguments']['recipe']}): {rec['model']} on {rec['dataset']}, "
        f"{rec['epochs']} epochs on {rec['train_subset'] or 'all'} training images, seed(s) "
        f"{', '.join(map(str, seeds))}, no regulariser; the full test split. The trade-off "
        "notebook shows these rows, labelled as this committed measurement, when its baseline "
        "has this recipe.",
        "",
        "| width | params | test acc"
        + (" (mean; min-max over seeds)" if len(seeds) > 1 else "")
        + " |",
        "|---:|---:|---:|",
    ]
    for r in agg.itertuples():
        spread = f" ({r.min:.4f}-{r.max:.4f})" if len(seeds) > 1 else ""
        lines.append(f"| {int(r.width)} | {int(r.params)} | {r.mean:.4f}{spread} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    env = provenance(resolve_device(args.device), script=__file__, argv=argv)
    base = baseline_config(args.recipe, args.device)
    widths = args.widths or list(RECIPES[args.recipe][1])
    frontier = reference_frontier(
        base, widths, args.seeds, workers=args.workers, scheduler=args.scheduler, progress=True
    )
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recipe": recipe(base),
        "rows": json.loads(frontier.to_json(orient="records")),
    }
    results.write_csv(frontier)
    results.write_json(payload)
    results.write_markdown(render(payload))
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
