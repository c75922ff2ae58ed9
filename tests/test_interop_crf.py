"""A CRF NER directory in transformers: loaded with trust_remote_code it tags as bertkit does (Viterbi),
without it transformers refuses; the tokenizer loads either way; ONNX export says what decoding needs."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from helpers import head_conll
from seqeval.metrics import f1_score

from bertkit.cli.main import main as cli
from bertkit.finetune import save_task_dir
from bertkit.inference import load, predict_inputs, run_examples
from bertkit.tasks.crf import allowed_transitions

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def crf_dir(tmp_path_factory, tiny_dir, wnut16_dir):
    """A CRF NER model trained for a few steps with the CLI, then given strong random CRF and classifier
    weights (through bertkit, saved by bertkit) so that transitions change the tags: a barely trained
    tiny model tags everything `O`, where any decoder agrees."""
    tmp = tmp_path_factory.mktemp("crf")
    train = head_conll(wnut16_dir / "train.conll", tmp / "train.conll", 40)
    out = tmp / "ner"
    args = ["finetune", "--task", "ner", "--head", "crf", "--model", str(tiny_dir), "--train", str(train)]
    assert cli([*args, "--dev", str(train), "--output", str(out), "--train.epochs=1", "--device", "cpu"]) == 0
    run = load(out, device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in run.model.crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        run.model.classifier.weight.copy_(torch.randn(run.model.classifier.weight.shape, generator=g) * 0.5)
    save_task_dir(out, run.model, run.fine_tuned, run.tokenizer, run.max_length, {}, tiny_dir)
    return out


@pytest.fixture(scope="module")
def dev(crf_dir, wnut16_dir):
    """(unlabelled examples, gold tags) of 60 WNUT-16 dev sentences of at most 30 words."""
    task = load(crf_dir, device="cpu").fine_tuned
    path = str(wnut16_dir / "dev.conll")
    pairs = [(e, g["tags"]) for e, g in zip(task.read_inputs(path), task.read(path)) if len(e["tokens"]) <= 30]
    return [e for e, _ in pairs[:60]], [g for _, g in pairs[:60]]


def _hf_word_tags(model, tokenizer, words: list[str]) -> tuple[list[str], list[str]]:
    """(tags from the remote code's logits, tags from the plain classifier's argmax) at each word's first piece."""
    enc = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    word_ids = enc.word_ids(0)
    starts = [w is not None and (i == 0 or word_ids[i - 1] != w) for i, w in enumerate(word_ids)]
    with torch.no_grad():
        logits = model(**enc, word_starts=torch.tensor([starts])).logits[0]
        emissions = model.classifier(model.bert(**enc).last_hidden_state)[0]
    crf, plain = ["O"] * len(words), ["O"] * len(words)
    for i, start in enumerate(starts):
        if start:
            crf[word_ids[i]] = model.config.id2label[int(logits[i].argmax())]
            plain[word_ids[i]] = model.config.id2label[int(emissions[i].argmax())]
    return crf, plain


def test_transformers_with_remote_code_decodes_as_bertkit(crf_dir, dev):
    dev_examples, gold = dev
    config = json.loads((crf_dir / "config.json").read_text())
    assert config["model_type"] == "bertkit-crf" and (crf_dir / "modeling_bertkit_crf.py").is_file()
    run = load(crf_dir, device="cpu")
    ours = [p["tags"] for p in run_examples(run, dev_examples)]
    tokenizer = transformers.AutoTokenizer.from_pretrained(crf_dir, local_files_only=True)
    model = transformers.AutoModelForTokenClassification.from_pretrained(
        crf_dir, trust_remote_code=True, local_files_only=True
    )
    theirs, plain = zip(*(_hf_word_tags(model, tokenizer, e["tokens"]) for e in dev_examples))
    assert list(theirs) == ours
    # The check has teeth: bertkit's tags hold entities, and argmax (what a plain BertForTokenClassification
    # gives) differs and breaks the BIO rules that Viterbi keeps.
    assert sum(t != "O" for tags in ours for t in tags) > 20
    assert sum(a != b for a, b in zip(ours, plain)) > len(ours) // 2
    labels = run.fine_tuned.label_set
    start, trans, _ = allowed_transitions(labels, "BIO")
    index = {t: i for i, t in enumerate(labels)}

    def valid(tags):
        ids = [index[t] for t in tags]
        return bool(start[ids[0]]) and all(trans[a, b] for a, b in zip(ids, ids[1:]))

    assert all(valid(tags) for tags in theirs) and not all(valid(tags) for tags in plain)
    assert f1_score(gold, list(theirs)) == pytest.approx(f1_score(gold, ours))


def test_pipeline_on_raw_text_gives_bertkit_entities(crf_dir, dev):
    """On raw text both tag BERT's pre-tokenizer words: the pipeline's words ("first" aggregation) get the
    Viterbi tags, so its entities are bertkit's, character for character."""
    run = load(crf_dir, device="cpu")
    tokenizer = transformers.AutoTokenizer.from_pretrained(crf_dir, local_files_only=True)
    unk = tokenizer.unk_token_id
    # A word that is one [UNK] (an emoji) is glued to the word before by the pipeline's subword rule.
    texts = [" ".join(e["tokens"]) for e in dev[0]]
    texts = [t for t in texts if unk not in tokenizer(t)["input_ids"]]
    assert len(texts) > 30
    tagger = transformers.pipeline(
        "token-classification", model=str(crf_dir), trust_remote_code=True, aggregation_strategy="first"
    )
    found = 0
    for text, ours in zip(texts, predict_inputs(run, texts)):
        theirs = [(g["entity_group"], g["start"], g["end"]) for g in tagger(text)]
        assert theirs == [(e["type"], e["start"], e["end"]) for e in ours["entities"]], text
        found += len(theirs)
    assert found > 10


def test_transformers_refuses_without_remote_code(crf_dir):
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModelForTokenClassification.from_pretrained(
            crf_dir, trust_remote_code=False, local_files_only=True
        )
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoConfig.from_pretrained(crf_dir, trust_remote_code=False, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(crf_dir, trust_remote_code=False, local_files_only=True)
    assert tokenizer("Barack Obama")["input_ids"] == load(crf_dir, device="cpu").tokenizer.encode("Barack Obama").ids


def test_bertkit_reads_its_crf_directory_without_the_interop_entries(crf_dir, caplog):
    """auto_map and the tensors written for the modeling file are not reported as unknown or unused."""
    with caplog.at_level(logging.INFO, logger="bertkit"):
        run = load(crf_dir, device="cpu")
    assert not [r for r in caplog.records if "not used" in r.getMessage() or "newly" in r.getMessage()]
    assert run.model.crf.transitions.abs().max() > 0.5  # the weights written above


def test_onnx_export_of_a_crf_model_says_decoding_needs_the_transitions(crf_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    assert cli(["export", "--model", str(crf_dir), "--output", str(out)]) == 0
    said = capsys.readouterr()
    report = json.loads((out / "export.json").read_text())
    assert "crf.safetensors" in report["decoding"] and "Viterbi" in report["decoding"]
    readme = (out / "README.txt").read_text()
    assert "crf.safetensors" in readme and "Viterbi" in readme
    assert "crf.safetensors" in said.out + said.err
