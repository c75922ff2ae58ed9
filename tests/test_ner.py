"""NER task: worked examples of label alignment, CoNLL and CLUENER reading with exact offsets, every
bad-input error, windowing (each word from its most central window), CRF decoding that is always
valid, training on a tiny model, a CRF save/load round trip, and `encode_words_batch` on real data.
"""

from __future__ import annotations

import json
import logging
import random
import time

import pytest
import torch

from bertkit.checkpoint import load_weights, read_state_dict, save_model
from bertkit.data.collate import IGNORE, collate
from bertkit.data.tagging import join_tokens, split_words
from bertkit.errors import BertkitError
from bertkit.inference import predict
from bertkit.model import BertConfig
from bertkit.tasks.crf import CRF
from bertkit.tasks.ner import NerTask

BIO5 = ["O", "B-LOC", "B-PER", "I-LOC", "I-PER"]


@pytest.fixture(scope="module")
def pd_train(peoples_daily_ner_dir):
    return NerTask().read(str(peoples_daily_ner_dir / "train.conll"))


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def cluener(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def outputs_from(task, features, score, crf: CRF | None = None) -> list[dict]:
    """What `task.forward` returns, one batch: per feature [tagged words, L] from score(feature, k, word)."""
    rows = []
    for f in features:
        words = [w for w in f["words"] if w >= 0]
        rows.append(
            torch.stack([score(f, k, w) for k, w in enumerate(words)]) if words else torch.zeros(0, len(task.labels))
        )
    return [{"logits": rows, "crf": crf.state_dict() if crf is not None else None}]


def perfect(task, features, examples, crf=None) -> list[dict]:
    """Decode from logits that are one-hot on the gold tag of every word."""

    def score(f, k, w):
        return 10 * torch.eye(len(task.labels))[task.labels.index(examples[f["example"]]["tags"][w])]

    return task.decode(outputs_from(task, features, score, crf), features, examples)


def is_valid(tags: list[str], scheme: str) -> bool:
    """BIO / BIOES written out on tag strings, independently of the CRF's masks."""
    prev = "O"
    for tag in tags:
        inside = prev[0] in "BI"  # an entity of type prev[2:] is open
        if tag[0] in "IE" and not (inside and prev[2:] == tag[2:]):
            return False
        if scheme == "BIOES" and tag[0] in "BSO" and inside:
            return False
        prev = tag
    return not (scheme == "BIOES" and prev[0] in "BI")


# --- Label alignment ------------------------------------------------------------------------------
def test_label_on_first_piece_only_and_unk_words(tmp_path, en):
    path = write(tmp_path, "a.conll", "Jim B-PER\nHenson I-PER\nwas O\nunaffable O\n😀 O\n\nMuppets B-ORG\n")
    task = NerTask()
    examples = task.read(path)
    task.fit(examples)
    assert task.labels == ["O", "B-ORG", "B-PER", "I-PER"] and task.scheme == "BIO"
    first, second = task.featurize(examples, en, 128)
    assert en.convert_ids_to_tokens(first["input_ids"]) == [
        "[CLS]",
        "jim",
        "henson",
        "was",
        "una",
        "##ffa",
        "##ble",
        "[UNK]",
        "[SEP]",
    ]
    assert first["label"] == [IGNORE, 2, 3, 0, 0, IGNORE, IGNORE, 0, IGNORE]
    assert first["words"] == [IGNORE, 0, 1, 2, 3, IGNORE, IGNORE, 4, IGNORE]
    assert en.convert_ids_to_tokens(second["input_ids"]) == ["[CLS]", "mu", "##ppet", "##s", "[SEP]"]
    assert second["label"] == [IGNORE, 1, IGNORE, IGNORE, IGNORE]
    assert first["example"] == 0 and second["example"] == 1


def test_chinese_characters_get_one_label_each(tmp_path, zh):
    path = write(tmp_path, "zh.conll", "江 B-PER\n泽 I-PER\n民 I-PER\n在 O\n北 B-LOC\n京 I-LOC\n")
    task = NerTask()
    examples = task.read(path)
    task.fit(examples)
    assert examples[0]["text"] == "江泽民在北京"
    (f,) = task.featurize(examples, zh, 128)
    assert zh.convert_ids_to_tokens(f["input_ids"][1:-1]) == list("江泽民在北京")
    assert f["label"] == [IGNORE, 2, 4, 4, 0, 1, 3, IGNORE]
    (p,) = perfect(task, [f], examples)
    assert p["entities"] == [
        {"type": "PER", "text": "江泽民", "start": 0, "end": 3},
        {"type": "LOC", "text": "北京", "start": 4, "end": 6},
    ]


# --- Reading --------------------------------------------------------------------------------------
def test_conll_text_spans_docstart_and_columns(tmp_path):
    path = write(
        tmp_path,
        "d.conll",
        "-DOCSTART- -X- O O\n\n１ NUM O\n２ NUM O\n月 N O\nEU NNP B-ORG\n"
        "rejects VBZ O\n德 N B-LOC\n国 N I-LOC\n\n\n\nok O\n",
    )
    examples = NerTask().read(path)
    assert [e["line"] for e in examples] == [3, 13]
    e = examples[0]
    assert e["tokens"] == ["１", "２", "月", "EU", "rejects", "德", "国"]
    assert e["tags"] == ["O", "O", "O", "B-ORG", "O", "B-LOC", "I-LOC"]
    assert e["text"] == "１２月 EU rejects 德国"
    assert [e["text"][s:t] for s, t in e["spans"]] == e["tokens"]
    assert join_tokens(["a", "中", "b"]) == ("a 中 b", [(0, 1), (2, 3), (4, 5)])


def test_format_is_told_by_suffix_or_by_the_first_line(tmp_path):
    task = NerTask()
    json_txt = task.read(
        write(tmp_path, "c.txt", "\n" + cluener({"text": "张三", "label": {"name": {"张三": [[0, 1]]}}}))
    )
    assert json_txt[0]["tags"] == ["B-name", "I-name"] and json_txt[0]["line"] == 2
    brace = task.read(write(tmp_path, "b.txt", "{ O\n} O\n"))
    assert brace[0]["tokens"] == ["{", "}"] and brace[0]["text"] == "{ }"


def test_cluener_tags_offsets_and_spaces_inside_entities(tmp_path, zh):
    record = {
        "text": "浙商银行 Bank 叶老桂",
        "label": {"company": {"浙商银行 Bank": [[0, 8]]}, "name": {"叶老桂": [[10, 12]]}},
    }
    path = write(tmp_path, "c.json", cluener(record, {"text": "无实体", "label": {}}))
    task = NerTask()
    examples = task.read(path)
    e = examples[0]
    assert e["tokens"] == list(record["text"]) and e["line"] == 1 and examples[1]["line"] == 2
    # The space inside the company is part of it; the one after it is not.
    assert e["tags"] == ["B-company"] + ["I-company"] * 8 + ["O", "B-name", "I-name", "I-name"]
    task.fit(examples)
    features = task.featurize(examples, zh, 128)
    assert [w for w in features[0]["words"] if w >= 0] == [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12]  # spaces: none
    (p, q) = perfect(task, features, examples)
    assert p["tags"] == e["tags"]  # the spaces, which have no pieces, are filled back in
    assert p["entities"] == [
        {"type": "company", "text": "浙商银行 Bank", "start": 0, "end": 9},
        {"type": "name", "text": "叶老桂", "start": 10, "end": 13},
    ]
    assert q == {"tags": ["O"] * 3, "entities": []}
    bioes = NerTask(scheme="BIOES").read(
        write(
            tmp_path,
            "s.jsonl",
            cluener({"text": "李四去了上海", "label": {"name": {"李四": [[0, 1]]}, "address": {"海": [[5, 5]]}}}),
        )
    )
    assert bioes[0]["tags"] == ["B-name", "E-name", "O", "O", "O", "S-address"]


def test_read_inputs_splits_like_bert(tmp_path, en):
    path = write(tmp_path, "in.txt", "江泽民在北京。\n\nJim Henson's Muppets\n")
    task = NerTask(labels=["O", "B-PER", "I-PER"])
    examples = task.read_inputs(path)
    assert [e["line"] for e in examples] == [1, 3] and examples[0]["tags"] is None
    assert examples[0]["tokens"] == list("江泽民在北京。")
    assert examples[1]["tokens"] == ["Jim", "Henson", "'", "s", "Muppets"]
    assert split_words("x１２月 a,b") == [(0, 1), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7), (7, 8)]
    features = task.featurize(examples, en, 128)
    gold = {(1, 0): "B-PER", (1, 1): "I-PER"}  # (example, word) -> tag; everything else O

    def score(f, k, w):
        return torch.eye(3)[task.labels.index(gold.get((f["example"], w), "O"))]

    preds = task.decode(outputs_from(task, features, score), features, examples)
    assert preds[1]["entities"] == [{"type": "PER", "text": "Jim Henson", "start": 0, "end": 10}]
    jsonl = task.read_inputs(write(tmp_path, "in.jsonl", '{"text": "a b", "id": 7}\n'))
    assert jsonl[0]["tokens"] == ["a", "b"] and jsonl[0]["spans"] == [(0, 1), (2, 3)]


