"""Token and word vectors, several layers and long documents: `Encoder.encode_tokens`, `layer=[...]`,
`long="window"`, `bertkit encode --pooling none` and the server's /encode, on the real MiniLM."""

from __future__ import annotations

import base64
import json
import shutil
import unicodedata

import numpy as np
import pytest
import torch
import transformers
from fastapi.testclient import TestClient
from helpers import tiny_config
from safetensors.torch import save_file
from test_serve_http import serving

from bertkit.checkpoint import save_model
from bertkit.cli.main import main as cli
from bertkit.client import Client
from bertkit.encode import Encoder
from bertkit.encode.server import Limits, create_app
from bertkit.encode.tokens import load_npz
from bertkit.errors import BertkitError
from bertkit.model import BertModel
from bertkit.tasks import windows

TEXTS = [
    "Café déjà vu, naïve coöperation — İstanbul!",
    "An emoji 🙂 and ＡＢＣ１２３ in a sentence about unaffable things",
    "東京 and 北京 are cities.",
    "a\u200bb x\x00y ﬁne ⅷ",
]
ZH_TEXTS = ["我爱北京天安门🙂，ｅｍｏｊｉ 😀 Ａ", "今天天气很好。Café!"]
LONG = " ".join(["The gorgeously elaborate continuation of the trilogy is so huge that a column of words"] * 4)


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder(minilm_dir)


@pytest.fixture(scope="module")
def zh_encoder(zh, tmp_path_factory):
    """A random 2-layer BERT over bert-base-chinese's vocab: offsets do not depend on the weights."""
    torch.manual_seed(0)
    return Encoder(save_model(BertModel(tiny_config(zh.vocab_size)), tmp_path_factory.mktemp("zh"), zh))


def hf_tokenizer(encoder):
    path = str(encoder.tokenizer.vocab_file)
    return transformers.BertTokenizerFast(vocab=path, vocab_file=path, do_lower_case=encoder.tokenizer.lowercase)


# ---- offsets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["en", "zh"])
def test_spans_point_into_the_original_text(which, encoder, zh_encoder):
    enc, texts = (encoder, TEXTS) if which == "en" else (zh_encoder, ZH_TEXTS)
    hf = hf_tokenizer(enc)
    normalize = hf.backend_tokenizer.normalizer.normalize_str
    for text, record in zip(texts, enc.encode_tokens(texts)):
        theirs = hf(text, return_offsets_mapping=True, add_special_tokens=False)
        assert record.tokens == hf.convert_ids_to_tokens(theirs["input_ids"])  # no [CLS] / [SEP]
        assert record.spans == [tuple(o) for o in theirs["offset_mapping"]]
        assert record.vectors.shape == (len(record.tokens), enc.token_dim)
        assert all(a[1] <= b[0] for a, b in zip(record.spans, record.spans[1:]))  # in order, no overlap
        for token, (start, end) in zip(record.tokens, record.spans):
            piece = text[start:end]
            assert 0 <= start < end <= len(text)
            if token == "[UNK]":  # an emoji, a word of full-width letters: the original characters
                assert enc.tokenizer.tokenize(piece) == ["[UNK]"]
            else:  # lower-cased and accents stripped, yet the span is the original's
                assert normalize(piece).strip() == token.removeprefix("##"), (token, piece)  # CJK spaced out
        covered = {i for s, e in record.spans for i in range(s, e)}
        dropped = [c for i, c in enumerate(text) if i not in covered]
        assert all(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in dropped), dropped


def test_worked_example_with_accents_emoji_and_chinese(encoder):
    text = "Déjà 🙂 東京!"
    record = encoder.encode_tokens([text])[0]
    assert record.tokens == ["de", "##ja", "[UNK]", "東", "京", "!"]
    assert [text[s:e] for s, e in record.spans] == ["Dé", "jà", "🙂", "東", "京", "!"]
    words = encoder.encode_tokens([text], words=True)[0]
    assert words.tokens == ["Déjà", "🙂", "東", "京", "!"]  # a Chinese character is a word of its own
    assert words.spans == [(0, 4), (5, 6), (7, 8), (8, 9), (9, 10)]


# ---- token and word vectors -------------------------------------------------------------------------


