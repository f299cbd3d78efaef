"""Behaviour fingerprint: every compression path's output, bit for bit, on two small trained models.

A refactor that is meant to change nothing must leave this file's output unchanged on the same
machine and thread count. For each case it records the parameter count, the accuracy on the
embedded test split (2,000 images) and a SHA-256 of the returned model's ``state_dict`` (names,
dtypes, shapes and bytes), plus the text of the errors some requests must raise, the explorers'
choices and the tidy tables the analysis functions return.

Run from the repository root (about two minutes on two CPU threads)::

    PYTHONPATH=. python benchmarks/behaviour_check.py --out benchmarks/results/behaviour_check.json
    PYTHONPATH=. python benchmarks/behaviour_check.py --compare benchmarks/results/behaviour_check.json

``--compare`` exits with status 1 and lists every case that differs. The committed file is only
comparable on a machine whose float sums match the one that wrote it (same CPU family and thread
count); on another machine, write a reference from the commit before the change first.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

THREADS = 2
REDUCTIONS = (0.5, 0.8)


def state_hash(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(
            t.numpy().tobytes()
            if t.dtype != torch.bfloat16
            else t.view(torch.int16).numpy().tobytes()
        )
    return h.hexdigest()


def frame_hash(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.12g")
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


def run() -> dict[str, Any]:
    import smoothviz
    from smoothviz import analysis
    from smoothviz.compress import (
        BudgetError,
        data_aware_svd_compress,
        interpolative_compress,
        prune_channels,
        prune_magnitude,
        svd_compress,
    )
    from smoothviz.measure import count_params, evaluate
    from smoothviz.provenance import environment_info
    from smoothviz.sweep import sweep

    torch.set_num_threads(THREADS)
    # The fingerprint depends on the thread count: keep smoothviz from sharing out the cores.
    os.environ["SMOOTHVIZ_THREADS"] = str(THREADS)
    data = smoothviz.load_dataset("fashion-mnist-mini")
    base = {"model": "resnet18", "width": 4, "epochs": 3, "train_subset": 4000, "device": "cpu"}
    models = {
        "baseline": smoothviz.train(smoothviz.TrainConfig(**base), progress=False).model,
        "smooth": smoothviz.train(
            smoothviz.TrainConfig(**base, first_order=0.01), progress=False
        ).model,
    }
    cal = data.x_train[:128]
    out: dict[str, Any] = {}

    def case(key: str, fn: Callable[[], nn.Module]) -> None:
        try:
            small = fn()
        except (BudgetError, ValueError, TypeError) as exc:
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        out[key] = {
            "params": count_params(small),
            "accuracy": evaluate(small, data)["accuracy"],
            "sha256": state_hash(small),
            "info": json.loads(json.dumps(getattr(small, "compression_info", None), default=str)),
        }

    for tname, m in models.items():
        m.eval()
        out[f"{tname}/uncompressed"] = {
            "accuracy": evaluate(m, data)["accuracy"],
            "sha256": state_hash(m),
        }
        for r in REDUCTIONS:
            case(f"{tname}/svd/{r}", lambda m=m, r=r: svd_compress(m, param_reduction=r))
            for alloc in ("output_error", "sensitivity"):
                case(
                    f"{tname}/svd-{alloc}/{r}",
                    lambda m=m, r=r, a=alloc: svd_compress(
                        m, param_reduction=r, allocation=a, calibration=cal
                    ),
                )
            case(
                f"{tname}/svd_data_aware/{r}",
                lambda m=m, r=r: data_aware_svd_compress(m, cal, param_reduction=r),
            )
            case(
                f"{tname}/prune_magnitude/{r}",
                lambda m=m, r=r: prune_magnitude(m, param_reduction=r),
            )
        case(f"{tname}/svd-energy", lambda m=m: svd_compress(m, energy=0.9))
        case(f"{tname}/svd-rank2", lambda m=m: svd_compress(m, ranks=2))
        case(f"{tname}/svd-0.99", lambda m=m: svd_compress(m, param_reduction=0.99))
        for opts in (
            {"sequential": False},
            {"allocation": "energy"},
            {"allocation": "sensitivity"},
        ):
            label = ",".join(f"{k}={v}" for k, v in opts.items())
            case(
                f"{tname}/svd_data_aware[{label}]/0.6",
                lambda m=m, o=opts: data_aware_svd_compress(m, cal, param_reduction=0.6, **o),
            )
        case(
            f"{tname}/svd_data_aware-energy",
            lambda m=m: data_aware_svd_compress(m, cal, energy=0.95),
        )
        for r in (0.3, 0.5):
            case(
                f"{tname}/prune_channels/{r}",
                lambda m=m, r=r: prune_channels(m, cal, param_reduction=r),
            )
            case(
                f"{tname}/interpolative/{r}",
                lambda m=m, r=r: interpolative_compress(m, cal, param_reduction=r),
            )
        for imp in ("activation", "bn_scale", "l1"):
            case(
                f"{tname}/prune_channels[{imp}]/0.3",
                lambda m=m, i=imp: prune_channels(m, cal, param_reduction=0.3, importance=i),
            )
        for variant in ("sequential", "one_shot"):
            case(
                f"{tname}/interpolative[{variant}]/0.3",
                lambda m=m, v=variant: interpolative_compress(
                    m, cal, param_reduction=0.3, variant=v
                ),
            )
        case(f"{tname}/interpolative-tol", lambda m=m: interpolative_compress(m, cal, rtol=0.05))
        case(
            f"{tname}/prune_channels-0.99",
            lambda m=m: prune_channels(m, cal, param_reduction=0.99),
        )

    from smoothviz.widgets import PruneExplorer, RankExplorer

    rank_ex = RankExplorer(models, data, param_reduction=0.6, settle_seconds=None)
    for method in rank_ex.method.options:
        rank_ex.method.value = method
        out[f"explorer/rank/{method}"] = {
            "ranks": dict(rank_ex.ranks),
            "sha256": state_hash(rank_ex.compressed_model()),
        }
    prune_ex = PruneExplorer(models, data, param_reduction=0.4, settle_seconds=None)
    for method in prune_ex.method.options:
        prune_ex.method.value = method
        small = prune_ex.compressed_model()
        out[f"explorer/prune/{method}"] = {
            "params": count_params(small),
            "sha256": state_hash(small),
        }

    table = sweep(
        models,
        ["svd", "svd_data_aware", "interpolative"],
        [0.5],
        data,
        calibration_size=128,
        bn_images=256,
        latency_repeats=1,
        progress=False,
    )
    # Timings and the columns added since the reference (seed, the latency's IQR) are left out,
    # so the hash covers exactly what the reference hashed.
    stable = table.drop(
        columns=["latency_ms", "compress_seconds", "device", "seed", "latency_iqr_ms"],
        errors="ignore",
    )
    out["sweep"] = {"sha256": frame_hash(stable), "test_acc": stable["test_acc"].tolist()}
    out["analysis/smoothness"] = frame_hash(analysis.weight_smoothness(models))
    out["analysis/spectra"] = frame_hash(analysis.singular_spectra(models))
    out["analysis/summary"] = frame_hash(analysis.spectrum_summary(models))
    env = environment_info()
    return {"threads": THREADS, "environment": env, "cases": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the fingerprint here (JSON)")
    ap.add_argument(
        "--compare", type=Path, help="compare with this fingerprint; exit 1 on a difference"
    )
    args = ap.parse_args(argv)
    result = run()
    if args.out:
        from smoothviz.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {args.out} ({len(result['cases'])} cases)")
    if args.compare:
        ref = json.loads(args.compare.read_text())["cases"]
        now = result["cases"]
        diff = sorted(k for k in set(ref) | set(now) if ref.get(k) != now.get(k))
        for k in diff:
            print(f"DIFFERS {k}:\n  before {ref.get(k)}\n  after  {now.get(k)}")
        print(f"{len(now) - len(diff)} of {len(set(ref) | set(now))} cases identical")
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