# --- Errors: each names the file, the line and the fix --------------------------------------------
@pytest.mark.parametrize(
    "name,text,line,fix",
    [
        ("no_tag.conll", "EU B-ORG\nrejects\n", 2, "has no tag column; write `token tag`"),
        ("bad_tag.conll", "EU O\n\nJohn X-PER\n", 3, "use O, B-TYPE and I-TYPE"),
        ("bare.conll", "John PER\n", 1, "use O, B-TYPE and I-TYPE"),
        ("empty.conll", "", None, "holds no sentences: expected CoNLL `token tag` lines"),
        ("blank.conll", "\n\n-DOCSTART- O\n", None, "holds no sentences"),
        (
            "outside.json",
            cluener({"text": "abc", "label": {}}, {"text": "张三", "label": {"name": {"张三": [[0, 2]]}}}),
            2,
            "is outside the text (2 characters); spans are character indices, end inclusive",
        ),
        (
            "mismatch.json",
            cluener({"text": "张三在北京", "label": {"name": {"张三": [[1, 2]]}}}),
            1,
            "covers '三在', not '张三'; fix the span (text[start:end+1] must equal the entity)",
        ),
        (
            "overlap.json",
            cluener({"text": "北京大学", "label": {"org": {"北京大学": [[0, 3]]}, "loc": {"北京": [[0, 1]]}}}),
            1,
            "overlaps another entity",
        ),
        ("badjson.jsonl", '{"text": "a", "label": {}}\n{"text": \n', 2, "not valid JSON"),
        ("nolabel.json", cluener({"text": "abc"}), 1, 'no `label`; write "label": {}'),
    ],
)
def test_read_errors(tmp_path, name, text, line, fix):
    path = write(tmp_path, name, text)
    with pytest.raises(BertkitError) as info:
        NerTask().read(path)
    msg = str(info.value)
    assert name in msg and fix in msg
    if line is not None:
        assert f"line {line}:" in msg


