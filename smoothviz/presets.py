"""Named configurations shared by the report, the notebooks and the benchmarks.

``BENCHMARK_MODEL`` is the model every benchmark under ``benchmarks/`` measures on (and the report's
``full`` preset trains): the CIFAR-style ResNet-18 at width 16, 4 epochs on 20,000 full
Fashion-MNIST training images, about 4 minutes per training on a 2-core CPU.
"""

from __future__ import annotations

from typing import Any

BENCHMARK_MODEL: dict[str, Any] = {
    "dataset": "fashion-mnist",
    "model": "resnet18",
    "width": 16,
    "epochs": 4,
    "train_subset": 20000,
}
