"""Accuracy without fine-tuning on architectures nobody here wrote: mobilenet_v2 and a small ViT.

Two setups (``--setups``), each trained on the full Fashion-MNIST (60,000 images; ``--dataset``
to change) through :func:`smoothviz.train` and its checkpoint cache:

- ``mobilenet_v2``: torchvision's ``mobilenet_v2`` (``torchvision:mobilenet_v2``, random init,
  first conv adapted to one input channel): inverted residuals with depthwise convolutions;
- ``vit``: torchvision's ``VisionTransformer`` in smoothviz's small configuration (``vit``:
  4x4 patches, 6 layers, 4 heads, hidden width 64, MLP 256; ``smoothviz.models.VIT_CONFIG``):
  multi-head attention, LayerNorm, GELU MLP blocks.

Every method in ``smoothviz.compress.METHODS`` then compresses each model to 50, 70 and 85 %
fewer parameters with 512 calibration images, no fine-tuning, evaluated by
:func:`smoothviz.sweep.sweep` on the test split: accuracy straight after compression and after
BatchNorm re-estimation (its own column; the ViT has no BatchNorm), parameters, FLOPs, latency.
A target a method cannot reach is a row whose ``error`` says why (the layers it leaves out).

Writes ``<name>.csv`` (the tidy table), ``<name>.json`` (rows, provenance, training configs and
hashes) and ``<name>.md`` under ``--out``. Each finished (setup, method) is appended to
``<name>.partial.jsonl`` (``_common.ResumeStore``), so a stopped run started again with the same
code and options resumes there; ``--render-only [JSON]`` rewrites the Markdown from a stored
result. Run from the repository root on an idle machine::

    PYTHONPATH=. python benchmarks/zoo_accuracy.py
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

from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.sweep import sweep
from smoothviz.training import resolve_device, train

SETUPS: dict[str, dict[str, Any]] = {
    "mobilenet_v2": {"model": "torchvision:mobilenet_v2", "width": None, "epochs": 4},
    "vit": {"model": "vit", "width": 64, "epochs": 8},
}
REDUCTIONS = (0.5, 0.7, 0.85)
BN_IMAGES = 2048  # BatchNorm re-estimation images (fewer when the training split is smaller)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--reductions", type=float, nargs="+", default=list(REDUCTIONS))
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=None, help="override every setup's epochs")
    p.add_argument("--vit-width", type=int, default=None, help="override the ViT's hidden width")
    p.add_argument("--train-subset", type=int, default=None, help="train on this many images")
    p.add_argument("--test-subset", type=int, default=None, help="evaluate on this many images")
    p.add_argument("--device", default="auto")  # part of the config hash
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calibration-size", type=int, default=512)
    p.add_argument("--latency-repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--name", default="zoo_accuracy")
    add_render_only(p)
    return p.parse_args(argv)


def config_for(setup: str, args) -> TrainConfig:
    spec = SETUPS[setup]
    width = args.vit_width if setup == "vit" and args.vit_width else spec["width"]
    return TrainConfig(
        dataset=args.dataset,
        model=spec["model"],
        width=width,
        epochs=args.epochs or spec["epochs"],
        train_subset=args.train_subset,
        seed=args.seed,
        device=args.device,
    )


def render(payload: dict) -> str:
    """The Markdown of a stored result (what ``main`` writes beside its JSON)."""
    df = pd.DataFrame(payload["rows"])
    env = payload["provenance"]
    configs = payload["configs"]
    lines = [
        "# Compression without fine-tuning on torchvision architectures",
        "",
        f"Device: {env['device']}; torch {env['torch']}; torchvision {env['torchvision']}; "
        f"git {env['git_sha']}; {env['date']}; sweep wall time {payload['sweep_seconds']:.0f} s.",
        "",
        "Setups: "
        + "; ".join(
            f"`{s}`: model `{c['model']}`"
            + (f" width {c['width']}" if c["width"] else "")
            + f", {c['epochs']} epochs on {c['dataset']}"
            + (f" ({c['train_subset']} training images)" if c["train_subset"] else "")
            for s, c in configs.items()
        )
        + f". One seed ({payload['arguments']['seed']}). Test accuracy straight after compression "
        "(`acc`, no gradient step) and after BatchNorm re-estimation on "
        f"{payload.get('bn_images', BN_IMAGES):,} training images "
        f"(`acc BN`, its own column), {payload['test_images']} test images, "
        f"{payload['arguments']['calibration_size']} calibration images; targets are whole-network "
        "parameter reductions, met within 1 pp (`achieved`). Latency: median forward time of a "
        "batch of 32 test images on this device (rough on a shared machine).",
        "",
    ]
    base = df.drop_duplicates("setup")
    lines += [
        "Uncompressed test accuracy: "
        + ", ".join(f"{r.setup} {r.test_acc_uncompressed:.4f}" for r in base.itertuples())
        + ".",
        "",
        "| setup | method | target | achieved | acc | Δ | acc BN | params | MFLOPs | latency ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in df.itertuples():
        if isinstance(r.error, str):
            lines.append(
                f"| {r.setup} | {r.method} | {r.target_reduction:.2f} | not reached | | | | | | |"
            )
            continue
        bn = "" if pd.isna(r.test_acc_bn_reestimated) else f"{r.test_acc_bn_reestimated:.4f}"
        lines.append(
            f"| {r.setup} | {r.method} | {r.target_reduction:.2f} | {r.param_reduction:.3f} | "
            f"{r.test_acc:.4f} | {(r.test_acc - r.test_acc_uncompressed) * 100:+.1f} | {bn} | "
            f"{int(r.params)} | {r.flops / 1e6:.1f} | {r.latency_ms:.1f} |"
        )
    failed = df[df.error.notna()]
    if len(failed):
        lines += ["", "## Targets not reached", ""]
        lines += [
            f"- {r.setup} / {r.method} / {r.target_reduction}: {r.error}"
            for r in failed.itertuples()
        ]
    return "\n".join(lines) + "\n"


def chunk_key(setup: str, method: str, args, sha: str) -> str:
    """What must match for a stored (setup, method) chunk to be reused on resume."""
    keep = (
        "reductions",
        "dataset",
        "epochs",
        "vit_width",
        "train_subset",
        "test_subset",
        "seed",
        "calibration_size",
    )
    return json.dumps([setup, method, sha, {k: getattr(args, k) for k in keep}])


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
    env = provenance(device, script=__file__, argv=argv)  # the code that produced the numbers
    store = ResumeStore(results.path("partial.jsonl"), key=lambda chunk: chunk["key"])
    done = {key: chunk["rows"] for key, chunk in store.records().items()}
    data = load_dataset(args.dataset, device=device)
    if args.test_subset:
        data = data.subset(n_test=args.test_subset, seed=args.seed)
    tables, configs = [], {}
    t0 = time.perf_counter()
    for setup in args.setups:
        cfg = configs[setup] = config_for(setup, args)
        model = None
        for method in args.methods:
            key = chunk_key(setup, method, args, env["git_sha"])
            if key in done:
                tables.append(pd.DataFrame(done[key]))
                continue
            if model is None:  # trained once per setup (or loaded from the checkpoint cache)
                model = train(cfg, progress=True).model.eval()
            df = sweep(
                {setup: model},
                [method],
                args.reductions,
                data,
                calibration_size=args.calibration_size,
                bn_images=BN_IMAGES,
                latency_repeats=args.latency_repeats,
                seed=args.seed,
            ).assign(setup=setup, model=cfg.model, git_sha=env["git_sha"])
            tables.append(df)
            store.put({"key": key, "rows": json.loads(df.to_json(orient="records"))})
    seconds = time.perf_counter() - t0
    df = pd.concat(tables, ignore_index=True).drop(columns="training")
    df = df[["setup", "model", *[c for c in df.columns if c not in ("setup", "model")]]]
    results.write_csv(df)
    payload = {
        "provenance": env,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "configs": {name: cfg.to_dict() for name, cfg in configs.items()},
        "config_hashes": {name: cfg.config_hash() for name, cfg in configs.items()},
        "test_images": len(data.y_test),
        "bn_images": min(BN_IMAGES, len(data.y_train)),  # what sweep() re-estimates BN on
        "sweep_seconds": seconds,
        "rows": json.loads(df.to_json(orient="records")),
    }
    results.write_json(payload)
    results.write_markdown(render(payload))
    store.clear()  # the complete result is written
    print(results.path("md").read_text())


if __name__ == "__main__":
    main()
