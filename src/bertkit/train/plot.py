"""The training curve: loss per logged step and the dev metric per evaluation, as one PNG."""

from __future__ import annotations

import json
from pathlib import Path

from bertkit.outputs import atomic_path


def read_records(jsonl: Path) -> list[dict]:
    return [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]


def training_figure(records: list[dict], metric: str, title: str):
    """A matplotlib Figure: training loss (left axis) and the dev metric (right axis) against the step.
    Every point has a marker, so a run with a single logged step or evaluation still shows it, and one
    legend names both curves."""
    from matplotlib.figure import Figure  # about a second to import: only when a run draws its curve

    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    dev = [(r["step"], r["dev"][metric]) for r in records if "dev" in r and metric in r["dev"]]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    lines = []
    if train:
        lines += ax.plot(*zip(*train), ".-", color="tab:blue", label="training loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss", color="tab:blue")
    if dev:
        ax2 = ax.twinx()
        lines += ax2.plot(*zip(*dev), "o-", color="tab:orange", label=f"dev {metric}")
        ax2.set_ylabel(f"dev {metric}", color="tab:orange")
    if lines:
        ax.legend(lines, [str(line.get_label()) for line in lines], loc="best")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_metrics(jsonl: Path, png: Path, metric: str, title: str = "bertkit training") -> None:
    """`png` from the records of `jsonl` (metrics.jsonl), written atomically; nothing when there are none."""
    if not Path(jsonl).is_file():
        return
    records = read_records(jsonl)
    if not records:
        return
    fig = training_figure(records, metric, title)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100)
