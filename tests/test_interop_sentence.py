"""Directories between bertkit and today's Hugging Face stack, checked against the real libraries:

- every directory bertkit writes from MiniLM (fine-tuned, further pretrained) stays a sentence-transformers
  pipeline: `bertkit encode` and sentence-transformers give the same vectors;
- directories saved by transformers 5 (`save_pretrained`: tokenizer.json, no vocab.txt) and by
  sentence-transformers 6 (`pooling_mode: "mean"`, the token limit in tokenizer_config.json) load in
  bertkit and encode as their own library does;
- tokenizer_config.json carries the token limit, so transformers pipelines truncate long inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import head_conll

from bertkit.checkpoint import load_model, save_model
from bertkit.cli.main import main as cli
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.model import BertModel
from bertkit.tokenizer import BertTokenizer

transformers = pytest.importorskip("transformers")
sentence_transformers = pytest.importorskip("sentence_transformers")

SENTENCES = [
    "This is an example sentence",
    "The gorgeously elaborate continuation of ''The Lord of the Rings'' trilogy is so huge.",
    "Café déjà vu, naïve coöperation — 東京 and 北京!",
    " ".join(["a long text past the 256-token limit, where truncation decides the vector"] * 40),
]
LONG_INPUT = " ".join(f"word{i % 50} and more" for i in range(700))  # 2,100 words


def st_vectors(model_dir, trust_remote_code: bool = False) -> np.ndarray:
    model = sentence_transformers.SentenceTransformer(
        str(model_dir), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code
    )
    return model.encode(SENTENCES, convert_to_numpy=True, batch_size=8)


def assert_same_vectors(model_dir, trust_remote_code: bool = False) -> np.ndarray:
    encoder = Encoder(model_dir, device="cpu")
    assert (encoder.pooling, encoder.normalize, encoder.max_length) == ("mean", True, 256)
    ours = encoder.encode(SENTENCES)
    theirs = st_vectors(model_dir, trust_remote_code)
    assert np.abs(ours - theirs).max() <= 1e-5
    return ours


def _finetune(model, out, task, train, dev, *extra) -> None:
    args = ["finetune", "--task", task, "--model", str(model), "--train", str(train), "--dev", str(dev)]
    args += ["--output", str(out), "--max-length", "64", "--train.max-steps=2", "--train.batch-size=8"]
    assert cli([*args, "--train.lr=1e-3", "--device", "cpu", *extra]) == 0


@pytest.fixture(scope="module")
def st6_dir(tmp_path_factory, minilm_dir):
    """MiniLM as the current sentence-transformers saves it."""
    out = tmp_path_factory.mktemp("st6") / "minilm"
    sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu", local_files_only=True).save(str(out))
    return out


@pytest.fixture(scope="module")
def minilm_vectors(minilm_dir):
    return st_vectors(minilm_dir)


@pytest.fixture(scope="module")
def classify_dir(tmp_path_factory, minilm_dir, mr_small):
    out = tmp_path_factory.mktemp("ft") / "mr"
    _finetune(minilm_dir, out, "classify", *mr_small)
    return out


def test_the_layouts_under_test(st6_dir, minilm_dir):
    """What the two libraries write today, so the tests below cover the new layout."""
    assert not (st6_dir / "vocab.txt").exists() and (st6_dir / "tokenizer.json").is_file()
    assert json.loads((st6_dir / "1_Pooling/config.json").read_text())["pooling_mode"] == "mean"
    assert "max_seq_length" not in json.loads((st6_dir / "sentence_bert_config.json").read_text())
    assert json.loads((st6_dir / "tokenizer_config.json").read_text())["model_max_length"] == 256
    assert json.loads((minilm_dir / "1_Pooling/config.json").read_text())["pooling_mode_mean_tokens"] is True


def test_sentence_transformers_6_directory_loads_and_encodes_as_sentence_transformers(st6_dir, minilm_dir):
    ours = assert_same_vectors(st6_dir)
    assert np.abs(ours - Encoder(minilm_dir, device="cpu").encode(SENTENCES)).max() <= 1e-6
    model, reference = load_model(st6_dir), load_model(minilm_dir)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_transformers_5_directory_loads_with_its_tokenizer_json(tmp_path, minilm_dir):
    out = tmp_path / "hf"
    transformers.BertModel.from_pretrained(minilm_dir, local_files_only=True).save_pretrained(out)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True)
    hf_tokenizer.save_pretrained(out)
    assert not (out / "vocab.txt").exists() and (out / "tokenizer.json").is_file()
    ours = BertTokenizer.from_dir(out)
    assert ours.lowercase and ours.vocab == BertTokenizer.from_dir(minilm_dir).vocab
    for text in SENTENCES:
        assert ours.encode(text, max_length=None).ids == hf_tokenizer(text)["input_ids"]
    # A plain BERT directory: the [CLS] vector, as transformers computes it.
    vectors = Encoder(out, device="cpu").encode(SENTENCES[:3])
    model = transformers.AutoModel.from_pretrained(out, local_files_only=True).eval()
    with torch.no_grad():
        batch = hf_tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
        cls = model(**batch).last_hidden_state[:, 0].numpy()
    assert np.abs(vectors - cls).max() <= 1e-5


def test_tokenizer_json_that_bertkit_cannot_reproduce_is_refused(tmp_path, st6_dir):
    data = json.loads((st6_dir / "tokenizer.json").read_text())
    data["normalizer"]["strip_accents"] = False
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(BertkitError, match="strips accents exactly when it lower-cases"):
        BertTokenizer.from_dir(tmp_path)
    data["model"] = {"type": "BPE", "vocab": {}, "merges": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(BertkitError, match="not BERT's WordPiece"):
        BertTokenizer.from_dir(tmp_path)


def test_fine_tuned_minilm_is_still_its_sentence_pipeline(classify_dir, minilm_vectors):
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (classify_dir / name).is_file(), name
    ours = assert_same_vectors(classify_dir)
    assert np.abs(ours - minilm_vectors).max() > 1e-3  # the encoder did change


def test_fine_tuned_from_a_sentence_transformers_6_directory(tmp_path, st6_dir, mr_small, minilm_vectors):
    out = tmp_path / "mr"
    _finetune(st6_dir, out, "classify", *mr_small)
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 256
    assert (out / "2_Normalize").is_dir()
    assert np.abs(assert_same_vectors(out) - minilm_vectors).max() > 1e-3


def test_crf_ner_fine_tuned_from_minilm_is_still_its_sentence_pipeline(tmp_path, minilm_dir, wnut16_dir):
    train = head_conll(wnut16_dir / "train.conll", tmp_path / "train.conll", 24)
    out = tmp_path / "ner"
    _finetune(minilm_dir, out, "ner", train, train, "--head", "crf")
    assert json.loads((out / "config.json").read_text())["model_type"] == "bertkit-crf"
    assert_same_vectors(out, trust_remote_code=True)  # sentence-transformers loads the encoder via auto_map


def test_further_pretrained_minilm_is_still_its_sentence_pipeline(tmp_path, minilm_dir, corpus_en_dir, minilm_vectors):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join((corpus_en_dir / "corpus.txt").read_text().splitlines()[:20]) + "\n")
    data = tmp_path / "data"
    args = ["pretrain-data", "--input", str(text), "--vocab", "minilm", "--output", str(data)]
    assert cli([*args, "--max-seq-length", "32", "--max-predictions", "5", "--dupe-factor", "1"]) == 0
    out = tmp_path / "more"
    args = ["pretrain", "--model", "minilm", "--data", str(data), "--output", str(out), "--train.max-steps=2"]
    assert cli([*args, "--train.batch-size=4", "--train.lr=1e-3", "--eval-instances=4", "--device", "cpu"]) == 0
    assert np.abs(assert_same_vectors(out) - minilm_vectors).max() > 1e-3


def test_transformers_pipelines_truncate_long_inputs_in_bertkit_directories(classify_dir, tiny_dir, tmp_path, mr_small):
    """model_max_length: MiniLM's 256-token limit where it has one, else max_position_embeddings."""
    assert json.loads((classify_dir / "tokenizer_config.json").read_text())["model_max_length"] == 256
    tiny = tmp_path / "tiny-mr"
    _finetune(tiny_dir, tiny, "classify", *mr_small)
    assert json.loads((tiny / "tokenizer_config.json").read_text())["model_max_length"] == 128
    for model_dir in (classify_dir, tiny):
        classifier = transformers.pipeline("text-classification", model=str(model_dir), device="cpu")
        labels = json.loads((model_dir / "config.json").read_text())["id2label"].values()
        assert classifier(LONG_INPUT, truncation=True)[0]["label"] in labels
        extractor = transformers.pipeline("feature-extraction", model=str(model_dir), device="cpu")
        hidden = extractor(LONG_INPUT, tokenize_kwargs={"truncation": True})
        assert len(hidden[0]) == json.loads((model_dir / "tokenizer_config.json").read_text())["model_max_length"]


