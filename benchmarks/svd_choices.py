"""Which choices make the SVD methods lose least without fine-tuning: the measurements behind the
defaults of ``svd`` and ``svd_data_aware`` (allocation score, sequential refit, damping, output
weighting, calibration size).

For each training (the baseline and first-order-smooth ``resnet18``, width 16, 4 epochs on 20,000
full Fashion-MNIST images; loaded from the checkpoint cache, trained when missing), each variant
and each target reduction: compress, then test accuracy on the full 10,000-image test split, no
fine-tuning, no BatchNorm re-estimation. Writes ``svd_choices.{json,md,csv}`` under ``--out``.

Run from the repository root: ``PYTHONPATH=. python benchmarks/svd_choices.py`` (CPU; about an
hour on one busy core, most of it evaluating on 10,000 images). Each finished row is appended to
``<name>.partial.jsonl`` (a resume store, ``_common.ResumeStore``); a stopped run started again
with the same code resumes from there. ``--render-only [JSON]`` rewrites the Markdown from a
stored result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _common import Results, ResumeStore, add_render_only, provenance, render_source

from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.measure import count_params, evaluate
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.sweep import compress
from smoothviz.training import resolve_device, train

TRAININGS = {"baseline": {}, "first_order": {"first_order": 0.02}}
REDUCTIONS = (
    0.7,
    0.85,
)  # where the choices matter (the defaults at every target: compression_tradeoff)
# name -> (method, options, calibration images, reductions or None for REDUCTIONS, trainings or
# None for every training). The side variants are measured where a choice bites hardest.
Variant = tuple[str, dict[str, Any], int, tuple[float, ...] | None, tuple[str, ...] | None]
SIDE = ((0.85,), ("baseline",))
VARIANTS: dict[str, Variant] = {
    "svd energy (default)": ("svd", {}, 512, None, None),
    "svd output_error": ("svd", {"allocation": "output_error"}, 512, None, None),
    "svd sensitivity": ("svd", {"allocation": "sensitivity"}, 512, None, None),
    "data-aware output_error sequential (default)": ("svd_data_aware", {}, 512, None, None),
    "data-aware output_error one-shot": ("svd_data_aware", {"sequential": False}, 512, None, None),
    "data-aware energy sequential": ("svd_data_aware", {"allocation": "energy"}, 512, None, None),
    "data-aware sensitivity sequential": (
        "svd_data_aware",
        {"allocation": "sensitivity"},
        512,
        None,
        None,
    ),
    "data-aware sequential, no BatchNorm weighting": (
        "svd_data_aware",
        {"output_weighting": "none"},
        512,
        *SIDE,
    ),
    "data-aware sequential, damping 1e-3": ("svd_data_aware", {"damping": 1e-3}, 512, *SIDE),
    "data-aware sequential, damping 1e-1": ("svd_data_aware", {"damping": 1e-1}, 512, *SIDE),
    "data-aware sequential, 256 calibration images": ("svd_data_aware", {}, 256, *SIDE),
    "svd sensitivity, AIMET level rule": ("svd", {"rule": "level"}, 512, (0.7,), ("baseline",)),
}


def _level_rule(model, target, calibration, cache):
    """Weight-only SVD allocated by AIMET's equal-damage rule (not offered as an option)."""
    from smoothviz.compress import allocate, compress_from_factors, svd_factors
    from smoothviz.compress.data_aware_svd import rank_sensitivity
    from smoothviz.compress.sensitivity import unit_scores

    if "svd" not in cache:  # the key sweep.compress uses for weight-only factors
        cache["svd"] = svd_factors(model)
    factors = cache["svd"]
    scores = unit_scores(rank_sensitivity(model, factors, calibration), rule="level")
    ranks = allocate(scores, factors.params_at, factors.total_params, target)
    return compress_from_factors(model, factors, ranks)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trainings", nargs="+", default=list(TRAININGS), choices=list(TRAININGS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--reductions", type=float, nargs="+", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="svd_choices")
    add_render_only(p)
    return p.parse_args(argv)