def test_token_vectors_are_the_hidden_states(minilm_dir, encoder):
    hf = hf_tokenizer(encoder)
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    batch = hf(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    n = batch["attention_mask"].sum(1)
    for layer in (-1, 2):
        records = encoder.encode_tokens(TEXTS, layer=layer)
        for i, record in enumerate(records):
            expected = out.hidden_states[layer][i, 1 : n[i] - 1].numpy()  # [CLS] and [SEP] left out
            assert np.abs(record.vectors - expected).max() <= 1e-4
    with_specials = encoder.encode_tokens(TEXTS[:1], specials=True)[0]
    assert with_specials.tokens[0] == "[CLS]" and with_specials.tokens[-1] == "[SEP]"
    assert with_specials.spans[0] == with_specials.spans[-1] == (0, 0)
    assert np.abs(with_specials.vectors - out.last_hidden_state[0, : n[0]].numpy()).max() <= 1e-4


def test_word_vectors_are_the_mean_of_their_pieces(encoder, zh_encoder):
    for enc, text in [(encoder, TEXTS[0] + " unaffable 東京 🙂"), (zh_encoder, ZH_TEXTS[1])]:
        pieces = enc.encode_tokens([text])[0]
        words = enc.encode_tokens([text], words=True)[0]
        assert words.tokens == [text[s:e] for s, e in words.spans]
        assert all(" " not in w for w in words.tokens)
        for word, (start, end), vector in zip(words.tokens, words.spans, words.vectors):
            mine = [v for (s, _), v in zip(pieces.spans, pieces.vectors) if start <= s < end]
            assert np.abs(vector - np.mean(mine, axis=0)).max() <= 1e-6, word
        assert sum(1 for s, _ in pieces.spans if any(a <= s < b for a, b in words.spans)) == len(pieces.tokens)
    assert zh_encoder.encode_tokens(["今天天气"], words=True)[0].tokens == ["今", "天", "天", "气"]


# ---- several layers -----------------------------------------------------------------------------------


def test_several_layers_concat_and_mean(minilm_dir):
    texts = TEXTS[:3]
    one = {layer: Encoder(minilm_dir, layer=layer, normalize=False).encode(texts) for layer in (-2, -1, 3)}
    concat = Encoder(minilm_dir, layer=[-2, -1, 3], normalize=False)
    assert concat.dim == 3 * 384
    got = concat.encode(texts)
    assert got.shape == (3, 3 * 384)
    for k, layer in enumerate((-2, -1, 3)):  # in the given order
        assert np.abs(got[:, k * 384 : (k + 1) * 384] - one[layer]).max() <= 1e-5
    mean = Encoder(minilm_dir, layer=[-2, -1], layer_combine="mean", normalize=False)
    assert mean.dim == 384
    assert np.abs(mean.encode(texts) - (one[-2] + one[-1]) / 2).max() <= 1e-5  # mean pooling is linear
    tokens = concat.encode_tokens(texts)
    singles = {layer: concat.encode_tokens(texts, layer=layer) for layer in (-2, -1, 3)}
    for i, record in enumerate(tokens):
        assert np.array_equal(record.vectors, np.hstack([singles[layer][i].vectors for layer in (-2, -1, 3)]))
    averaged = concat.encode_tokens(texts, layer=[-2, -1], layer_combine="mean")
    for i, record in enumerate(averaged):
        assert np.abs(record.vectors - (singles[-2][i].vectors + singles[-1][i].vectors) / 2).max() <= 1e-6


def test_bad_layers(minilm_dir):
    with pytest.raises(BertkitError, match="--layer 9 does not exist"):
        Encoder(minilm_dir, layer=[-1, 9])
    with pytest.raises(BertkitError, match="--layer is empty"):
        Encoder(minilm_dir, layer=[])
    with pytest.raises(BertkitError, match="needs --backend torch: the ONNX graph returns the last layer only"):
        Encoder(minilm_dir, layer=[-2, -1], backend="onnx")
    with pytest.raises(BertkitError, match="--layer-combine 'sum': use one of concat, mean"):
        Encoder(minilm_dir, layer=[-2, -1], layer_combine="sum")
    with pytest.raises(BertkitError, match="pooling `pooler` needs the last layer alone"):
        Encoder(minilm_dir, pooling="pooler", layer=[-2, -1])
    with pytest.raises(BertkitError, match="--long 'split': use one of cut, window"):
        Encoder(minilm_dir, long="split")


@pytest.fixture(scope="module")
def dense_dir(tiny_dir, tmp_path_factory):
    """The tiny BERT with a sentence-transformers pipeline: mean pooling, then Dense 32 -> 8 (tanh)."""
    d = tmp_path_factory.mktemp("dense")
    shutil.copytree(tiny_dir, d, dirs_exist_ok=True)
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Dense", "Dense")]
    modules = [
        {"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{k}"}
        for i, (p, k) in enumerate(kinds)
    ]
    (d / "modules.json").write_text(json.dumps(modules))
    (d / "1_Pooling").mkdir()
    (d / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "mean"}))
    (d / "2_Dense").mkdir()
    (d / "2_Dense" / "config.json").write_text(json.dumps({"in_features": 32, "out_features": 8, "bias": True}))
    torch.manual_seed(1)
    weights = {"linear.weight": torch.randn(8, 32), "linear.bias": torch.randn(8)}
    save_file(weights, d / "2_Dense" / "model.safetensors")
    return d


