"""bertkit finetune: train a task head on a pretrained BERT; the best dev checkpoint is kept."""

from __future__ import annotations

import json
import os

from bertkit.config import parse_args
from bertkit.finetune import FinetuneConfig, finetune


def main(argv: list[str]) -> int:
    cfg = parse_args(FinetuneConfig, argv, prog="bertkit finetune")
    metrics = finetune(cfg)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process prints
        print(json.dumps(metrics, indent=2))
    return 0