@pytest.mark.parametrize(
    "train,dev,line,labels",
    [
        ("A B-PER\nb I-PER\n", "x O\n\nB B-LOC\n", 3, "O, B-PER, I-PER"),
        ("A B-PER\n", "x O\ny B-PER\nz I-PER\n", 3, "O, B-PER"),  # I-PER was never seen either
    ],
)
def test_dev_label_train_never_saw(tmp_path, train, dev, line, labels):
    task = NerTask()
    task.fit(task.read(write(tmp_path, "train.conll", train)))
    dev_path = write(tmp_path, "dev.conll", dev)
    with pytest.raises(BertkitError) as info:
        task.check(task.read(dev_path), dev_path)
    assert f"dev.conll, line {line}: tag" in str(info.value)
    assert (
        f"never occurs in the training data (labels: {labels}); fix the tag or add training sentences that use it"
    ) in str(info.value)


@pytest.mark.parametrize(
    "text,kwargs,line,fix",
    [
        ("a O\nb I-PER\n", {}, 2, "'I-PER' cannot follow 'O' in BIO; an entity opens with B- (IOB1 data"),
        ("a I-PER\n", {}, 1, "'I-PER' cannot start a sentence in BIO"),
        ("a B-PER\nb I-LOC\n", {}, 2, "'I-LOC' cannot follow 'B-PER'"),
        ("a B-PER\nb E-PER\n", {"scheme": "BIO"}, 2, "'E-PER' is not a BIO tag; pass scheme=\"BIOES\""),
        ("a B-PER\nb I-PER\n", {"scheme": "BIOES"}, 2, "'I-PER' cannot end a sentence in BIOES"),
        ("a S-PER\nb E-PER\n", {}, 2, "'E-PER' cannot follow 'S-PER' in BIOES"),
    ],
)
def test_invalid_tag_sequences(tmp_path, text, kwargs, line, fix):
    path = write(tmp_path, "seq.conll", text)
    task = NerTask(**kwargs)
    with pytest.raises(BertkitError) as info:
        task.fit(task.read(path))
    msg = str(info.value)
    assert "seq.conll" in msg and f"line {line}:" in msg and fix in msg


