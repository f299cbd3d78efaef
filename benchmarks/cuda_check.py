"""Does each smoothviz path run on a CUDA GPU? One short training and every compression method.

Trains ``resnet18`` (width 8, two epochs on 10,000 full Fashion-MNIST images) on the GPU with every
regulariser switched on at once (the CUDA training path: bf16 autocast, channels_last, each
penalty and the proximal step), then compresses it with every method in
``smoothviz.compress.METHODS`` to 50 % fewer parameters, twice: with the data on the GPU (a serial
sweep) and with the data on the CPU and the model on the GPU (what a Dask worker does), and
re-estimates BatchNorm. Each piece's outcome (ok, or the error) and accuracy go to
``<out>/cuda_check.json`` and ``.md``. Exit status: 0 all ran, 2 the training failed, 3 a
compression failed, 4 no CUDA device.

    python benchmarks/cuda_check.py --out benchmarks/results
    python benchmarks/cuda_check.py --render-only JSON --out DIR   # only the Markdown, from a result
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
from _common import Results, add_render_only, provenance, render_source

from smoothviz.compress import METHODS
from smoothviz.config import TrainConfig
from smoothviz.data import load_dataset
from smoothviz.distributed import error_text
from smoothviz.sweep import sweep
from smoothviz.training import train

CONFIG = {
    "dataset": "fashion-mnist",
    "model": "resnet18",
    "width": 8,
    "epochs": 2,
    "train_subset": 10000,
    "first_order": 1e-2,
    "second_order": 1e-2,
    "nuclear": 1e-3,
    "nuclear_every": 20,
    "proximal": 1e-2,
}


def _error(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    where = f"{Path(frame.filename).name}:{frame.lineno}"
    return f"{error_text(exc)[:550]} (at {where})"


def check(device: str = "cuda") -> dict:
    config = CONFIG | {"device": device}
    out: dict = {"config": config, "training": None, "compression": []}
    t0 = time.perf_counter()
    try:
        run = train(TrainConfig(**config), progress=False, use_cache=False)
    except Exception as exc:
        out["training"] = {"ok": False, "error": _error(exc)}
        return out
    out["training"] = {
        "ok": True,
        "seconds": round(time.perf_counter() - t0, 1),
        "test_acc": float(run.history.test_acc.iloc[-1]),
    }
    model = run.model.eval()
    for where in dict.fromkeys((device, "cpu")):
        data = load_dataset("fashion-mnist", device=where)
        for method in METHODS:
            row = {"data_on": where, "model_on": device, "method": method}
            try:
                t = sweep({"m": model}, [method], [0.5], data, latency_repeats=2, progress=False)
                r = t.iloc[0]
                failed = isinstance(r.error, str)  # a target the method could not reach
                row |= {
                    "ok": not failed,
                    "error": r.error if failed else None,
                    "test_acc": float(r.test_acc),
                    "test_acc_bn_reestimated": float(r.test_acc_bn_reestimated),
                    "param_reduction": float(r.param_reduction),
                    "compress_seconds": float(r.compress_seconds),
                }
            except Exception as exc:
                row |= {"ok": False, "error": _error(exc)}
            out["compression"].append(row)
            print(json.dumps(row), flush=True)
    return out


def markdown(result: dict, env: dict) -> str:
    t = result["training"]
    lines = [
        "# CUDA check: a short training with every regulariser, then every compression method",
        "",
        f"Device: {env['device']}; torch {env['torch']}; CUDA {env.get('cuda', '?')}; "
        f"driver {env.get('driver', '?')}; git {env['git_sha']}; {env['date']}",
        "",
        f"Config: `{json.dumps(result['config'])}`",
        "",
        "Training: "
        + (
            f"ran ({t['seconds']} s with start-up, test accuracy {t['test_acc']:.4f} after "
            f"{CONFIG['epochs']} epochs on {CONFIG['train_subset']:,} images)"
            if t["ok"]
            else f"FAILED: {t['error']}"
        ),
        "",
        "| data on | model on | method | outcome | test acc at 50 % | after BN re-estimation |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in result["compression"]:
        outcome = "ok" if r["ok"] else f"FAILED: {r['error']}"
        acc = f"{r['test_acc']:.4f}" if r.get("test_acc") is not None else ""
        bn = f"{r['test_acc_bn_reestimated']:.4f}" if r.get("test_acc_bn_reestimated") else ""
        lines.append(
            f"| {r['data_on']} | {r['model_on']} | {r['method']} | {outcome} | {acc} | {bn} |"
        )
    lines += ["", "Reproduce on a CUDA machine: `python benchmarks/cuda_check.py`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--device", default="cuda", help="cuda (the check); cpu runs the same steps")
    add_render_only(p)
    args = p.parse_args(argv)
    results = Results(args.out, "cuda_check")
    source = render_source(args.render_only, results)
    if source is not None:
        stored = json.loads(source.read_text())
        results.write_markdown(markdown(stored, stored["provenance"]))
        print(results.path("md").read_text())
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("cuda_check: no CUDA device visible (torch.cuda.is_available() is False)")
        return 4
    result = check(args.device)
    env = provenance(args.device, script=__file__, argv=argv)
    result["provenance"] = env
    results.write_json(result)
    results.write_markdown(markdown(result, env))
    print(markdown(result, env))
    if not result["training"]["ok"]:
        return 2
    return 0 if all(r["ok"] for r in result["compression"]) else 3


if __name__ == "__main__":
    sys.exit(main())
