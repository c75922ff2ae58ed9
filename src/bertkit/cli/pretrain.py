"""bertkit pretrain: masked LM + NSP pretraining, from scratch or continued, on `bertkit pretrain-data` output.

bertkit pretrain --model minilm --data runs/pretrain-data/en --output runs/minilm-en --train.max-steps 2000
bertkit pretrain --model-size mini --vocab zh-vocab --data runs/pretrain-data/zh --output runs/zh-mini
torchrun --nproc_per_node 4 -m bertkit.cli.main pretrain --config configs/pretrain/zh-small.yaml
"""

from __future__ import annotations

import json
import os

from bertkit.config import parse_args
from bertkit.pretrain import PretrainConfig, pretrain


def main(argv: list[str]) -> int:
    cfg = parse_args(PretrainConfig, argv, prog="bertkit pretrain")
    metrics = pretrain(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process prints
        print(json.dumps(metrics, indent=2))
    return 0
