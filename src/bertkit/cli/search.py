"""bertkit search: the texts of an index nearest to a query, or to each query of a file (JSONL out).

    bertkit search --index idx --query "a gripping thriller" -k 5
    bertkit search --index idx --queries questions.txt --output hits.jsonl

Queries are encoded with the model and settings the index was built with (index.json); the index is
searched approximately when it has an approximate part, exactly with --exact.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass

from bertkit.config import option, parse_args, required
from bertkit.data.readers import read_texts
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data
from bertkit.outputs import atomic_write_text, check_output_file
from bertkit.search.build import query_encoder
from bertkit.search.index import MAX_K, Index, results

log = logging.getLogger("bertkit")


@dataclass
class SearchConfig:
    index: str = required("an index directory written by `bertkit index build`")
    query: str | None = option(None, "one query: its hits are printed")
    queries: str | None = option(None, "a file of queries (one a line, JSONL/TSV with `text`, or a data name)")
    output: str | None = option(None, "with --queries: write one JSON line per query here (default: standard output)")
    k: int = option(10, "hits per query (-k works too)", at_least=1, at_most=MAX_K)
    exact: bool = option(False, "score every vector, even when the index has an approximate part")
    nprobe: int | None = option(
        None, "clusters the approximate index reads per query (default: the one tuned at build time)", at_least=1
    )
    model: str | None = option(None, "the index's model, if it has moved since (default: the one index.json names)")
    batch_size: int = option(32, "queries per forward pass", at_least=1)
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    overwrite: bool = option(False, "replace --output when it already exists")


def main(argv: list[str]) -> int:
    argv = ["--k" if a == "-k" else "--k=" + a[3:] if a.startswith("-k=") else a for a in argv]
    cfg = parse_args(SearchConfig, argv, prog="bertkit search")
    if (cfg.query is None) == (cfg.queries is None):
        raise BertkitError('pass --query "TEXT", or --queries FILE for a file of them (not both)')
    if cfg.query is not None and not cfg.query.strip():
        raise BertkitError('--query is empty: give the text to search for, e.g. --query "a gripping thriller"')
    if cfg.output is not None and cfg.queries is None:
        raise BertkitError("--output goes with --queries; a single --query prints its hits")
    index = Index.load(cfg.index)
    source = resolve_data(cfg.queries) if cfg.queries is not None else None
    out = check_output_file(cfg.output, [index.path, source], cfg.overwrite) if cfg.output else None
    queries = [cfg.query] if source is None else read_texts(source)
    encoder = query_encoder(index, cfg.model, cfg.device, cfg.batch_size)
    start = time.perf_counter()
    vectors = encoder.encode(queries)
    scores, rows = index.search(vectors, cfg.k, exact=cfg.exact, nprobe=cfg.nprobe)
    found = results(queries, index.hits(scores, rows))
    seconds = time.perf_counter() - start
    how = "exactly" if index.ann is None or cfg.exact else "approximately"
    log.info("%d queries searched %s over %d vectors in %.2f s", len(queries), how, index.count, seconds)
    if cfg.query is not None:
        for rank, hit in enumerate(found[0]["hits"], 1):
            name = f"{hit['id']}  " if "id" in hit else f"row {hit['row']}  "
            print(f"{rank:>3}  {hit['score']:.4f}  {name}{hit.get('text', '')}".rstrip())
        return 0
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in found)
    if out is None:
        sys.stdout.write(lines)
    else:
        atomic_write_text(out, lines)
        log.info("%d results -> %s", len(found), out)
    return 0