def test_save_model_writes_the_limit_of_the_model(tmp_path, minilm_dir):
    """A plain encoder saved from MiniLM's weights without a pipeline: max_position_embeddings."""
    out = save_model(load_model(minilm_dir, BertModel), tmp_path / "plain", BertTokenizer.from_dir(minilm_dir))
    assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == 512
    assert not (out / "modules.json").exists()


@pytest.mark.parametrize("activation", ["torch.nn.modules.activation.Tanh", "torch.nn.modules.linear.Identity"])
def test_a_pipeline_with_a_dense_projection_encodes_as_sentence_transformers_does(minilm_dir, tmp_path, activation):
    """A Dense module after pooling (sentence-transformers' default activation, tanh, and none) written
    by sentence-transformers itself: bertkit applies it, and the vectors have its width."""
    try:  # sentence-transformers 6; earlier versions: sentence_transformers.models
        from sentence_transformers.sentence_transformer import modules as models
    except ImportError:
        from sentence_transformers import models
    torch.manual_seed(0)
    transformer = models.Transformer(str(minilm_dir))
    pooling = models.Pooling(384, pooling_mode="mean")
    act = torch.nn.Tanh() if activation.endswith("Tanh") else torch.nn.Identity()
    dense = models.Dense(384, 64, activation_function=act)
    st = sentence_transformers.SentenceTransformer(modules=[transformer, pooling, dense, models.Normalize()])
    st.save(str(tmp_path / "dense"))
    assert json.loads((tmp_path / "dense" / "2_Dense" / "config.json").read_text())["activation_function"] == activation
    encoder = Encoder(tmp_path / "dense", device="cpu")
    assert encoder.dim == 64
    ours = encoder.encode(SENTENCES)
    assert ours.shape == (len(SENTENCES), 64)
    assert np.abs(ours - st_vectors(tmp_path / "dense")).max() <= 1e-5