def test_bad_head_scheme_and_missing_labels():
    with pytest.raises(BertkitError, match="unknown NER head `crff` \\(did you mean `crf`\\?\\)"):
        NerTask(head="crff")
    with pytest.raises(BertkitError, match="did you mean `BIOES`"):
        NerTask(scheme="BIOE")
    with pytest.raises(BertkitError, match="call fit\\(train\\) first"):
        NerTask().build_model(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2))


# --- Windows --------------------------------------------------------------------------------------
def test_long_sentence_each_word_from_its_most_central_window(tmp_path, zh, caplog):
    labels = ["O"] + [f"B-W{k}" for k in range(7)]
    task = NerTask(labels=labels)
    path = write(tmp_path, "long.txt", "一二三四五六七八九十" * 3 + "\n短句\n")
    examples = task.read_inputs(path)
    with caplog.at_level(logging.INFO, logger="bertkit"):
        features = task.featurize(examples, zh, max_length=10)  # 8 pieces a window, a new one every 4
    assert task.windowed == 1 and "1 of 2 sentences are longer than max_length=10" in caplog.text
    windows = [f for f in features if f["example"] == 0]
    assert len(windows) == 7  # starts 0 4 8 12 16 20 22: the last one is aligned to the end
    assert sorted({w for f in windows for w in f["words"] if w >= 0}) == list(range(30))  # nothing cut
    order = {id(f): k for k, f in enumerate(windows)}

    def score(f, k, w):  # every window votes for its own label
        return torch.eye(len(labels))[order.get(id(f), -1) + 1]

    pred = task.decode(outputs_from(task, features, score), features, examples)[0]
    # Word w (= piece w) sits best in the window that leaves it most pieces to the nearer edge.
    assert "".join(t[-1] for t in pred["tags"]) == "000000111122223333444455566666"


def test_words_split_across_windows_are_all_decoded(tmp_path, en):
    path = write(tmp_path, "w.conll", "".join(f"unaffable {t}\n" for t in ["B-PER", "I-PER", "O"] * 5))
    for head in ("softmax", "crf"):
        task = NerTask(head=head)
        examples = task.read(path)
        task.fit(examples)
        features = task.featurize(examples, en, max_length=6)  # 4 pieces a window: words get cut
        assert task.windowed == 1 and len(features) > 7
        crf = CRF(task.labels, task.scheme) if head == "crf" else None
        assert perfect(task, features, examples, crf)[0]["tags"] == examples[0]["tags"]


def test_window_cut_inside_an_entity_does_not_train_the_cut_part(tmp_path, en):
    tags = ["O"] * 3 + ["B-PER"] + ["I-PER"] * 8 + ["O"] * 3
    path = write(tmp_path, "cut.conll", "".join(f"jim {t}\n" for t in tags))
    task = NerTask(head="crf")
    examples = task.read(path)
    task.fit(examples)
    features = task.featurize(examples, en, max_length=8)  # windows of 6 start at 0, 3, 6, 9
    labelled = [[task.labels[y] if y != IGNORE else "-" for y in f["label"][1:-1]] for f in features]
    assert labelled[0] == ["O", "O", "O", "B-PER", "I-PER", "I-PER"]
    assert labelled[1] == ["B-PER", "I-PER", "I-PER", "I-PER", "I-PER", "I-PER"]
    assert labelled[2] == ["-", "-", "-", "-", "-", "-"]  # all inside the entity, opened before
    assert labelled[3] == ["-", "-", "-", "O", "O", "O"]
    torch.manual_seed(0)
    model = task.build_model(
        BertConfig(
            vocab_size=en.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
        )
    )
    loss = task.loss(model, collate(features))
    assert 0 < loss.item() < 50  # a forbidden start would cost 10000


