"""Channel methods without fine-tuning: every option of prune_channels and interpolative_compress.

For the cached ResNet-18 (width 16, 4 epochs, 20,000 full Fashion-MNIST training images) trained
as baseline and with ``first_order=0.02``, evaluated on the full 10,000-image test set, and for the
small CNN (width 16, 4 epochs, embedded data), compress at 30/50/70/85 % fewer parameters with

- ``prune_channels``: the default (Fisher importance, bias compensation, residual groups), each
  of the three changed alone (every importance, compensation off, residual groups off), the
  data-free default (BN scale without compensation) and the old behaviour (raw L1, neither);
- ``interpolative_compress``: each variant (corrected, sequential, one_shot) with the defaults
  (compensation and residual groups on) and as in the paper (both off), plus one-shot with each
  of the two switched off alone,

and measure the test accuracy straight after compression (no gradient step, no BatchNorm
re-estimation). Calibration: 512 training images (the sweep's choice). Writes
``channel_methods.json`` (rows + provenance) and ``channel_methods.md`` under ``--out``.
Rows are appended to ``--partial`` (a resume store, ``_common.ResumeStore``: one JSON row per
line) as they finish so an interrupted run resumes where it stopped.

Run from the repository root: ``python benchmarks/channel_methods.py`` (CPU; hours under load,
the checkpoints are loaded from the cache or trained first). ``--render-only [JSON]`` rewrites
the Markdown from a stored result.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import Results, ResumeStore, add_render_only, provenance, render_source
from tqdm.auto import tqdm

from smoothviz.compress import (
    BudgetError,
    interpolative_compress,
    interpolative_factors,
    prune_channels,
)
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.measure import count_params, evaluate
from smoothviz.presets import BENCHMARK_MODEL
from smoothviz.training import train

REDUCTIONS = (0.3, 0.5, 0.7, 0.85)
MODELS = {
    "resnet18-w16 baseline": TrainConfig(**BENCHMARK_MODEL),
    "resnet18-w16 first_order=0.02": TrainConfig(**BENCHMARK_MODEL, first_order=0.02),
    "cnn-w16 baseline": TrainConfig(model="cnn", width=16, epochs=4),
}


def settings() -> list[dict]:
    """The compression settings: each method's default, then one change at a time, then the old
    behaviour (raw L1, no compensation, no residual groups; the paper's linear ID)."""

    def prune(importance, compensate, residual):
        return {
            "method": "prune_channels",
            "importance": importance,
            "compensate": compensate,
            "residual": residual,
        }

    def idc(variant, compensate, residual):
        return {
            "method": "interpolative",
            "variant": variant,
            "compensate": compensate,
            "residual": residual,
        }

    return [
        prune("fisher", True, True),  # default with calibration
        prune("fisher", True, False),
        prune("fisher", False, True),
        prune("activation", True, True),
        prune("bn_scale", True, True),
        prune("bn_scale", False, True),  # default without calibration
        prune("l1", True, True),
        prune("l1", False, False),  # the old prune_channels (plus the stem as a producer)
        idc("corrected", True, True),  # default
        idc("sequential", True, True),
        idc("one_shot", True, True),
        idc("one_shot", False, True),
        idc("one_shot", True, False),
        idc("corrected", False, False),
        idc("sequential", False, False),  # Algorithm 1 of Chee et al.
        idc("one_shot", False, False),  # the old interpolative_compress
    ]


def label(s: dict) -> str:
    kind = s.get("importance") or s.get("variant")
    flags = f"comp={'on' if s['compensate'] else 'off'} res={'on' if s['residual'] else 'off'}"
    return f"{s['method']} {kind} {flags}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--reductions", type=float, nargs="+", default=list(REDUCTIONS))
    p.add_argument(
        "--settings",
        nargs="+",
        default=None,
        choices=[label(s) for s in settings()],
        metavar="LABEL",
        help="measure only these settings (labels as in the table, e.g. "
        "'prune_channels fisher comp=on res=on'); default: every setting",
    )
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="channel_methods")
    p.add_argument("--partial", type=Path, default=Path("/tmp/channel_methods.partial.jsonl"))
    p.add_argument(
        "--keep-partial",
        action="store_true",
        help="keep the partial file after writing the results (to merge it into another run)",
    )
    p.add_argument(
        "--report-only",
        type=Path,
        nargs="+",
        metavar="PARTIAL",
        help="compute nothing: write the results from the rows in these partial (.jsonl) or "
        "results (.json) files; settings not measured stay empty",
    )
    add_render_only(p)
    return p.parse_args(argv)


def _row_key(row: dict) -> tuple:
    return (row["model"], row["setting"], row["target_reduction"])


def compress(model, s: dict, target: float, calibration, cache: dict):
    if s["method"] == "prune_channels":
        return prune_channels(
            model,
            calibration,
            param_reduction=target,
            importance=s["importance"],
            compensate=s["compensate"],
            residual=s["residual"],
        )
    key = (s["compensate"], s["residual"])
    if key not in cache:
        cache[key] = interpolative_factors(
            model, calibration, compensate=s["compensate"], residual=s["residual"]
        )
    return interpolative_compress(
        model, param_reduction=target, variant=s["variant"], factors=cache[key]
    )


def render(payload: dict) -> str:
    """The Markdown of a stored result (what ``write_results`` writes beside its JSON)."""
    arguments = payload["arguments"]
    return markdown(
        payload["rows"],
        payload["provenance"],
        payload["uncompressed_test_acc"],
        calibration_size=arguments["calibration_size"],
        assembled=bool(arguments.get("report_only")),
    )


