"""Sequence to sequence (UniLM) and generation: the mask, cached decoding against full recomputation,
the strategies against one another, stopping, and tiny models that learn to copy and reverse."""

from __future__ import annotations

import json
import random

import pytest
import torch
from helpers import tiny_config

from bertkit.checkpoint import save_model
from bertkit.cli.main import main as cli
from bertkit.generate import Decoder, GenerateOptions, beam_search, generate_ids, greedy, repeated_ngram_bans
from bertkit.model import BertForMaskedLM, BertModel, seq2seq_mask
from bertkit.tokenizer import BertTokenizer

LETTERS = list("abcdefghij")


@pytest.fixture(scope="module")
def letters(tmp_path_factory):
    """A WordPiece vocab of the special tokens and ten one-letter words: a fast vocabulary for tiny runs."""
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS]) + "\n")
    return BertTokenizer.from_vocab(path, lowercase=True)


def random_model(vocab_size: int, seed: int = 0) -> BertForMaskedLM:
    torch.manual_seed(seed)
    model = BertForMaskedLM(tiny_config(vocab_size))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model.eval()


def test_the_mask_is_unilms():
    # row 0: [CLS] x [SEP] | y y [SEP] (source 3, target 3); row 1: [CLS] x x [SEP] | y [SEP] | pad pad
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0, 0]])
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0, 0]])
    expected_0 = [
        [1, 1, 1, 0, 0, 0, 0, 0],  # source: the source, both ways
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],  # target: the source and itself up to here
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ]
    expected_1 = [
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0],  # padding queries (never read) see the real tokens; no one sees them
        [1, 1, 1, 1, 1, 1, 0, 0],
    ]
    assert seq2seq_mask(attention, types).int().tolist() == [expected_0, expected_1]


