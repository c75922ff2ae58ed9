"""bertkit benchmark: GLUE or CLUE as downloaded, fine-tuned per task and seed; a leaderboard row per model."""

from __future__ import annotations

import sys

from bertkit.benchmark import BenchmarkConfig, benchmark, markdown
from bertkit.config import parse_args


def main(argv: list[str]) -> int:
    cfg = parse_args(BenchmarkConfig, argv, prog="bertkit benchmark")
    table = benchmark(cfg)
    print(markdown(table))
    print(f"leaderboard -> {cfg.output}/leaderboard.md, leaderboard.json", file=sys.stderr)
    return 0