def markdown(
    rows: list[dict], env: dict, uncompressed: dict, *, calibration_size: int, assembled: bool
) -> str:
    """The tables, one per model: each setting's accuracy at each target (``assembled``: the
    rows were gathered by ``--report-only`` from separate runs)."""
    lines = [
        "# Channel methods without fine-tuning",
        "",
        f"Device: {env['device']}; torch {env['torch']}; git {env['git_sha']}; {env['date']}. "
        "Timings are not reported: the machine was shared.",
        "",
        "Test accuracy straight after compression (no gradient step, no BatchNorm "
        "re-estimation); columns are the whole-network parameter-reduction targets (met within "
        f"1 pp); {calibration_size} training images for calibration. In brackets: the change "
        "against the uncompressed model in percentage points. `comp`: bias compensation, `res`: "
        "residual groups. Produced by `python benchmarks/channel_methods.py`.",
        "",
    ]
    if assembled:
        lines[-1:-1] = [
            "Assembled with `--report-only` from rows measured in separate runs of the same "
            "script; an empty cell was not measured.",
            "",
        ]
    targets = sorted({r["target_reduction"] for r in rows})
    for model in uncompressed:
        base = uncompressed[model]
        lines += [
            f"## {model} (uncompressed {base:.4f})",
            "",
            "| setting | " + " | ".join(f"{t:.2f}" for t in targets) + " |",
            "|---|" + "---:|" * len(targets),
        ]
        by_setting: dict[str, dict] = {}
        for r in rows:
            if r["model"] == model:
                by_setting.setdefault(r["setting"], {})[r["target_reduction"]] = r
        for setting, cells in by_setting.items():
            out = []
            for t in targets:
                r = cells.get(t)
                if r is None:
                    out.append("")
                elif r["error"]:
                    out.append("unreachable")
                else:
                    out.append(f"{r['test_acc']:.4f} ({100 * (r['test_acc'] - base):+.1f})")
            lines.append(f"| {setting} | " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines)


def write_results(rows: list[dict], uncompressed: dict, args, argv=None) -> None:
    """JSON (rows + provenance) and the Markdown tables under ``args.out``."""
    payload = {
        "provenance": provenance("cpu", script=__file__, argv=argv),
        "arguments": {
            k: [str(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
        },
        "configs": {name: MODELS[name].to_dict() for name in uncompressed},
        "uncompressed_test_acc": uncompressed,
        "rows": rows,
    }
    results = Results(args.out, args.name)
    results.write_json(payload)
    results.write_markdown(render(payload))
    print(results.path("md").read_text())


def report_only(args, argv=None) -> None:
    """Results from the rows already measured (in plan order; cells not measured stay empty)."""
    found = {}
    for path in args.report_only:
        if path.suffix == ".json":  # a finished run's results
            measured = json.loads(path.read_text())["rows"]
        else:
            measured = ResumeStore(path, key=_row_key).records().values()
        for r in measured:
            found[_row_key(r)] = r
    rows, uncompressed = [], {}
    for m in args.models:
        for s in settings():
            for t in args.reductions:
                r = found.get((m, label(s), t))
                if r is not None:
                    rows.append(r)
                    uncompressed[m] = r["test_acc_uncompressed"]
    write_results(rows, uncompressed, args, argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = Results(args.out, args.name)
    source = render_source(args.render_only, results)
    if source is not None:
        results.write_markdown(render(json.loads(source.read_text())))
        print(results.path("md").read_text())
        return
    if args.report_only:
        report_only(args, argv)
        return
    store = ResumeStore(args.partial, key=_row_key)
    done = store.records()
    chosen = [s for s in settings() if args.settings is None or label(s) in args.settings]
    plan = [(m, s, t) for m in args.models for s in chosen for t in args.reductions]
    bar = tqdm(total=len(plan), desc="channel methods")
    rows, uncompressed = [], {}
    for model_name in args.models:
        cfg = MODELS[model_name]
        model = train(cfg, progress=False).model.cpu().eval()
        data = load_dataset(cfg.dataset)
        g = torch.Generator().manual_seed(args.seed)
        perm = torch.randperm(len(data.y_train), generator=g)
        calibration = data.x_train[perm[: args.calibration_size]]
        uncompressed[model_name] = evaluate(model, data)["accuracy"]
        cache: dict = {}
        for s in chosen:
            for target in args.reductions:
                key = (model_name, label(s), target)
                bar.set_postfix_str(f"{model_name} | {label(s)} | {target}")
                if key in done:
                    rows.append(done[key])
                    bar.update()
                    continue
                row = {
                    "model": model_name,
                    "setting": label(s),
                    **s,
                    "target_reduction": target,
                    "config_hash": cfg.config_hash(),
                    "test_acc_uncompressed": uncompressed[model_name],
                    "error": None,
                }
                t0 = time.perf_counter()
                try:
                    small = compress(model, s, target, calibration, cache)
                except BudgetError as exc:
                    row["error"] = str(exc)
                else:
                    row["seconds_compress"] = time.perf_counter() - t0
                    row["params"] = count_params(small)
                    row["param_reduction"] = 1 - row["params"] / count_params(model)
                    row["test_acc"] = evaluate(small, data)["accuracy"]
                rows.append(row)
                store.put(row)
                bar.update()
    bar.close()
    write_results(rows, uncompressed, args, argv)
    if not args.keep_partial:
        store.clear()


if __name__ == "__main__":
    main()