def render(payload: dict) -> str:
    """The Markdown of a stored result (what ``main`` writes beside its JSON)."""
    base = payload.get("test_acc_uncompressed")
    if base is None:  # results written before the JSON kept it: each training's rows carry it
        base = {r["training"]: r["test_acc_uncompressed"] for r in payload["rows"]}
    return markdown(pd.DataFrame(payload["rows"]), payload["provenance"], base)


def markdown(df: pd.DataFrame, env: dict, base: dict[str, float]) -> str:
    table = df.pivot_table(
        index=["variant"], columns=["training", "target_reduction"], values="test_acc", sort=False
    )
    cols = list(table.columns)
    lines = [
        "# SVD choices: resnet18 (width 16, 4 epochs, 20,000 Fashion-MNIST images)",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}.",
        "",
        "Test accuracy on the full 10,000-image test split straight after compression (no "
        "fine-tuning, no BatchNorm re-estimation). Uncompressed: "
        + ", ".join(f"{k} {v:.4f}" for k, v in base.items())
        + ". `compress_seconds` (in the JSON/CSV) includes the once-per-model factors and "
        "sensitivity tables in the first call of each cache; timings were taken on a shared CPU.",
        "",
        "| variant | " + " | ".join(f"{t} {r:.2f}" for t, r in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for variant, row in table.iterrows():
        cells = " | ".join(
            "" if row[c] != row[c] else f"{row[c]:.4f} ({row[c] - base[c[0]]:+.4f})" for c in cols
        )
        lines.append(f"| {variant} | {cells} |")
    return "\n".join(lines) + "\n"


def _row_key(row: dict) -> tuple:
    """A row is reused only by the code that measured it (its git SHA)."""
    return (row["git_sha"], row["training"], row["variant"], row["target_reduction"])


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    # at the start: the code that produced the numbers
    env = provenance(device, script=__file__, argv=argv)
    data = load_dataset("fashion-mnist", device=device)
    perm = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(args.seed))
    configs = {
        name: TrainConfig(
            **BENCHMARK_MODEL,
            seed=args.seed,
            device=args.device,
            **TRAININGS[name],
        )
        for name in args.trainings
    }
    # One record per finished row, so a stopped run resumes where it was (only rows of this code).
    store = ResumeStore(results.path("partial.jsonl"), key=_row_key)
    done = {k[1:]: row for k, row in store.records().items() if k[0] == env["git_sha"]}
    rows, base = [], {}
    for training, cfg in configs.items():
        model = train(cfg, progress=True).model.eval()
        earlier = [r for k, r in done.items() if k[0] == training]
        base[training] = (
            earlier[0]["test_acc_uncompressed"] if earlier else evaluate(model, data)["accuracy"]
        )
        total = count_params(model)
        caches: dict[int, dict] = {}
        for variant in args.variants:
            method, options, n_calib, reductions, trainings = VARIANTS[variant]
            if trainings is not None and training not in trainings:
                continue
            calibration = data.x_train[perm[:n_calib]]
            cache = caches.setdefault(n_calib, {})
            for target in args.reductions or reductions or REDUCTIONS:
                if (training, variant, target) in done:
                    rows.append(done[(training, variant, target)])
                    continue
                t0 = time.perf_counter()
                if "rule" in options:
                    small = _level_rule(model, target, calibration, cache)
                else:
                    small = compress(
                        model, method, target, calibration=calibration, cache=cache, options=options
                    )
                seconds = time.perf_counter() - t0
                acc = evaluate(small, data)["accuracy"]
                row = {
                    "training": training,
                    "variant": variant,
                    "method": method,
                    "options": json.dumps(options, sort_keys=True),
                    "calibration_images": n_calib,
                    "target_reduction": target,
                    "param_reduction": 1.0 - count_params(small) / total,
                    "test_acc": acc,
                    "test_acc_uncompressed": base[training],
                    "compress_seconds": seconds,
                    "git_sha": env["git_sha"],
                }
                rows.append(row)
                store.put(row)
                print(json.dumps(row), flush=True)
    df = pd.DataFrame(rows)
    results.write_csv(df)
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
        "config_hashes": {name: cfg.config_hash() for name, cfg in configs.items()},
        "test_acc_uncompressed": base,
        "rows": json.loads(df.to_json(orient="records")),
    }
    results.write_json(payload)
    results.write_markdown(render(payload))
    store.clear()  # the complete result is written
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