# --- CRF: always valid ----------------------------------------------------------------------------
@pytest.mark.parametrize("labels,scheme", [(BIO5, "BIO"), (["O", "B-PER", "I-PER", "E-PER", "S-PER"], "BIOES")])
def test_crf_decode_is_valid_even_with_adversarial_logits(tmp_path, zh, labels, scheme):
    rng = random.Random(0)
    lines = ["".join(rng.choice("一二三四五") for _ in range(rng.randint(1, 40))) for _ in range(60)]
    examples = NerTask(labels=labels).read_inputs(write(tmp_path, "in.txt", "\n".join(lines) + "\n"))
    g = torch.Generator().manual_seed(1)
    bias = torch.tensor([5.0 if lab[0] in "IE" else 0.0 for lab in labels])  # O I-PER beats everything

    def score(f, k, w):
        return 3 * torch.randn(len(labels), generator=g) + bias

    crf = CRF(labels, scheme)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_(generator=g)
    task = NerTask(labels=labels, head="crf", scheme=scheme)
    features = task.featurize(examples, zh, max_length=16)  # windowed too: merged before Viterbi
    preds = task.decode(outputs_from(task, features, score, crf), features, examples)
    assert all(is_valid(p["tags"], scheme) for p in preds)
    assert sum(len(p["entities"]) for p in preds) > 50
    softmax = NerTask(labels=labels, scheme=scheme)
    loose = softmax.decode(outputs_from(softmax, features, score), features, examples)
    assert not all(is_valid(p["tags"], scheme) for p in loose)  # the same logits without a CRF


def test_softmax_entities_are_strict():
    task = NerTask(labels=BIO5)
    e = {"tokens": list("abcde"), "text": "abcde", "spans": [(i, i + 1) for i in range(5)]}
    assert task.entities(["O", "I-PER", "I-PER", "B-LOC", "I-PER"], e) == [
        {"type": "LOC", "text": "d", "start": 3, "end": 4}
    ]  # no B-: no entity; a type change ends one


def test_metrics_are_flat_with_per_type_keys():
    task = NerTask(labels=BIO5)
    gold = [{"tags": ["B-PER", "I-PER", "O", "B-LOC"]}, {"tags": ["B-LOC", "O"]}]
    pred = [{"tags": ["B-PER", "I-PER", "O", "O"]}, {"tags": ["B-LOC", "B-PER"]}]
    m = task.metrics(pred, gold)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["LOC_recall"] == 0.5 and m["LOC_precision"] == 1.0 and m["LOC_support"] == 2
    assert m["PER_precision"] == 0.5 and m["PER_f1"] == pytest.approx(2 / 3)
    assert all(isinstance(v, (int, float)) for v in m.values())


