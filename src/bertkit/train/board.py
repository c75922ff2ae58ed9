"""TensorBoard logging (`--train.tensorboard DIR`): what metrics.jsonl records, as scalars.

Each run writes under DIR/RUN (RUN: the name of its output directory), so several runs pointed at one
DIR show up side by side in `tensorboard --logdir DIR`: train/loss and train/lr at every logged step,
dev/METRIC at every evaluation.
"""

from __future__ import annotations

from pathlib import Path

from bertkit.errors import BertkitError


class Board:
    def __init__(self, log_dir: str | Path, run: str):
        try:
            # tensorboard is optional (the `track` extra): imported only when a run asks for it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise BertkitError(
                f"--train.tensorboard needs the tensorboard package ({e}): pip install tensorboard "
                "(or bertkit[track]), or leave the option out"
            ) from None
        self.directory = Path(log_dir) / run
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def write(self, record: dict) -> None:
        step = record["step"]
        for key in ("loss", "lr"):
            if key in record:
                self.writer.add_scalar(f"train/{key}", record[key], step)
        for key, value in record.get("dev", {}).items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(f"dev/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