def test_a_dense_projection_applies_to_sentence_vectors_only(dense_dir):
    mean = Encoder(dense_dir, layer=[-2, -1], layer_combine="mean", normalize=False)
    assert mean.dim == 8 and mean.token_dim == 32
    plain = Encoder(dense_dir, normalize=False)
    pooled = [r.vectors.mean(0) for r in plain.encode_tokens(TEXTS[:2], specials=True)]  # mean over every token
    with torch.no_grad():
        expected = plain.dense(torch.tensor(np.stack(pooled))).numpy()
    assert np.abs(plain.encode(TEXTS[:2]) - expected).max() <= 1e-5
    assert mean.encode(TEXTS[:2]).shape == (2, 8)
    assert mean.encode_tokens(TEXTS[:1])[0].vectors.shape[1] == 32  # raw hidden states, no projection
    concat = Encoder(dense_dir, layer=[-2, -1])
    assert concat.encode_tokens(TEXTS[:1])[0].vectors.shape[1] == 64
    with pytest.raises(BertkitError, match="Dense projection reads 32-wide vectors.*use --layer-combine mean"):
        concat.encode(TEXTS[:1])
    with TestClient(create_app(plain, {})) as client:
        r = client.post("/encode", json={"texts": ["a"], "layer": [-2, -1]})
        assert r.status_code == 422 and '"layer_combine": "mean"' in r.json()["error"]
        r = client.post("/encode", json={"texts": ["a"], "layer": [-2, -1], "layer_combine": "mean"})
        assert r.status_code == 200 and r.json()["shape"] == [1, 8]


# ---- long documents ---------------------------------------------------------------------------------


def hand_windowed(encoder, text, pooling):
    """The windowed vector computed by hand: every window of 14 tokens, 7 apart, run alone."""
    ids = encoder.tokenizer.encode(text, max_length=None).ids
    content, tok = ids[1:-1], encoder.tokenizer
    vectors, weights = [], []
    for start, end in windows(len(content), 14, 7):
        window = [tok.cls_id, *content[start:end], tok.sep_id]
        with torch.no_grad():
            hidden = encoder.model(
                torch.tensor([window]), torch.ones(1, len(window), dtype=torch.long)
            ).last_hidden_state[0]
        vectors.append({"mean": hidden.mean(0), "cls": hidden[0], "max": hidden.max(0).values}[pooling])
        weights.append(len(window))
    if pooling == "max":
        return torch.stack(vectors).max(0).values.numpy()
    w = torch.tensor(weights, dtype=torch.float32)
    return ((torch.stack(vectors) * w[:, None]).sum(0) / w.sum()).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls", "max"])
def test_windowed_pooling(minilm_dir, pooling):
    windowed = Encoder(minilm_dir, pooling=pooling, normalize=False, max_length=16, long="window")
    cut = Encoder(minilm_dir, pooling=pooling, normalize=False, max_length=16)
    short = "a short text"
    assert np.array_equal(windowed.encode([short]), cut.encode([short]))
    both, cut_both = windowed.encode([short, LONG]), cut.encode([short, LONG])
    assert np.abs(both[0] - cut_both[0]).max() <= 1e-6  # the short text, beside a long one
    assert len(windowed.tokenizer.encode(LONG, max_length=None).ids) > 60
    expected = hand_windowed(windowed, LONG, pooling)
    assert np.abs(both[1] - expected).max() <= 1e-5
    assert np.abs(both[1] - cut_both[1]).max() > 0.05  # the cut vector read 14 tokens of 60


def test_windowed_vectors_are_normalised_after_joining(minilm_dir):
    v = Encoder(minilm_dir, max_length=16, long="window").encode([LONG])[0]
    expected = hand_windowed(Encoder(minilm_dir, max_length=16, normalize=False), LONG, "mean")
    assert np.abs(v - expected / np.linalg.norm(expected)).max() <= 1e-5


