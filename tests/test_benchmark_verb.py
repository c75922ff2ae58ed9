"""`bertkit benchmark`: the score arithmetic by hand, the submission formats, and tiny end-to-end runs
on the fixture folders (tests/fixtures/benchmarks) that check the tables, the submission files and
that a second call keeps the finished tasks."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from bertkit.benchmark import SUITES, _answer, submission_text, suite_score, summarise, train_limit
from bertkit.cli.main import main

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def test_glue_score_is_the_mean_of_task_scores_where_two_metrics_count_their_mean():
    tasks = {
        "CoLA": {"mcc": 0.50},
        "MRPC": {"f1": 0.90, "accuracy": 0.80},  # counts 0.85
        "STS-B": {"pearson": 0.88, "spearman": 0.86},  # counts 0.87
        "MNLI": {"accuracy": 0.80, "dev_mismatched.accuracy": 0.82},  # counts 0.81
    }
    assert suite_score(tasks) == pytest.approx((0.50 + 0.85 + 0.87 + 0.81) / 4)  # 0.7575


def test_a_row_is_the_mean_and_std_over_seeds_on_0_to_100():
    recipes = [r for r in SUITES["glue"] if r.name in ("CoLA", "MRPC")]
    results = {
        "CoLA": {"seeds": {"1": {"mcc": 0.4}, "2": {"mcc": 0.6}}},
        "MRPC": {"seeds": {"1": {"f1": 0.9, "accuracy": 0.8}, "2": {"f1": 0.8, "accuracy": 0.7}}},
    }
    row = summarise(results, recipes)
    # seed 1: (0.4 + 0.85) / 2 = 0.625; seed 2: (0.6 + 0.75) / 2 = 0.675
    assert row["score"]["mean"] == pytest.approx(65.0)
    assert row["score"]["std"] == pytest.approx(100 * 0.05 / 2**0.5)  # sample std of two values: |a - b| / sqrt 2
    assert row["tasks"]["MRPC"]["f1"]["mean"] == pytest.approx(85.0)
    assert row["tasks"]["MRPC"]["score"]["mean"] == pytest.approx(80.0)
    assert row["tasks"]["CoLA"]["mcc"]["std"] == pytest.approx(100 * 0.2 / 2**0.5)


def test_the_budget_is_a_share_of_the_training_examples():
    assert train_limit(0.1, 392_702) == 39_271  # MNLI's train set: ceil(39,270.2)
    assert train_limit(0.01, 5) == 1
    assert train_limit(1.0, 8_551) is None  # all of CoLA


def test_submission_formats():
    glue = submission_text("MRPC.tsv", [("0", "1"), ("1", "0")])
    assert glue == "index\tprediction\n0\t1\n1\t0\n"
    clue = submission_text("tnews11_predict.json", [("0", "108"), ("1", "104")])
    assert [json.loads(line) for line in clue.splitlines()] == [{"id": 0, "label": "108"}, {"id": 1, "label": "104"}]
    # CLUENER: {type: {entity: [[start, end]]}} with `end` inclusive, as its training data
    entities = [
        {"type": "name", "text": "李四", "start": 0, "end": 2},
        {"type": "address", "text": "上海", "start": 3, "end": 5},
    ]
    assert _answer({"entities": entities}) == {"name": {"李四": [[0, 1]]}, "address": {"上海": [[3, 4]]}}
    assert _answer({"score": 3.14159}) == 3.142


def _bench(tiny_dir, data: Path, out: Path, *extra: str) -> int:
    argv = ["benchmark", "--data-dir", str(data), "--model", str(tiny_dir), "--output", str(out), "--device", "cpu"]
    return main([*argv, *extra])


def _weights(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}


def test_glue_end_to_end_and_a_second_call_keeps_finished_tasks(tmp_path, tiny_dir, capsys, caplog):
    out = tmp_path / "out"
    code = _bench(tiny_dir, FIXTURES / "glue", out, "--tasks", "cola,sts-b,mnli", "--seeds", "1,2")
    assert code == 0
    printed = capsys.readouterr().out
    lines = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| model | GLUE score | CoLA (MCC) | STS-B (Pearson/Spearman) | MNLI (m/mm acc) |"
    assert lines[2].startswith(f"| {tiny_dir} | ") and lines[2].count(" ± ") == 6
    assert printed.startswith(lines[0])
    table = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    assert table["tasks"] == ["CoLA", "STS-B", "MNLI"] and table["seeds"] == [1, 2]
    (row,) = table["rows"]
    assert set(row["tasks"]["MNLI"]) == {"score", "accuracy", "dev_mismatched.accuracy"}
    done = json.loads((out / tiny_dir.name / "MNLI" / "benchmark.json").read_text(encoding="utf-8"))
    assert set(done["seeds"]) == {"1", "2"}
    by_seed = [suite_score({n: json.loads((out / tiny_dir.name / n / "benchmark.json").read_text())["seeds"][s]
                            for n in table["tasks"]}) for s in ("1", "2")]  # fmt: skip
    assert row["score"]["mean"] == pytest.approx(100 * sum(by_seed) / 2)
    # dev_mismatched scored by this verb: 2 examples, so accuracy is 0, 0.5 or 1
    assert done["seeds"]["1"]["dev_mismatched.accuracy"] in (0.0, 0.5, 1.0)

    submission = out / tiny_dir.name / "submission"
    assert sorted(p.name for p in submission.iterdir()) == [
        "AX.tsv",
        "CoLA.tsv",
        "MNLI-m.tsv",
        "MNLI-mm.tsv",
        "STS-B.tsv",
    ]
    cola = (submission / "CoLA.tsv").read_text(encoding="utf-8").splitlines()
    assert cola[0] == "index\tprediction" and [r.split("\t")[0] for r in cola[1:]] == ["0", "1"]
    assert {r.split("\t")[1] for r in cola[1:]} <= {"0", "1"}
    mnli_m = (submission / "MNLI-m.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(mnli_m) == 2 and {r.split("\t")[1] for r in mnli_m} <= {"entailment", "neutral", "contradiction"}
    stsb = (submission / "STS-B.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [float(r.split("\t")[1]) for r in stsb] == [pytest.approx(float(r.split("\t")[1])) for r in stsb]

    before = _weights(out)
    assert len(before) == 6  # 3 tasks x 2 seeds
    caplog.clear()
    caplog.set_level(logging.INFO, logger="bertkit")
    assert _bench(tiny_dir, FIXTURES / "glue", out, "--tasks", "cola,sts-b,mnli", "--seeds", "1,2") == 0
    assert _weights(out) == before  # nothing retrained
    assert sum("finished earlier, kept" in r.getMessage() for r in caplog.records) == 3
    assert json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))["rows"] == table["rows"]

    # another budget would mix settings in one table: refused, naming the task's file
    capsys.readouterr()
    assert _bench(tiny_dir, FIXTURES / "glue", out, "--tasks", "cola", "--seeds", "1,2", "--budget", "0.5") == 2
    assert "CoLA/benchmark.json was run with other settings" in capsys.readouterr().err


def test_clue_end_to_end_an_unfinished_task_starts_over(tmp_path, tiny_dir, capsys):
    data = tmp_path / "clue"
    shutil.copytree(FIXTURES / "clue", data)
    (data / "cmnli").rename(data / "cmnli_public")  # CLUE's zip names are found too
    out = tmp_path / "out"
    (out / tiny_dir.name / "csl" / "seed-1").mkdir(parents=True)  # a killed run: no benchmark.json
    (out / tiny_dir.name / "csl" / "seed-1" / "partial").write_text("x", encoding="utf-8")
    assert _bench(tiny_dir, data, out, "--suite", "clue", "--tasks", "cmnli,csl,cluener", "--seeds", "3") == 0
    assert not (out / tiny_dir.name / "csl" / "seed-1").exists()
    header = (out / "leaderboard.md").read_text(encoding="utf-8").splitlines()[0]
    assert header == "| model | CLUE score | cmnli (acc) | csl (acc) | cluener (F1) |"
    submission = out / tiny_dir.name / "submission"
    assert sorted(p.name for p in submission.iterdir()) == [
        "cluener_predict.json",
        "cmnli_predict.json",
        "csl_predict.json",
    ]
    cmnli = [json.loads(line) for line in (submission / "cmnli_predict.json").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in cmnli] == [0] and cmnli[0]["label"] in {"neutral", "entailment", "contradiction"}
    cluener = [
        json.loads(line) for line in (submission / "cluener_predict.json").read_text(encoding="utf-8").splitlines()
    ]
    assert [r["id"] for r in cluener] == [0, 1] and all(isinstance(r["label"], dict) for r in cluener)
    texts = ["四川敦煌学”。近年来，丹棱县等地一些干部群众", "李四在上海。"]
    for r, text in zip(cluener, texts):  # every span covers its entity's text, end inclusive
        for names in r["label"].values():
            for entity, spans in names.items():
                assert all(text[s : e + 1] == entity for s, e in spans)


def test_tasks_not_in_the_suite_or_not_in_the_folder(tmp_path, capsys):
    data = tmp_path / "glue"
    data.mkdir()
    assert main(["benchmark", "--data-dir", str(data), "--model", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--tasks", "sst2"]) == 2  # fmt: skip
    assert "`sst2` is not a glue task (did you mean `sst-2`?)" in capsys.readouterr().err
    assert main(["benchmark", "--data-dir", str(data), "--model", str(tmp_path), "--output", str(tmp_path / "o"),
                 "--tasks", "rte"]) == 2  # fmt: skip
    assert "no folder RTE; unpack each task's download there" in capsys.readouterr().err
