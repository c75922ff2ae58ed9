"""bertkit distill: a fine-tuned teacher -> a compact student of the same task (see bertkit.distill).

    bertkit distill --teacher runs/mr --student mini --train mr:train --unlabeled corpus-en --dev mr:dev \
        --output runs/mr-mini
"""

from __future__ import annotations

import json
import os

from bertkit.config import parse_args
from bertkit.distill import DistillConfig, distill


def main(argv: list[str]) -> int:
    cfg = parse_args(DistillConfig, argv, prog="bertkit distill")
    metrics = distill(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process prints
        print(json.dumps(metrics, indent=2))
    return 0
