"""The real all-MiniLM-L6-v2 checkpoint against transformers, the Encoder and `bertkit encode`."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import transformers

from bertkit.checkpoint import load_model
from bertkit.cli.main import main as cli
from bertkit.encode import Encoder
from bertkit.model import BertModel

SENTENCES = [
    "This is an example sentence",
    "Each sentence is converted",
    "The gorgeously elaborate continuation of ''The Lord of the Rings'' trilogy is so huge.",
    "Effective but too tepid biopic",
    "Café déjà vu, naïve coöperation — 東京 and 北京!",
]


@pytest.fixture(scope="module")
def hf_minilm(minilm_dir):
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    return tok, model


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder(minilm_dir)


def hf_mean_normalised(hidden, mask):
    m = mask.unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)


def test_minilm_matches_transformers(minilm_dir, hf_minilm):
    tok, theirs = hf_minilm
    ours = load_model(minilm_dir, BertModel)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = theirs(**batch)
    real = batch["attention_mask"].bool()
    assert (a.last_hidden_state - b.last_hidden_state)[real].abs().max() <= 1e-4
    assert (a.pooler_output - b.pooler_output).abs().max() <= 1e-4
    va = hf_mean_normalised(a.last_hidden_state, batch["attention_mask"])
    vb = hf_mean_normalised(b.last_hidden_state, batch["attention_mask"])
    assert (va - vb).abs().max() <= 1e-4


def test_minilm_sentence_vector_is_the_published_one(encoder):
    # all-MiniLM-L6-v2's model card: the vector of this sentence starts 0.0677, 0.0635
    v = encoder.encode(["This is an example sentence"])[0]
    assert (encoder.pooling, encoder.normalize) == ("mean", True)
    assert v.shape == (384,) and v.dtype == np.float32
    assert round(float(v[0]), 4) == 0.0677 and round(float(v[1]), 4) == 0.0635
    assert abs(np.linalg.norm(v) - 1.0) < 1e-5


def test_encoder_matches_transformers_for_every_pooling_and_layer(minilm_dir, hf_minilm):
    tok, theirs = hf_minilm
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = theirs(**batch, output_hidden_states=True)
    mask = batch["attention_mask"].unsqueeze(-1).bool()
    for pooling, layer in [("cls", -1), ("mean", -2), ("max", 3), ("pooler", -1)]:
        hidden = out.hidden_states[layer]
        if pooling == "cls":
            expected = hidden[:, 0].numpy()
        elif pooling == "mean":
            expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        elif pooling == "max":
            expected = hidden.masked_fill(~mask, -1e9).max(1).values.numpy()
        else:
            expected = out.pooler_output.numpy()
        got = Encoder(minilm_dir, pooling=pooling, layer=layer, normalize=False).encode(SENTENCES)
        assert np.abs(got - expected).max() <= 1e-4, (pooling, layer)


def test_order_is_restored_and_batching_does_not_change_vectors(minilm_dir, encoder):
    texts = SENTENCES * 3
    whole = encoder.encode(texts)
    one_by_one = Encoder(minilm_dir, batch_size=1).encode(texts)
    assert np.abs(whole - one_by_one).max() <= 1e-5
    reversed_ = encoder.encode(texts[::-1])[::-1]
    assert np.abs(whole - reversed_).max() <= 1e-5
    assert encoder.encode([]).shape == (0, 384)


def test_similar_sentences_are_closer(encoder):
    v = encoder.encode(["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell."])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3


def test_long_texts_are_cut_with_a_warning(minilm_dir, caplog):
    enc = Encoder(minilm_dir, max_length=8)
    with caplog.at_level(logging.WARNING, logger="bertkit"):
        v = enc.encode(["one two three four five six seven eight nine ten", "short"])
    assert "1 of 2 texts are longer than max_length=8" in caplog.text
    assert v.shape == (2, 384)


def test_bad_encoder_arguments(minilm_dir):
    from bertkit.errors import BertkitError

    with pytest.raises(BertkitError, match="--layer 9 does not exist"):
        Encoder(minilm_dir, layer=9)
    with pytest.raises(BertkitError, match="unknown pooling"):
        Encoder(minilm_dir, pooling="sum")
    with pytest.raises(BertkitError, match="max_position_embeddings"):
        Encoder(minilm_dir, max_length=1024)


def test_cli_encode_text_and_jsonl(minilm_dir, encoder, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": s}) + "\n" for s in SENTENCES), encoding="utf-8")
    for source in (txt, jsonl):
        out = tmp_path / f"{source.suffix[1:]}.npy"
        assert (
            cli(["encode", "--model", str(minilm_dir), "--input", str(source), "--output", str(out), "--batch-size=2"])
            == 0
        )
        got = np.load(out)
        assert got.dtype == np.float32 and got.shape == (len(SENTENCES), 384)
        assert np.abs(got - encoder.encode(SENTENCES)).max() <= 1e-5
    out = tmp_path / "cls.npy"
    assert (
        cli(
            [
                "encode",
                "--model",
                str(minilm_dir),
                "--input",
                str(txt),
                "--output",
                str(out),
                "--pooling",
                "cls",
                "--no-normalize",
                "--layer=-2",
            ]
        )
        == 0
    )
    assert np.abs(np.linalg.norm(np.load(out), axis=1) - 1).max() > 0.1


def test_cli_encode_bad_input_names_file_and_line(minilm_dir, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\nanother\n" + b"caf\xe9 latin-1\n")
    assert cli(["encode", "--model", str(minilm_dir), "--input", str(bad), "--output", str(tmp_path / "o.npy")]) == 2
    err = capsys.readouterr().err
    assert "bad.txt, line 3: not valid UTF-8" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("one\n\nthree\n")
    assert cli(["encode", "--model", str(minilm_dir), "--input", str(empty), "--output", str(tmp_path / "o.npy")]) == 2
    assert "empty.txt, line 2: empty text" in capsys.readouterr().err
    assert (
        cli(
            [
                "encode",
                "--model",
                str(minilm_dir),
                "--input",
                str(empty),
                "--output",
                str(tmp_path / "o.npy"),
                "--allow-empty",
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "o.npy").shape == (3, 384)
    assert cli(["encode", "--model", str(minilm_dir), "--input", str(empty), "--output", "x.npy", "--poolng=cls"]) == 2
    assert "did you mean `pooling`" in capsys.readouterr().err


def test_cli_encode_reads_a_fetched_data_name(minilm_dir, mr_dir, tmp_path):
    out = tmp_path / "dev.npy"
    assert cli(["encode", "--model", "minilm", "--input", "mr:test", "--output", str(out)]) == 0
    rows = sum(1 for _ in open(mr_dir / "test.tsv", encoding="utf-8")) - 1
    assert np.load(out).shape == (rows, 384)


def test_batches_are_cut_where_padding_would_dominate():
    from bertkit.data.collate import sorted_batches

    lengths = [200, 25, 20, 30, 22, 18, 26, 25, 24, 21]  # a server's batch: one long text, nine short
    assert sorted_batches(lengths, 32) == [[0, 3, 6, 1, 7, 8, 4, 9, 2, 5]]  # 10 rows x 200 tokens
    # 2 x 200 padded tokens is under the 512 never worth splitting; a third row would pad 600 for 255 real
    assert sorted_batches(lengths, 32, max_padding=0.25) == [[0, 3], [6, 1, 7, 8, 4, 9, 2, 5]]
    assert [len(b) for b in sorted_batches([60] * 40, 32, max_padding=0.25)] == [32, 8]  # equal lengths: as before