def full_greedy(model: BertForMaskedLM, source: list[int], steps: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy decoding recomputing the whole sequence under seq2seq_mask at every step (no cache)."""
    tokens: list[int] = []
    logits = []
    for _ in range(steps):
        ids = torch.tensor([source + tokens])
        types = torch.tensor([[0] * len(source) + [1] * len(tokens)])
        mask = seq2seq_mask(torch.ones_like(ids), types)
        hidden = model.bert(ids, mask, types).last_hidden_state
        logits.append(model.mlm(hidden[0, -1]))
        tokens.append(int(logits[-1].argmax()))
    return tokens, logits


def test_cached_decoding_equals_full_recomputation(letters):
    model = random_model(200)
    decoder = Decoder(model, letters)
    decoder.banned = []  # compare the raw distributions
    source = [2, 17, 40, 99, 5, 61, 3]
    tokens, logits = full_greedy(model, source, 12)
    step_logits, cache = decoder.start(source)
    assert cache[0].key.shape[2] == len(source)  # the source's keys and values, computed once
    for t in range(12):
        assert torch.allclose(step_logits[0], logits[t], atol=1e-5)
        assert int(step_logits[0].argmax()) == tokens[t]
        step_logits, cache = decoder.step(torch.tensor([tokens[t]]), cache)
        assert cache[0].key.shape[2] == len(source) + t + 1


def test_extend_over_several_positions_equals_the_masked_forward():
    model = BertModel(tiny_config(50)).eval()
    ids = torch.randint(5, 50, (2, 11))
    types = torch.tensor([[0] * 6 + [1] * 5] * 2)
    full = model(ids, seq2seq_mask(torch.ones_like(ids), types), types).last_hidden_state
    source, cache = model.extend(ids[:, :6], types[:, :6])
    target, _ = model.extend(ids[:, 6:], types[:, 6:], cache)
    assert torch.allclose(torch.cat([source, target], 1), full, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_width_one_is_greedy(letters, seed):
    decoder = Decoder(random_model(15, seed), letters)
    source = [2, 5, 9, 11, 3]
    opts = GenerateOptions(strategy="beam", num_beams=1, max_new_tokens=10)
    assert beam_search(decoder, source, opts) == greedy(decoder, source, opts)


def test_wider_beams_find_targets_at_least_as_likely(letters):
    model = random_model(15, 3)
    with torch.no_grad():
        model.mlm.bias[letters.sep_id] += 3.0  # targets that end within the limit
    decoder = Decoder(model, letters)
    source = [2, 5, 9, 11, 3]

    def logprob(ids: list[int]) -> float:
        total, (logits, cache) = 0.0, decoder.start(source)
        for token in [*ids, letters.sep_id]:
            total += float(logits[0].log_softmax(-1)[token])
            logits, cache = decoder.step(torch.tensor([token]), cache)
        return total

    found = {}
    for width in (1, 4):
        opts = GenerateOptions(strategy="beam", num_beams=width, max_new_tokens=8, length_penalty=0.0)
        g = beam_search(decoder, source, opts)
        assert g.stopped == "sep"
        found[width] = logprob(g.ids)
    assert found[4] >= found[1] - 1e-6


def test_stops_at_sep_or_at_the_length_limit(letters):
    model = random_model(15)
    decoder = Decoder(model, letters)
    source = [2, 5, 6, 3]
    for strategy in ("greedy", "beam", "sample"):
        g = generate_ids(decoder, source, GenerateOptions(strategy=strategy, max_new_tokens=3))
        assert g.stopped in ("sep", "length") and len(g.ids) <= 3
        assert letters.sep_id not in g.ids
    with torch.no_grad():
        model.mlm.bias[letters.sep_id] = 1e4  # [SEP] first: an empty target
    for strategy in ("greedy", "beam", "sample"):
        assert generate_ids(decoder, source, GenerateOptions(strategy=strategy)).stopped == "sep"
    with torch.no_grad():
        model.mlm.bias[letters.sep_id] = -1e4  # never [SEP]: the limit
    for strategy in ("greedy", "beam", "sample"):
        g = generate_ids(decoder, source, GenerateOptions(strategy=strategy, max_new_tokens=7))
        assert (g.stopped, len(g.ids)) == ("length", 7)


def test_sampling_is_seeded_and_top_k_one_is_greedy(letters):
    decoder = Decoder(random_model(15, 4), letters)
    source = [2, 7, 8, 3]
    draw = [
        generate_ids(decoder, source, GenerateOptions(strategy="sample", seed=s, max_new_tokens=12)) for s in (1, 1, 2)
    ]
    assert draw[0] == draw[1]
    assert generate_ids(decoder, source, GenerateOptions(strategy="sample", top_k=1, seed=5)) == greedy(
        decoder, source, GenerateOptions()
    )
    tiny_p = GenerateOptions(strategy="sample", top_p=1e-6, seed=5, temperature=2.0)
    assert generate_ids(decoder, source, tiny_p) == greedy(decoder, source, GenerateOptions())


def test_no_repeat_ngram():
    assert repeated_ngram_bans([5, 6, 7, 5], 2) == [6]  # "5 6" seen: after 5, not 6
    assert repeated_ngram_bans([5, 6, 5, 6], 3) == [5]
    assert sorted(repeated_ngram_bans([1, 2, 3], 1)) == [1, 2, 3]
    assert repeated_ngram_bans([1, 2, 3], 0) == []
    decoder = Decoder(random_model(15, 5), BertTokenizer.from_vocab(_vocab_of(decoder_vocab_size=15)))
    for strategy in ("greedy", "beam", "sample"):
        ids = generate_ids(
            decoder, [2, 5, 3], GenerateOptions(strategy=strategy, no_repeat_ngram=2, max_new_tokens=20)
        ).ids
        pairs = list(zip(ids, ids[1:]))
        assert len(pairs) == len(set(pairs))


def _vocab_of(decoder_vocab_size: int):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LETTERS][:decoder_vocab_size]) + "\n")
    return path


def synthetic(path, n: int, rng: random.Random, reverse: bool, words=LETTERS) -> None:
    rows = []
    for _ in range(n):
        s = [rng.choice(words) for _ in range(rng.randint(2, 5))]
        rows.append({"source": " ".join(s), "target": " ".join(s[::-1] if reverse else s)})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def finetune(model_dir, tmp_path, steps: int, *extra: str):
    out = tmp_path / "run"
    args = ["finetune", "--task", "seq2seq", "--model", str(model_dir), "--output", str(out)]
    args += ["--train", str(tmp_path / "train.jsonl"), "--dev", str(tmp_path / "dev.jsonl"), "--device", "cpu"]
    args += ["--train.max-steps", str(steps), "--train.eval-every", str(steps), "--train.batch-size", "32"]
    assert cli([*args, "--max-length", "16", *extra]) == 0
    return out


def generate(model_dir, tmp_path, *options: str) -> list[dict]:
    out = tmp_path / "generated.jsonl"
    args = ["generate", "--model", str(model_dir), "--input", str(tmp_path / "dev.jsonl"), "--output", str(out)]
    assert cli([*args, "--device", "cpu", "--overwrite", *options]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("reverse", [False, True], ids=["copy", "reverse"])
def test_a_tiny_model_learns_to_copy_and_reverse(letters, tmp_path, capsys, reverse):
    config = tiny_config(letters.vocab_size, hidden_size=64, intermediate_size=128)
    torch.manual_seed(0)
    model_dir = save_model(BertModel(config), tmp_path / "tiny", letters)
    rng = random.Random(0)
    synthetic(tmp_path / "train.jsonl", 2000, rng, reverse)
    synthetic(tmp_path / "dev.jsonl", 20, rng, reverse)
    run = finetune(model_dir, tmp_path, 400, "--train.lr", "1e-3", "--dropout", "0")
    assert json.loads((run / "metrics.json").read_text())["exact_match"] == 1.0
    dev = [json.loads(line) for line in (tmp_path / "dev.jsonl").read_text().splitlines()]
    for options in ([], ["--generation.strategy", "beam", "--generation.num-beams", "3"]):
        rows = generate(run, tmp_path, *options)
        assert [r["generated"] for r in rows] == [d["target"] for d in dev]
        assert {r["stopped"] for r in rows} == {"sep"}
    capsys.readouterr()
    if not reverse:  # the server's /generate: the same targets, and requests checked like every endpoint's
        from fastapi.testclient import TestClient

        from bertkit.encode.server import PredictEngine, create_app
        from bertkit.inference import load_task

        with TestClient(create_app(None, {"copy": PredictEngine(load_task(run, device="cpu"))})) as client:
            body = {"sources": [d["source"] for d in dev], "strategy": "beam", "num_beams": 3}
            answer = client.post("/generate/copy", json=body)
            assert answer.status_code == 200, answer.text
            assert [g["generated"] for g in answer.json()["generated"]] == [d["target"] for d in dev]
            inputs = {"inputs": [{"source": d["source"]} for d in dev[:3]]}
            predicted = client.post("/predict/copy", json=inputs).json()["predictions"]
            assert [p["generated"] for p in predicted] == [d["target"] for d in dev[:3]]
            missing = client.post("/generate/nope", json={"sources": ["a b"]})
            assert missing.status_code == 404 and "seq2seq tasks: copy" in missing.json()["error"]
            assert client.post("/generate/copy", json={"sources": ["a"], "num_beams": 0}).status_code == 422
            assert client.post("/generate/copy", json={"sources": []}).status_code == 400


def test_chinese_vocab_tiny_run(zh, zh_vocab_dir, tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = save_model(BertModel(tiny_config(zh.vocab_size)), tmp_path / "tiny-zh", zh)
    rng = random.Random(0)
    words = list("天地人你我他春夏秋冬")
    for name, n in (("train.jsonl", 64), ("dev.jsonl", 4)):
        rows = []
        for _ in range(n):
            s = "".join(rng.choice(words) for _ in range(rng.randint(2, 4)))
            rows.append({"source": s, "target": s[::-1]})
        (tmp_path / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    run = finetune(model_dir, tmp_path, 150, "--train.lr", "2e-3")
    assert json.loads((run / "task.json").read_text())["task"] == "seq2seq"
    rows = generate(run, tmp_path, "--generation.max-new-tokens", "6")
    assert len(rows) == 4
    for r in rows:
        assert set(r["generated"]) <= set(words)  # it writes the set's characters, joined without spaces
        assert r["stopped"] == "sep" or r["tokens"] == 6
    capsys.readouterr()


def test_errors_say_how_to_fix(letters, tiny_dir, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"source": "a b"}) + "\n")
    args = ["finetune", "--task", "seq2seq", "--model", str(tiny_dir), "--output", str(tmp_path / "o")]
    assert cli([*args, "--train", str(tmp_path / "bad.jsonl"), "--dev", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl, line 1: missing `target`" in capsys.readouterr().err
    (tmp_path / "in.txt").write_text("a b\n")
    args = ["generate", "--model", str(tiny_dir), "--input", str(tmp_path / "in.txt"), "--output", str(tmp_path / "g")]
    assert cli(args) == 2
    assert "no task.json" in capsys.readouterr().err
