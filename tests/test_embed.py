"""finetune --task embed: in-batch-negatives training on pairs and CoSENT on scored pairs raise their
dev metrics on toy sets; the metrics and the loss against hand computations and scipy; the output
is a sentence-transformers directory that bertkit and sentence-transformers encode alike."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from bertkit.cli.main import main as cli
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.metrics import spearman
from bertkit.tasks.embed import EmbedTask, retrieval_metrics

WORDS = "apple river castle violin tiger planet copper meadow harbor lantern falcon desert glacier".split()
WORDS += "orchid canyon marble thunder willow saddle beacon crystal ember forest island jungle kettle".split()


def _pairs(path, n: int = 24, negatives: bool = False, seed: int = 0) -> None:
    """Anchor `tell me about the W`, positive `a fact on W and W2`: matching means finding W."""
    rng = random.Random(seed)
    rows = ["anchor\tpositive" + ("\tnegative" if negatives else "")]
    for w in WORDS[:n]:
        other = rng.choice([x for x in WORDS if x != w])
        row = f"tell me about the {w}\tsomething is known of {w} near a {rng.choice(WORDS)}"
        rows.append(row + (f"\tsomething is known of {other} near a {w}" if negatives else ""))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _finetune(model, train, dev, out, *extra) -> int:
    args = ["finetune", "--task", "embed", "--model", str(model), "--train", str(train), "--dev", str(dev)]
    args += ["--output", str(out), "--max-length", "32", "--train.batch-size=8", "--device", "cpu"]
    return cli([*args, *extra])


def test_retrieval_metrics_and_spearman_by_hand():
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    corpus = np.array([[1.0, 0.1], [0.1, 1.0], [-1.0, 0.0]])
    # query 0's gold is first; query 1's gold (row 2) is third; query 2's gold (row 1) is first
    m = retrieval_metrics(queries, corpus, [0, 2, 1])
    assert m == pytest.approx({"recall@1": 2 / 3, "recall@10": 1.0, "mrr@10": (1 + 1 / 3 + 1) / 3})
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)  # ties in x
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_the_losses_match_their_definitions(tiny_dir):
    """MNRL: cross-entropy of cosine x 20 over the batch's positives and negatives, a repeated positive
    masked; CoSENT: log(1 + sum over pairs ordered by score of exp(20 (cos_lo - cos_hi)))."""
    from bertkit.checkpoint import load_config
    from bertkit.data.collate import collate
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(tiny_dir)
    task = EmbedTask("mean")
    rows = [("a b", "c d", "e"), ("f g", "c d", "h"), ("i", "j k l", "m")]  # rows 0 and 1 share a positive
    examples = [
        {**task._example({"anchor": a, "positive": p, "negative": n}, "pairs", "x", i)}
        for i, (a, p, n) in enumerate(rows)
    ]
    task.fit(examples)
    torch.manual_seed(0)
    model = task.build_model(load_config(tiny_dir)).eval()
    batch = collate(task.featurize(examples, tokenizer, 16), tokenizer.pad_id)
    with torch.no_grad():
        loss = task.loss(model, batch)

        def vec(text):
            ids = torch.tensor([tokenizer.encode(text).ids])
            return torch.nn.functional.normalize(model(ids), dim=-1)[0]

        a = torch.stack([vec(r[0]) for r in rows])
        c = torch.stack([vec(r[1]) for r in rows] + [vec(r[2]) for r in rows])
        logits = a @ c.T * 20
        logits[0, 1] = logits[1, 0] = float("-inf")
        expected = torch.nn.functional.cross_entropy(logits, torch.arange(3))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)

    scored = EmbedTask("mean")
    data = [("a b", "c d", 1.0), ("f g", "h", 3.0), ("i", "j k l", 2.0)]
    examples = [
        scored._example({"text": x, "text_b": y, "score": s}, "scored", "x", i) for i, (x, y, s) in enumerate(data)
    ]
    scored.fit(examples)
    batch = collate(scored.featurize(examples, tokenizer, 16), tokenizer.pad_id)
    with torch.no_grad():
        loss = scored.loss(model, batch)
        cos = [20 * float(vec(x) @ vec(y)) for x, y, _ in data]
    terms = [np.exp(cos[j] - cos[i]) for i in range(3) for j in range(3) if data[i][2] > data[j][2]]
    assert loss.item() == pytest.approx(np.log(1 + sum(terms)), rel=1e-5)


@pytest.mark.parametrize("negatives", [False, True])
def test_a_tiny_embed_finetune_raises_recall(tiny_dir, tmp_path, negatives):
    _pairs(tmp_path / "pairs.tsv", negatives=negatives)
    before = Encoder(tiny_dir, pooling="mean", device="cpu")
    texts = [line.split("\t") for line in (tmp_path / "pairs.tsv").read_text().splitlines()[1:]]
    corpus = list(dict.fromkeys([t[1] for t in texts] + [t[2] for t in texts if negatives]))
    base = retrieval_metrics(before.encode([t[0] for t in texts]), before.encode(corpus), list(range(len(texts))))
    out = tmp_path / "out"
    extra = ["--train.epochs=15", "--train.lr=2e-3", "--train.seed=3"]
    assert _finetune(tiny_dir, tmp_path / "pairs.tsv", tmp_path / "pairs.tsv", out, *extra) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["recall@1"] > base["recall@1"] + 0.3, (base, after)
    assert after["mrr@10"] > base["mrr@10"] + 0.2
    # the saved model: a pipeline (mean pooling for a plain BERT) that `bertkit encode` reads as trained
    encoder = Encoder(out, device="cpu")
    assert encoder.pooling == "mean"
    queries = encoder.encode([t[0] for t in texts])
    again = retrieval_metrics(queries, encoder.encode(corpus), list(range(len(texts))))
    assert again["recall@1"] == pytest.approx(after["recall@1"])


def test_cosent_raises_the_spearman_of_scored_pairs(tiny_dir, tmp_path):
    """Scored pairs: words come in synonym pairs (WORDS[i], WORDS[i + 13]); the score is how many
    synonyms two texts share, never the same word, so an untrained model cannot see it."""
    rng = random.Random(0)
    partner = {w: WORDS[(i + 13) % 26] for i, w in enumerate(WORDS[:26])}
    rows = ["text\ttext_b\tscore"]
    for _ in range(64):
        a = rng.sample(WORDS[:26], 3)
        shared = rng.randint(0, 3)
        taken = set(a) | {partner[w] for w in a}
        b = [partner[w] for w in a[:shared]] + rng.sample([w for w in WORDS[:26] if w not in taken], 3 - shared)
        rows.append(f"{' '.join(a)}\t{' '.join(rng.sample(b, 3))}\t{shared}")
    (tmp_path / "sts.tsv").write_text("\n".join(rows) + "\n")
    before = Encoder(tiny_dir, pooling="mean", device="cpu")
    pairs = [r.split("\t") for r in rows[1:]]
    va, vb = before.encode([p[0] for p in pairs]), before.encode([p[1] for p in pairs])
    scores = np.array([float(p[2]) for p in pairs])
    base = spearman((va * vb).sum(1) / np.linalg.norm(va, axis=1) / np.linalg.norm(vb, axis=1), scores)
    out = tmp_path / "out"
    assert (
        _finetune(tiny_dir, tmp_path / "sts.tsv", tmp_path / "sts.tsv", out, "--train.epochs=10", "--train.lr=2e-3")
        == 0
    )
    after = json.loads((out / "metrics.json").read_text())["spearman"]
    assert after > max(0.8, base + 0.3), (base, after)


def test_an_embed_model_from_minilm_stays_a_sentence_transformers_pipeline(minilm_dir, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    _pairs(tmp_path / "pairs.tsv")
    out = tmp_path / "out"
    assert _finetune(minilm_dir, tmp_path / "pairs.tsv", tmp_path / "pairs.tsv", out, "--train.max-steps=2") == 0
    texts = ["tell me about the castle", "something is known of violin near a desert"]
    ours = Encoder(out, device="cpu").encode(texts)
    theirs = sentence_transformers.SentenceTransformer(str(out), device="cpu", local_files_only=True).encode(texts)
    assert np.abs(ours - theirs).max() <= 1e-5
    assert not np.allclose(ours, Encoder(minilm_dir, device="cpu").encode(texts), atol=1e-4)  # it trained
    assert cli(["evaluate", "--model", str(out), "--data", str(tmp_path / "pairs.tsv")]) == 0
    assert "mrr@10" in json.loads((out / "eval-pairs.json").read_text())


def test_bad_embedding_data_is_reported_with_its_line(tmp_path):
    (tmp_path / "bad.tsv").write_text("anchor\tpositive\nq1\tp1\nq2\t\n")
    with pytest.raises(BertkitError, match=r"bad.tsv, line 3: `positive` is empty"):
        EmbedTask().read(str(tmp_path / "bad.tsv"))
    (tmp_path / "cols.tsv").write_text("query\tdoc\nq1\tp1\n")
    with pytest.raises(BertkitError, match=r"line 2: fields query, doc; embedding data is pairs"):
        EmbedTask().read(str(tmp_path / "cols.tsv"))
    (tmp_path / "score.tsv").write_text("text\ttext_b\tscore\na\tb\thigh\n")
    with pytest.raises(BertkitError, match=r"line 2: score 'high' is not a finite number"):
        EmbedTask().read(str(tmp_path / "score.tsv"))


def test_rows_without_an_anchor_join_the_dev_corpus(tiny_dir, tmp_path):
    """Dev rows with an empty anchor only add to the retrieval corpus, whole evaluation batches of them
    included; the dev metrics rank each anchor's positive among every dev text, as computed here."""
    _pairs(tmp_path / "train.tsv", n=8)
    rows = (tmp_path / "train.tsv").read_text().splitlines()
    extra = [f"\tan unrelated line number {i} about {WORDS[i % len(WORDS)]}" for i in range(40)]
    (tmp_path / "dev.tsv").write_text("\n".join(rows + extra) + "\n")
    out = tmp_path / "out"
    args = ["--train.max-steps=1", "--train.eval-batch-size=8", "--train.lr=1e-4"]
    assert _finetune(tiny_dir, tmp_path / "train.tsv", tmp_path / "dev.tsv", out, *args) == 0
    encoder = Encoder(out, device="cpu")
    pairs = [r.split("\t") for r in rows[1:]]
    corpus = [p for _, p in pairs] + [e[1:] for e in extra]
    expected = retrieval_metrics(encoder.encode([a for a, _ in pairs]), encoder.encode(corpus), list(range(len(pairs))))
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(expected, abs=1e-6)