# --- Training, save/load --------------------------------------------------------------------------
@pytest.fixture
def one_thread():
    """Tiny matrices: thread start-up costs more than it saves, and on a busy machine much more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@pytest.mark.parametrize("head", ["softmax", "crf"])
def test_overfits_wnut_sentences(wnut16_dir, en, head, one_thread):
    task = NerTask(head=head)
    examples = [e for e in task.read(str(wnut16_dir / "train.conll")) if any(t != "O" for t in e["tags"])][:8]
    task.fit(examples)
    features = task.featurize(examples, en, 64)
    torch.manual_seed(0)
    model = task.build_model(tiny_config(en.vocab_size))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = collate(features)
    losses = []
    for _ in range(60):
        loss = task.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    preds = predict(model, task, features, examples, batch_size=3)  # collate, forward, decode
    assert task.metrics(preds, examples)["f1"] == 1.0
    for p, e in zip(preds, examples):
        for x in p["entities"]:  # end-exclusive offsets into the joined text
            assert e["text"][x["start"] : x["end"]] == x["text"]
    assert preds[0]["entities"] == [  # "... two weeks . Empire State Building = ESB . Pretty bad ..."
        {"type": "facility", "text": "Empire State Building", "start": 64, "end": 85},
        {"type": "facility", "text": "ESB", "start": 88, "end": 91},
    ]


def test_rows_without_tagged_words_do_not_crash(tmp_path, zh, one_thread):
    for head in ("softmax", "crf"):
        task = NerTask(head=head)
        examples = task.read(
            write(
                tmp_path,
                "ws.json",
                cluener({"text": "  ", "label": {}}, {"text": "张三", "label": {"name": {"张三": [[0, 1]]}}}),
            )
        )
        task.fit(examples)
        features = task.featurize(examples, zh, 16)
        assert [w for w in features[0]["words"] if w >= 0] == []
        torch.manual_seed(0)
        model = task.build_model(tiny_config(zh.vocab_size))
        assert torch.isfinite(task.loss(model, collate(features)))
        empty = task.loss(model, collate(features[:1]))
        empty.backward()
        assert empty.item() == 0.0
        preds = predict(model, task, features, examples)
        assert preds[0] == {"tags": ["O", "O"], "entities": []}


def test_crf_model_save_load_round_trip(tmp_path, en):
    task = NerTask(labels=BIO5, head="crf")
    torch.manual_seed(0)
    model = task.build_model(tiny_config(en.vocab_size))
    with torch.no_grad():
        model.crf.transitions.normal_()
    save_model(model, tmp_path / "m", en)
    state = task.state()
    assert state == {"task": "ner", "labels": BIO5, "head": "crf", "scheme": "BIO"}
    again = NerTask(**{k: v for k, v in state.items() if k != "task"})
    loaded = again.build_model(tiny_config(en.vocab_size))
    report = load_weights(loaded, read_state_dict(tmp_path / "m"), source="m")
    assert report.newly_initialised == [] and report.unused == []
    for name in ("start", "end", "transitions"):
        assert torch.equal(getattr(loaded.crf, name), getattr(model.crf, name))


# --- Real data: tokenizer agreement and speed ------------------------------------------------------
def check_encode_words(tokenizer, examples, sample: int):
    sentences = [e["tokens"] for e in examples]
    encoded = tokenizer.encode_words_batch(sentences)
    # Pieces in the sentence are the pieces of each word alone: compare with the whole text's encoding.
    joined = tokenizer._tk.encode_batch([" ".join(s) for s in sentences], add_special_tokens=False)
    assert [ids for ids, _ in encoded] == [j.ids for j in joined]
    for words, (ids, word_ids) in zip(sentences[:sample], encoded[:sample]):
        lib = tokenizer._tk.encode(words, is_pretokenized=True, add_special_tokens=False)
        assert word_ids == lib.word_ids
        for w, word in enumerate(words):
            assert tokenizer.convert_ids_to_tokens([i for i, v in zip(ids, word_ids) if v == w]) == tokenizer.tokenize(
                word
            )


def test_encode_words_matches_per_word_tokenization_wnut16(wnut16_dir, en):
    examples = NerTask().read(str(wnut16_dir / "train.conll"))
    assert len(examples) == 1916
    check_encode_words(en, examples, sample=1916)


def test_encode_words_matches_per_word_tokenization_peoples_daily(pd_train, zh):
    check_encode_words(zh, pd_train, sample=1000)


def test_peoples_daily_featurizes_in_seconds(pd_train, zh, caplog):
    task = NerTask()
    task.fit(pd_train)
    assert len(pd_train) == 15588 and task.labels == ["O", "B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER"]
    start = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="bertkit"):
        features = task.featurize(pd_train, zh, 128)
    assert time.perf_counter() - start < 30
    assert task.windowed == 4273 and len(features) == 24142
    assert "4273 of 15588 sentences are longer than max_length=128" in caplog.text
    assert max(len(f["input_ids"]) for f in features) == 128
    covered = {(f["example"], w) for f in features for w in f["words"] if w >= 0}
    assert len(covered) == sum(len(e["tokens"]) for e in pd_train)  # every character, none cut
