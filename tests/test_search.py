"""Semantic search: exact search against numpy brute force, float16/int8 storage on real MiniLM vectors,
the approximate (faiss) index's recall, and `bertkit index build` / `bertkit search` on a tiny model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bertkit.cli.main import main as cli
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.search.build import read_corpus, write_index
from bertkit.search.index import Index, dequantize, exact_search, quantize, recall_at


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ vectors.T  # [Q, N]
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, 1), rows


def clustered(n: int, dim: int, clusters: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Normalised vectors around random centres: neighbourhoods as sentence vectors have them."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(tmp_path, vectors, name="idx", **kw) -> Index:
    out = tmp_path / name
    out.mkdir()
    write_index(out, [vectors], len(vectors), vectors.shape[1], {"model": "synthetic"}, **kw)
    return Index.load(out)


def test_exact_search_equals_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((5000, 32)).astype(np.float32)
    queries = rng.standard_normal((17, 32)).astype(np.float32)
    want_scores, want_rows = brute_force(vectors, queries, 10)
    # chunks of 700 rows: the top k of each chunk is merged with the best so far
    scores, rows = exact_search(vectors, None, queries, 10, chunk_rows=700)
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    # the same through an index on disk, texts read back by row
    index = build(tmp_path, vectors, texts=[f"text {i}" for i in range(5000)], ann=False)
    scores, rows = index.search(queries, 10)
    np.testing.assert_array_equal(rows, want_rows)
    hits = index.hits(scores, rows)
    assert [h.text for h in hits[3]] == [f"text {r}" for r in want_rows[3]]
    assert hits[3][0].as_dict() == {"row": int(want_rows[3, 0]), "score": hits[3][0].score, "text": hits[3][0].text}
    # k above N: every row, ranked
    scores, rows = exact_search(vectors[:7], None, queries, 10)
    np.testing.assert_array_equal(rows, brute_force(vectors[:7], queries, 7)[1])


def test_int8_keeps_each_row_within_half_a_step():
    rng = np.random.default_rng(1)
    block = rng.standard_normal((50, 16)).astype(np.float32)
    block[3] = 0.0  # an all-zero row gets scale 1, not a division by zero
    rows, scales = quantize(block, "int8")
    assert rows.dtype == np.int8 and np.abs(rows).max() == 127
    assert np.all(np.abs(dequantize(rows, scales) - block) <= scales[:, None] / 2 + 1e-7)
    assert scales[3] == 1.0 and not rows[3].any()


@pytest.fixture(scope="module")
def mr_sentences(mr_dir):
    with open(mr_dir / "dev.tsv", encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)][:120]


def test_float16_and_int8_storage_keep_the_top1_on_minilm_vectors(minilm_dir, mr_sentences, tmp_path):
    vectors = Encoder(minilm_dir, device="cpu").encode(mr_sentences)  # [120, 384], normalised
    exact_scores, exact_rows = brute_force(vectors, vectors, 5)
    assert (exact_rows[:, 0] == np.arange(120)).all()
    for dtype, size in (("float32", 4), ("float16", 2), ("int8", 1)):
        index = build(tmp_path, vectors, name=dtype, dtype=dtype, texts=mr_sentences, ann=False)
        assert (tmp_path / dtype / "vectors.npy").stat().st_size < 120 * 384 * size + 200
        scores, rows = index.search(vectors, 5)
        assert (rows[:, 0] == np.arange(120)).all(), dtype  # each sentence finds itself first
        assert index.hits(scores[:1], rows[:1])[0][0].text == mr_sentences[0]
        # scores stay within what the storage loses: 1e-3 for float16, 1e-2 for int8
        np.testing.assert_allclose(
            scores[:, 0], exact_scores[:, 0], atol={"float32": 1e-5, "float16": 1e-3}.get(dtype, 1e-2)
        )
        meta = json.loads((tmp_path / dtype / "index.json").read_text())
        assert (meta["dtype"], meta["count"], meta["dim"]) == (dtype, 120, 384)


def test_approximate_index_reports_its_recall(tmp_path):
    rng = np.random.default_rng(2)
    vectors = clustered(20_000, 32, 200, 0.6, rng)
    index = build(tmp_path, vectors, ann_threshold=10_000)  # past the threshold: faiss IVF
    ann = json.loads((tmp_path / "idx" / "index.json").read_text())["ann"]
    assert ann["kind"] == "ivf-flat" and ann["nlist"] == 141 and ann["recall_sample"] == 1000
    assert ann["recall_at_10"] >= 0.95 and ann["recall_by_nprobe"][str(ann["nprobe"])] == ann["recall_at_10"]
    # on fresh queries (not indexed vectors) the tuned nprobe still finds most of the true top 10
    queries = clustered(200, 32, 200, 0.6, np.random.default_rng(2))[:200]
    _, truth = brute_force(vectors, queries, 10)
    _, found = index.search(queries, 10)
    assert recall_at(found, truth) >= 0.85
    # probing every list is exact search
    _, every = index.search(queries, 10, nprobe=ann["nlist"])
    assert recall_at(every, truth) == 1.0
    _, exact = index.search(queries, 10, exact=True)
    np.testing.assert_array_equal(exact, truth)
    # below the threshold no approximate index is built unless asked for
    assert build(tmp_path, vectors[:500], name="small").ann is None


def test_read_corpus_ids_and_bad_records(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "one"}\n{"id": 7, "text": "two"}\n', encoding="utf-8")
    assert read_corpus(good) == (["one", "two"], ["a", "7"])
    cases = {
        '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n': "id 'a' is also on line 1",
        '{"id": "a", "text": "x"}\n{"text": "y"}\n': "line 2: no `id`, unlike the lines before it",
        '{"text": "x"}\n{"body": "y"}\n': "line 2: no `text` string (found: body)",
        '{"text": "  "}\n': "line 1: empty text",
    }
    for n, (content, says) in enumerate(cases.items()):
        bad = tmp_path / f"bad{n}.jsonl"
        bad.write_text(content, encoding="utf-8")
        with pytest.raises(BertkitError, match=says.replace("(", r"\(").replace(")", r"\)")):
            read_corpus(bad)
    plain = tmp_path / "plain.txt"
    plain.write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(BertkitError, match="--no-texts: .* has no `id` field"):
        read_corpus(plain, keep_texts=False)


TEXTS = [
    "the movie was wonderful and moving",
    "a dull , tedious mess",
    "a gripping thriller with a great cast",
    "I fell asleep halfway through",
    "the soundtrack alone is worth the ticket",
]


@pytest.fixture(scope="module")
def small_index(minilm_dir, tmp_path_factory):
    """An index of TEXTS (with ids) built by `bertkit index build` with MiniLM."""
    d = tmp_path_factory.mktemp("search")
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    args = ["index", "build", "--model", str(minilm_dir), "--input", str(corpus), "--output", str(d / "idx")]
    assert cli([*args, "--device", "cpu"]) == 0
    return d / "idx"


def test_index_build_then_search_cli(minilm_dir, small_index, tmp_path, capsys):
    meta = json.loads((small_index / "index.json").read_text())
    assert meta["model_dir"] == str(minilm_dir.resolve()) and len(meta["model_sha256"]) == 64
    assert (meta["pooling"], meta["normalize"], meta["count"], meta["dim"], meta["ann"]) == ("mean", True, 5, 384, None)
    queries = tmp_path / "queries.txt"
    queries.write_text(TEXTS[2] + "\n" + TEXTS[0] + "\n", encoding="utf-8")
    out = tmp_path / "hits.jsonl"
    args = ["search", "--index", str(small_index), "--queries", str(queries), "-k", "3", "--device", "cpu"]
    assert cli([*args, "--output", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["query"] for r in lines] == [TEXTS[2], TEXTS[0]]
    assert [len(r["hits"]) for r in lines] == [3, 3]
    assert lines[0]["hits"][0] == {"row": 2, "score": lines[0]["hits"][0]["score"], "id": "t2", "text": TEXTS[2]}
    # the scores are the index's vectors against the query's, as the Encoder makes them
    enc = Encoder(minilm_dir, device="cpu")
    want_scores, want_rows = brute_force(enc.encode(TEXTS), enc.encode([TEXTS[2], TEXTS[0]]), 3)
    assert [[h["row"] for h in r["hits"]] for r in lines] == want_rows.tolist()
    np.testing.assert_allclose([[h["score"] for h in r["hits"]] for r in lines], want_scores, rtol=1e-4)
    capsys.readouterr()
    assert cli(["search", "--index", str(small_index), "--query", TEXTS[1], "-k=2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("  1  ") and printed[0].endswith(f"t1  {TEXTS[1]}")
    assert cli([*args, "--output", str(out)]) == 2  # exists: --overwrite replaces it
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert cli([*args, "--output", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    "extra, says",
    [
        (["-k", "0"], "`--k` is 0; it must be >= 1 and <= 1000"),
        (["--query", " "], "--query is empty"),
        (["--model", "TINY"], "is not the model that built the index"),
    ],
)
def test_search_cli_refuses_bad_requests(small_index, tiny_dir, extra, says, capsys):
    extra = [str(tiny_dir) if e == "TINY" else e for e in extra]
    query = [] if "--query" in extra else ["--query", "a film"]
    assert cli(["search", "--index", str(small_index), *query, *extra, "--device", "cpu"]) == 2
    assert says in capsys.readouterr().err


def test_index_build_refuses_existing_output_and_bad_inputs(tiny_dir, small_index, tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("one\ntwo\n", encoding="utf-8")
    base = ["index", "build", "--model", str(tiny_dir), "--device", "cpu"]
    before = {p.name: p.stat().st_mtime_ns for p in small_index.iterdir()}
    assert cli([*base, "--input", str(corpus), "--output", str(small_index)]) == 2
    err = capsys.readouterr().err
    assert "is not empty (ids.bin, ids.offsets.npy, index.json" in err and "pass --overwrite to replace it" in err
    assert {p.name: p.stat().st_mtime_ns for p in small_index.iterdir()} == before  # untouched
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', encoding="utf-8")
    cases = [
        (["--input", str(tmp_path / "none.txt")], "not found: no such file"),
        (["--input", str(dup)], "id '1' is also on line 1"),
        (["--input", str(corpus), "--no-texts"], "has no `id` field"),
        (["--input", str(corpus), "--dtype", "int4"], "int4"),
        (["--input", str(corpus), "--output", str(corpus)], "is also an input"),
    ]
    for extra, says in cases:
        out = [] if "--output" in extra else ["--output", str(tmp_path / "new")]
        assert cli([*base, *extra, *out]) == 2, extra
        assert says in capsys.readouterr().err, extra
        assert not (tmp_path / "new").exists()
    # --overwrite replaces the index with the new one
    out = tmp_path / "again"
    assert cli([*base, "--input", str(corpus), "--output", str(out)]) == 0
    assert cli([*base, "--input", str(corpus), "--output", str(out), "--dtype", "int8", "--overwrite"]) == 0
    assert Index.load(out).dtype == "int8" and (out / "scales.npy").is_file()
    assert cli(["search", "--index", str(tmp_path), "--query", "x"]) == 2
    assert "has no index.json: give a directory written by `bertkit index build`" in capsys.readouterr().err
