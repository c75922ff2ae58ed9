"""GLUE, CLUE, LCQMC and IMDB read as their downloads ship them (tests/fixtures/benchmarks holds a few
lines of each, in the exact layout, quirks included), the field mapping, and how a preset reaches
the classify task."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bertkit.config import from_dict
from bertkit.data.benchmarks import LAYOUTS, choose_layout, get_layout, locate, read_layout
from bertkit.errors import BertkitError
from bertkit.finetune import FinetuneConfig, data_layout
from bertkit.tasks.classify import ClassifyTask, RegressionTask, read_unlabelled

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"
GLUE, CLUE = FIXTURES / "glue", FIXTURES / "clue"


def records(path: Path, preset: str, labelled: bool = True):
    rows, skipped = read_layout(path, get_layout(preset), labelled)
    return [r for _, r in rows], dict(skipped)


def test_cola_train_and_dev_have_no_header_its_test_file_has_one():
    train, _ = records(GLUE / "CoLA" / "train.tsv", "glue:cola")
    assert len(train) == 6  # the first line is an example, not a header
    assert train[0] == {
        "text": "Our friends won't buy this analysis, let alone the next one we propose.",
        "text_b": None,
        "label": "1",
        "id": None,
    }
    assert [r["label"] for r in train] == ["1", "0", "1", "0", "1", "0"]
    test, _ = records(GLUE / "CoLA" / "test.tsv", "glue:cola", labelled=False)
    assert [(r["id"], r["label"]) for r in test] == [("0", None), ("1", None)]
    assert test[0]["text"] == "Bill whistled past the house."


def test_mrpc_columns_and_its_byte_order_mark():
    assert (GLUE / "MRPC" / "train.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality\t#1 ID")
    train, _ = records(GLUE / "MRPC" / "train.tsv", "glue:mrpc")
    assert train[1] == {
        "text": "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
        "text_b": "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion "
        "in 1998 .",
        "label": "0",
        "id": None,
    }
    test, _ = records(GLUE / "MRPC" / "test.tsv", "glue:mrpc", labelled=False)
    assert [r["id"] for r in test] == ["0", "1"] and test[0]["text"].startswith("PCCW 's chief")


def test_mnli_quotes_that_break_csv_are_plain_text():
    path = GLUE / "MNLI" / "train.tsv"
    # A quoting reader takes the quote opening a text on line 6 as a field running on to the next quote.
    assert len(list(csv.reader(path.open(encoding="utf-8"), delimiter="\t"))) < 8
    train, _ = records(path, "glue:mnli")
    assert len(train) == 7
    assert train[1]["text"].startswith('He said, "you know, during the season')
    assert train[1]["label"] == "entailment"
    assert train[4]["text"] == '"yeah i tell you what though if you go price some of those tennis shoes'
    assert {r["label"] for r in train} == {"entailment", "neutral", "contradiction"}
    matched, _ = records(GLUE / "MNLI" / "dev_matched.tsv", "glue:mnli")  # 16 columns, gold_label last
    assert [r["label"] for r in matched] == ["neutral", "contradiction", "entailment"]
    mismatched, _ = records(GLUE / "MNLI" / "dev_mismatched.tsv", "glue:mnli")
    assert mismatched[1]["text"] == 'The "Cirque du Soleil" is touring'
    test, _ = records(GLUE / "MNLI" / "test_matched.tsv", "glue:mnli", labelled=False)
    assert [r["id"] for r in test] == ["0", "1"] and test[0]["text"].endswith('"names')


def test_qqp_rows_with_missing_fields_are_skipped_and_counted():
    train, skipped = records(GLUE / "QQP" / "train.tsv", "glue:qqp")
    assert skipped == {"missing fields": 1}
    assert len(train) == 5
    assert train[2] == {
        "text": 'What does "ROTFL" mean?',
        "text_b": 'What is the meaning of "rotfl?',
        "label": "1",
        "id": "360472",
    }
    test, _ = records(GLUE / "QQP" / "test.tsv", "glue:qqp", labelled=False)
    assert [r["id"] for r in test] == ["0", "1"]


def test_sts_b_scores_are_regression_labels():
    task = RegressionTask(layout=get_layout("glue:sts-b"))
    examples = task.read(str(GLUE / "STS-B" / "train.tsv"))
    assert [e["label"] for e in examples] == [5.0, 3.8, 3.8, 2.6, 4.25, 4.25]
    assert (examples[0]["text"], examples[0]["text_b"]) == ("A plane is taking off.", "An air plane is taking off.")
    test = task.read_inputs(str(GLUE / "STS-B" / "test.tsv"))
    assert [(e["id"], e["label"]) for e in test] == [("0", None), ("1", None)]


@pytest.mark.parametrize(
    "preset, pair, labels",
    [
        ("glue:qnli", ("When did the third Digimon series begin?", "Unlike"), {"entailment", "not_entailment"}),
        (
            "glue:rte",
            ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons"),
            {"entailment", "not_entailment"},
        ),
        ("glue:wnli", ("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The"), {"0", "1"}),
        ("glue:sst-2", ("hide new secretions from the parental units ", None), {"0", "1"}),
    ],
)
def test_glue_pairs_with_index(preset, pair, labels):
    layout = get_layout(preset)
    train, _ = records(GLUE / layout.folder / "train.tsv", preset)
    text, b = pair
    assert train[0]["text"] == text
    assert (train[0]["text_b"] or "").startswith(b or "") and (b is None) == (train[0]["text_b"] is None)
    assert {r["label"] for r in train} == labels


def test_clue_json_lines():
    tnews, _ = records(CLUE / "tnews" / "train.json", "clue:tnews")
    assert tnews[1] == {
        "text": "商赢环球股份有限公司关于延期回复上海证券交易所对公司2017年年度报告的事后审核问询函的公告",
        "text_b": None,
        "label": "104",
        "id": None,
    }
    iflytek, _ = records(CLUE / "iflytek" / "train.json", "clue:iflytek")
    assert (iflytek[0]["label"], iflytek[0]["text"]) == ("11", "这是一个领红包的软件，每天签到可以领取现金")
    afqmc, _ = records(CLUE / "afqmc" / "test.json", "clue:afqmc", labelled=False)
    assert afqmc == [{"text": "借呗取消的原因", "text_b": "蚂蚁借呗取消了", "label": None, "id": "0"}]
    ocnli = locate(str(CLUE / "ocnli"), "train", get_layout("clue:ocnli"))
    assert ocnli.name == "train.50k.json"
    assert [r["label"] for r in records(ocnli, "clue:ocnli")[0]] == ["entailment", "contradiction", "neutral"]


def test_cmnli_dash_labels_are_skipped_and_counted():
    train, skipped = records(CLUE / "cmnli" / "train.json", "clue:cmnli")
    assert skipped == {"gold label '-'": 1}
    assert [r["label"] for r in train] == ["neutral", "entailment", "entailment", "contradiction"]
    dev = ClassifyTask(layout=get_layout("clue:cmnli")).read(str(CLUE / "cmnli" / "dev.json"))
    assert [(e["label"], e["line"]) for e in dev] == [("neutral", 1), ("contradiction", 2)]  # line 3 skipped
    test, skipped = records(CLUE / "cmnli" / "test.json", "clue:cmnli", labelled=False)
    assert skipped == {} and test[0]["id"] == "0"


def test_csl_keyword_list_is_the_first_text():
    train, _ = records(CLUE / "csl" / "train.json", "clue:csl")
    assert train[0] == {
        "text": "核函数 遗传算法 参数优化",
        "text_b": "针对核函数参数选择问题，提出一种基于遗传算法的优化方法。",
        "label": "1",
        "id": "1",
    }


def test_lcqmc_with_and_without_a_header():
    layout = get_layout("lcqmc")
    train = locate(str(FIXTURES / "lcqmc"), "train", layout)
    assert train.name == "train.txt"
    rows, _ = records(train, "lcqmc")
    assert len(rows) == 5 and rows[0]["text"] == "喜欢打篮球的男生喜欢什么样的女生" and rows[0]["label"] == "1"
    dev, _ = records(FIXTURES / "lcqmc" / "dev.tsv", "lcqmc")
    assert [r["label"] for r in dev] == ["1", "0"] and dev[0]["text_b"] == "初婚未育情况证明怎么开？"


def test_imdb_folders():
    layout = get_layout("imdb")
    assert locate(str(FIXTURES / "aclImdb"), "train", layout) == FIXTURES / "aclImdb" / "train"
    assert locate(str(FIXTURES / "aclImdb"), "dev", layout) == FIXTURES / "aclImdb" / "test"  # no dev split
    rows, _ = records(FIXTURES / "aclImdb" / "train", "imdb")
    assert [(r["label"], r["id"]) for r in rows] == [("neg", "2_1"), ("neg", "3_4"), ("pos", "0_9"), ("pos", "1_7")]
    assert rows[2]["text"] == "Bromwell High is a cartoon comedy.  It ran at the same time as some other programs."
    examples = ClassifyTask(layout=layout).read(str(FIXTURES / "aclImdb" / "test"))
    assert [e["label"] for e in examples] == ["neg", "pos"]


def test_test_files_keep_their_ids_for_the_submission():
    examples = read_unlabelled(str(CLUE / "tnews" / "test.json"), get_layout("clue:tnews"))
    assert [(e["id"], e["text"]) for e in examples] == [
        ("0", "在设计史上，每当相对稳定的发展时期"),
        ("1", "股市今天下跌"),
    ]


def test_a_field_mapping_reads_any_table(tmp_path):
    data = tmp_path / "nli.jsonl"
    data.write_text(
        '{"sentence1": "A man sleeps.", "sentence2": "A person rests.", "gold_label": "entailment"}\n'
        '{"sentence1": "A man runs.", "sentence2": "Nobody moves.", "gold_label": "contradiction"}\n',
        encoding="utf-8",
    )
    layout = choose_layout(None, "sentence1", "sentence2", "gold_label")
    examples = ClassifyTask(layout=layout).read(str(data))
    assert [(e["text"], e["text_b"], e["label"]) for e in examples] == [
        ("A man sleeps.", "A person rests.", "entailment"),
        ("A man runs.", "Nobody moves.", "contradiction"),
    ]
    # a preset's columns can be renamed too: MNLI's first annotator instead of the gold label
    mnli = choose_layout("glue:mnli", label_field="label1")
    assert [r["label"] for r in records(GLUE / "MNLI" / "train.tsv", "glue:mnli")[0]][:2] == ["neutral", "entailment"]
    assert mnli is not None and mnli.label == "label1" and mnli.text == "sentence1"
    with pytest.raises(BertkitError, match=r"nli.jsonl, line 1: no `premise` .* --text-field"):
        ClassifyTask(layout=choose_layout(None, text_field="premise")).read(str(data))


def test_presets_and_task_folders_are_found_by_name(tmp_path):
    assert choose_layout(None, data=str(GLUE / "MRPC")) == LAYOUTS["glue:mrpc"]
    (tmp_path / "tnews_public").mkdir()
    assert choose_layout(None, data=str(tmp_path / "tnews_public")) == LAYOUTS["clue:tnews"]
    assert choose_layout(None, data=str(GLUE / "MRPC" / "train.tsv")) is None  # a file is read as it is
    assert locate(str(GLUE / "MNLI"), "dev", LAYOUTS["glue:mnli"]).name == "dev_matched.tsv"
    with pytest.raises(BertkitError, match=r"unknown --format `glue:sst2` \(did you mean `glue:sst-2`\?\)"):
        get_layout("glue:sst2")


def test_a_file_in_another_layout_names_the_line_and_the_fix():
    with pytest.raises(BertkitError, match=r"CoLA/test.tsv, line 1: the header \(index, sentence\) has no `#1 String`"):
        records(GLUE / "CoLA" / "test.tsv", "glue:mrpc")
    with pytest.raises(BertkitError, match=r"STS-B/train.tsv, line 1: .* no `question`"):
        records(GLUE / "STS-B" / "train.tsv", "glue:qnli")


def test_finetune_refuses_a_preset_for_another_task():
    def cfg(**given):
        base = {"model": "m", "output": "o", "train": {"data": "t"}, "dev": "d"}
        return from_dict(FinetuneConfig, {**base, **given})

    assert data_layout(cfg(task="regression", format="glue:sts-b")) == LAYOUTS["glue:sts-b"]
    with pytest.raises(BertkitError, match="glue:sts-b is data for --task regression, not classify"):
        data_layout(cfg(task="classify", format="glue:sts-b"))
    with pytest.raises(BertkitError, match="--text-field, --text-b-field and --label-field name the columns"):
        data_layout(cfg(task="qa", text_field="question"))
    assert data_layout(cfg(task="ner", format="clue:cluener")) == LAYOUTS["clue:cluener"]


def test_evaluate_and_predict_read_a_preset(tiny_dir, tmp_path, capsys):
    """--format on evaluate and predict: the dev file of a task's folder, the test file's rows kept in
    order; a preset of another task is refused with what the model was trained for."""
    import json

    from bertkit.cli.main import main as cli

    mrpc, out = GLUE / "MRPC", tmp_path / "mrpc"
    args = ["finetune", "--task", "classify", "--model", str(tiny_dir), "--train", str(mrpc), "--dev", str(mrpc)]
    assert cli([*args, "--output", str(out), "--train.max-steps=1", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--data", str(mrpc), "--output", str(tmp_path / "e.json")]) == 0
    by_folder = json.loads(capsys.readouterr().out)
    dev = str(mrpc / "dev.tsv")
    assert (
        cli(
            [
                "evaluate",
                "--model",
                str(out),
                "--data",
                dev,
                "--format",
                "glue:mrpc",
                "--output",
                str(tmp_path / "f.json"),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out) == by_folder
    test, preds = str(mrpc / "test.tsv"), tmp_path / "p.jsonl"
    assert cli(["predict", "--model", str(out), "--input", test, "--format", "glue:mrpc", "--output", str(preds)]) == 0
    rows = records(mrpc / "test.tsv", "glue:mrpc", labelled=False)[0]
    assert len(preds.read_text().splitlines()) == len(rows)
    capsys.readouterr()
    assert cli(["evaluate", "--model", str(out), "--data", dev, "--format", "glue:sts-b"]) == 2
    assert "data for task regression; this model was fine-tuned for classify" in capsys.readouterr().err
