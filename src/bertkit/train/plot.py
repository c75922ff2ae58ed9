"""The training curve: loss per logged step and the dev metric per evaluation, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bertkit.outputs import atomic_path


def plot_metrics(jsonl: Path, png: Path, metric: str) -> None:
    if not Path(jsonl).is_file():
        return
    import matplotlib  # about a second to import: only when a run draws its curve

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the Agg backend

    records = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    dev = [(r["step"], r["dev"][metric]) for r in records if "dev" in r and metric in r["dev"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), color="tab:blue", label="training loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss", color="tab:blue")
    if dev:
        ax2 = ax.twinx()
        ax2.plot(*zip(*dev), "o-", color="tab:orange", label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric}", color="tab:orange")
    ax.set_title("bertkit training")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
