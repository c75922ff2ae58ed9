"""Real sentences for self-checks (export parity, conversion parity): MR's dev set when it is fetched,
else a built-in list that covers punctuation, accents, CJK, numbers and URLs."""

from __future__ import annotations

from bertkit.data.readers import read_texts
from bertkit.fetch import cached_path

# Varied sentences for the parity check when the `mr` data set is not fetched.
BUILT_IN = [
    "This is an example sentence.",
    "Each sentence is converted.",
    "The gorgeously elaborate continuation of ''The Lord of the Rings'' trilogy is so huge.",
    "Effective but too tepid biopic.",
    "Café déjà vu, naïve coöperation — 東京 and 北京!",
    "Where was the first Olympic Games held, and in which year?",
    "no.",
    "A 12.5% rise in Q3 revenue (to $4,200,000) surprised analysts at 9:30 a.m. on 2024-03-01.",
    "I've never seen anything like it; it's dull, overlong and, frankly, a waste of two hours.",
    "URLs like https://example.com/a?b=c and e-mails like someone@example.org get split into pieces.",
]


def sample_texts(n: int = 32) -> list[str]:
    """Real sentences: the first `n` of the fetched `mr` dev set, else the built-in list."""
    mr = cached_path("mr")
    if mr is not None and (mr / "dev.tsv").is_file():
        return read_texts(mr / "dev.tsv")[:n]
    return BUILT_IN