def test_windowed_token_vectors_cover_every_token(minilm_dir):
    windowed = Encoder(minilm_dir, max_length=16, long="window")
    cut = Encoder(minilm_dir, max_length=16)
    whole = windowed.encode_tokens([LONG])[0]
    assert whole.tokens == windowed.tokenizer.tokenize(LONG)
    first = cut.encode_tokens([LONG])[0]
    assert first.tokens == whole.tokens[:14]
    # a token read in two windows gets the mean of its two vectors: not the cut one for token 8 (windows
    # 0-14 and 7-21), the cut one for token 3 (window 0-14 only)
    assert np.abs(whole.vectors[3] - first.vectors[3]).max() <= 1e-5
    assert np.abs(whole.vectors[8] - first.vectors[8]).max() > 1e-3
    short = windowed.encode_tokens(["a short text"])[0]
    assert np.array_equal(short.vectors, cut.encode_tokens(["a short text"])[0].vectors)


# ---- the command line -------------------------------------------------------------------------------


def test_cli_token_vectors_round_trip(minilm_dir, encoder, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    base = ["encode", "--model", str(minilm_dir), "--input", str(source), "--pooling", "none"]
    assert cli([*base, "--output", str(tmp_path / "t.npz"), "--batch-size=2"]) == 0
    expected = encoder.encode_tokens(TEXTS)
    with np.load(tmp_path / "t.npz") as data:  # plain arrays: no pickle needed
        assert data["vectors"].dtype == np.float32 and data["vectors"].shape == (data["lengths"].sum(), 384)
        assert data["tokens"].dtype.kind == "U" and data["spans"].shape == (data["lengths"].sum(), 2)
        assert data["starts"].tolist() == [0, *np.cumsum(data["lengths"])[:-1].tolist()]
    for got, want in zip(load_npz(tmp_path / "t.npz"), expected, strict=True):
        assert got.tokens == want.tokens and got.spans == want.spans
        assert np.abs(got.vectors - want.vectors).max() <= 1e-5
    out = tmp_path / "w.jsonl"
    assert cli([*base, "--words", "--output", str(out), "--layer", "-2,-1", "--layer-combine", "mean"]) == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = encoder.encode_tokens(TEXTS, words=True, layer=[-2, -1], layer_combine="mean")
    for text, line, want in zip(TEXTS, lines, expected, strict=True):
        assert set(line) == {"tokens", "spans", "vectors"}
        assert line["tokens"] == [text[s:e] for s, e in line["spans"]] == want.tokens
        assert np.abs(np.array(line["vectors"], dtype=np.float32) - want.vectors).max() <= 1e-5


def test_cli_sentence_vectors_with_layers_and_windows(minilm_dir, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"{TEXTS[0]}\n{LONG}\n", encoding="utf-8")
    base = ["encode", "--model", str(minilm_dir), "--input", str(source)]
    assert cli([*base, "--output", str(tmp_path / "c.npy"), "--layer", "-2,-1", "--no-normalize"]) == 0
    assert np.load(tmp_path / "c.npy").shape == (2, 768)
    assert cli([*base, "--output", str(tmp_path / "w.npy"), "--long", "window", "--max-length", "16"]) == 0
    expected = Encoder(minilm_dir, max_length=16, long="window").encode([TEXTS[0], LONG])
    assert np.abs(np.load(tmp_path / "w.npy") - expected).max() <= 1e-5


@pytest.mark.parametrize(
    "options, message",
    [
        (["--pooling", "none", "--output", "t.npy"], "give --output a .npz or .jsonl name"),
        (["--words", "--output", "t.npy"], "add --pooling none"),
        (["--output", "t.npz"], "add --pooling none"),
        (["--pooling", "none", "--normalize", "--output", "t.npz"], "drop --normalize"),
        (["--pooling", "none", "--words", "--specials", "--output", "t.npz"], "drop --specials"),
        (["--layer-combine", "sum", "--output", "t.npy"], "choose one of: concat, mean"),
        (["--long", "all", "--output", "t.npy"], "choose one of: cut, window"),
    ],
)
def test_cli_refuses_options_that_do_not_go_together(tmp_path, capsys, options, message):
    argv = ["encode", "--model", str(tmp_path / "missing"), "--input", str(tmp_path / "missing.txt")]
    assert cli([*argv, *[o.replace("t.np", str(tmp_path / "t.np")) for o in options]]) == 2
    assert message in capsys.readouterr().err


# ---- the server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(encoder):
    with TestClient(create_app(encoder, {}, Limits(max_texts=4, max_chars=200))) as client:
        yield client


def test_server_token_vectors(api, encoder):
    r = api.post("/encode", json={"texts": TEXTS[:2], "pooling": "none"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"results", "dtype"}
    for result, want in zip(body["results"], encoder.encode_tokens(TEXTS[:2]), strict=True):
        assert result["tokens"] == want.tokens and [tuple(s) for s in result["spans"]] == want.spans
        assert result["shape"] == [len(want.tokens), 384]
        assert np.abs(np.array(result["vectors"]) - want.vectors).max() <= 1e-5
    r = api.post("/encode", json={"texts": TEXTS[2:3], "pooling": "none", "words": True, "encoding": "base64"})
    result = r.json()["results"][0]
    assert result["tokens"] == ["東", "京", "and", "北", "京", "are", "cities."]
    vectors = np.frombuffer(base64.b64decode(result["vectors"]), "<f4").reshape(result["shape"])
    assert np.abs(vectors - encoder.encode_tokens(TEXTS[2:3], words=True)[0].vectors).max() <= 1e-5


def test_server_several_layers(api, minilm_dir):
    r = api.post("/encode", json={"texts": TEXTS[:2], "layer": [-2, -1], "normalize": False})
    assert r.status_code == 200 and r.json()["shape"] == [2, 768]
    expected = Encoder(minilm_dir, layer=[-2, -1], normalize=False).encode(TEXTS[:2])
    assert np.abs(np.array(r.json()["vectors"]) - expected).max() <= 1e-5
    r = api.post("/encode", json={"texts": TEXTS[:1], "layer": [-2, -1], "layer_combine": "mean"})
    assert r.json()["shape"] == [1, 384]
    r = api.post("/encode", json={"texts": TEXTS[:1], "pooling": "none", "layer": [0, -1]})
    assert r.json()["results"][0]["shape"][1] == 768


@pytest.mark.parametrize(
    "options, message",
    [
        ({"layer_combine": "sum"}, "`layer_combine`: Input should be 'concat' or 'mean'"),
        ({"pooling": "every"}, "`pooling`"),
        ({"layer": [-1, 99]}, "layer 99 does not exist: send 0 (embeddings) to 6"),
        ({"layer": []}, "`layer` is an empty list"),
        ({"words": True}, '`words` and `specials` are for token vectors: send them with "pooling": "none"'),
        ({"pooling": "none", "normalize": True}, "token vectors are the raw hidden states"),
        ({"pooling": "none", "words": True, "specials": True}, "leave out `specials`"),
        ({"pooling": "pooler", "layer": [-2, -1]}, 'pooling "pooler" needs the model\'s pooler and layer -1'),
    ],
)
def test_server_refuses_bad_values(api, options, message):
    r = api.post("/encode", json={"texts": ["a text"], **options})
    assert r.status_code == 422 and message in r.json()["error"], r.text


def test_server_keeps_its_limits_for_token_vectors(api):
    r = api.post("/encode", json={"texts": ["a"] * 5, "pooling": "none"})
    assert r.status_code == 413 and "send at most 4" in r.json()["error"]
    r = api.post("/encode", json={"texts": ["a" * 201], "pooling": "none"})
    assert r.status_code == 413 and "the limit is 200" in r.json()["error"]


def test_client_and_cli_through_a_server(encoder, tmp_path):
    with serving(create_app(encoder, {})) as url, Client(url) as client:
        records = client.encode_tokens(TEXTS[:2], words=True)
        assert [r["tokens"] for r in records] == [r.tokens for r in encoder.encode_tokens(TEXTS[:2], words=True)]
        assert client.encode(TEXTS[:2], layer=[-2, -1], layer_combine="mean").shape == (2, 384)
        source = tmp_path / "in.txt"
        source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
        out = tmp_path / "t.npz"
        argv = ["encode", "--server", url, "--input", str(source), "--output", str(out), "--pooling", "none"]
        assert cli(argv) == 0
    for got, want in zip(load_npz(out), encoder.encode_tokens(TEXTS), strict=True):
        assert got.tokens == want.tokens and got.spans == want.spans
        assert np.abs(got.vectors - want.vectors).max() <= 1e-5
