"""Nothing the user has is lost: outputs are checked before any compute, existing ones are replaced
only with --overwrite, an input is never an output, --resume refuses another job, writes are atomic."""

from __future__ import annotations

import os
import stat

import pytest
from helpers import run_finetune

from bertkit.cli.main import main as cli
from bertkit.errors import BertkitError
from bertkit.outputs import atomic_path, atomic_write_text, replaced_dir, sweep_temps


def _err(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def finished_run(tiny_dir, mr_small, tmp_path_factory):
    train, dev = mr_small
    out = tmp_path_factory.mktemp("run") / "mr"
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1") == 0
    return out


def test_finetune_refuses_a_directory_with_user_files(tiny_dir, mr_small, tmp_path, capsys):
    train, dev = mr_small
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1") == 2
    err = _err(capsys)
    assert "is not empty (notes.txt)" in err and "--overwrite" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # no finetune.yaml, nothing else


def test_rerun_into_a_finished_run_keeps_its_files(finished_run, tiny_dir, mr_small, capsys):
    train, dev = mr_small
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    assert "metrics.jsonl" in before
    assert run_finetune(tiny_dir, train, dev, finished_run, "--train.epochs=1") == 2
    assert "--overwrite" in _err(capsys)
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before


def test_resume_refuses_changed_labels_data_task_or_model(
    finished_run, tiny_dir, mr_small, tmp_path, minilm_dir, capsys
):
    train, dev = mr_small
    yaml_before = (finished_run / "finetune.yaml").read_bytes()
    relabelled = tmp_path / "train.tsv"
    relabelled.write_text(train.read_text().replace("\tpositive\n", "\tgood\n"))
    dev2 = tmp_path / "dev.tsv"
    dev2.write_text(dev.read_text().replace("\tpositive\n", "\tgood\n"))
    assert run_finetune(tiny_dir, relabelled, dev2, finished_run, "--resume") == 2
    err = _err(capsys)
    assert "holds a run of another job" in err and "labels" in err and "--overwrite" in err
    shorter = tmp_path / "short.tsv"
    shorter.write_text("".join(train.read_text().splitlines(keepends=True)[:-1]))
    assert run_finetune(tiny_dir, shorter, dev, finished_run, "--resume") == 2
    assert "train:" in _err(capsys)
    assert run_finetune(tiny_dir, train, dev, finished_run, "--resume", "--task", "regression") == 2
    assert "regression" in _err(capsys)
    assert run_finetune(minilm_dir, train, dev, finished_run, "--resume") == 2
    assert "model:" in _err(capsys)
    assert (finished_run / "finetune.yaml").read_bytes() == yaml_before  # not rewritten by a refused resume


def test_resume_of_the_same_job_is_accepted_and_sweeps_stale_temporaries(finished_run, tiny_dir, mr_small, tmp_path):
    train, dev = mr_small
    stale = finished_run / "checkpoint" / ".state.pt.tmp-999999999.pt"  # no such pid: its writer is gone
    stale.write_bytes(b"half a checkpoint")
    assert run_finetune(tiny_dir, train, dev, finished_run, "--train.epochs=1", "--resume") == 0
    assert not stale.exists()


def test_overwrite_replaces_a_run_and_overwrite_with_resume_is_refused(tiny_dir, mr_small, tmp_path, capsys):
    train, dev = mr_small
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1", "--overwrite", "--resume") == 2
    assert "pass one of them" in _err(capsys)
    assert run_finetune(tiny_dir, train, dev, out, "--train.epochs=1", "--overwrite") == 0
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    mode = stat.S_IMODE((out / "model.safetensors").stat().st_mode)
    assert mode == 0o666 & ~_umask()  # safetensors alone would leave 0600


def test_finetune_output_that_is_an_input_is_refused(tiny_dir, mr_small, capsys):
    train, dev = mr_small
    assert run_finetune(tiny_dir, train, dev, train.parent, "--overwrite") == 2
    assert "is also an input" in _err(capsys)
    assert train.is_file() and dev.is_file()


def test_predict_never_writes_over_its_input_or_an_existing_file(finished_run, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("a gorgeous film\na dull film\n")
    assert (
        cli(["predict", "--model", str(finished_run), "--input", str(texts), "--output", str(texts), "--overwrite"])
        == 2
    )
    assert "is also an input" in _err(capsys)
    assert texts.read_text() == "a gorgeous film\na dull film\n"
    out = tmp_path / "preds.jsonl"
    out.write_text("keep me\n")
    assert cli(["predict", "--model", str(finished_run), "--input", str(texts), "--output", str(out)]) == 2
    assert "already exists; pass --overwrite" in _err(capsys)
    assert out.read_text() == "keep me\n"
    assert (
        cli(["predict", "--model", str(finished_run), "--input", str(texts), "--output", str(out), "--overwrite"]) == 0
    )
    assert len(out.read_text().splitlines()) == 2


@pytest.mark.parametrize("verb", ["predict", "encode", "evaluate"])
def test_a_bad_output_place_fails_before_the_model_is_loaded(verb, tmp_path, mr_small, capsys):
    """The model does not exist: an error about the output proves the output was checked first."""
    _, dev = mr_small
    blocker = tmp_path / "file"
    blocker.write_text("")
    data_flag = "--data" if verb == "evaluate" else "--input"
    for output, expected in ((tmp_path, "is a directory"), (blocker / "out.json", "is a file, not a directory")):
        assert (
            cli([verb, "--model", str(tmp_path / "no-such-model"), data_flag, str(dev), "--output", str(output)]) == 2
        )
        assert expected in _err(capsys)


def test_encode_refuses_an_existing_file(tmp_path, minilm_dir, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("one\n")
    out = tmp_path / "v.npy"
    out.write_bytes(b"mine")
    assert cli(["encode", "--model", str(minilm_dir), "--input", str(texts), "--output", str(out)]) == 2
    assert "--overwrite" in _err(capsys) and out.read_bytes() == b"mine"


def test_vocab_convert_and_export_refuse_existing_outputs(tmp_path, tiny_dir, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\n" * 10)
    vocab = tmp_path / "v" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("mine\n")
    assert cli(["vocab", "--corpus", str(corpus), "--output", str(vocab), "--size", "50"]) == 2
    assert "--overwrite" in _err(capsys) and vocab.read_text() == "mine\n"
    for verb in ("convert", "export"):
        out = tmp_path / verb
        out.mkdir()
        (out / "mine.txt").write_text("mine")
        flag = "--input" if verb == "convert" else "--model"
        assert cli([verb, flag, str(tiny_dir), "--output", str(out)]) == 2
        err = _err(capsys)
        assert "is not empty (mine.txt)" in err and "--overwrite" in err
        assert (out / "mine.txt").read_text() == "mine"
        assert cli([verb, flag, str(tiny_dir), "--output", str(tiny_dir), "--overwrite"]) == 2
        assert "is also an input" in _err(capsys)
        assert (tiny_dir / "model.safetensors").is_file()


def test_convert_overwrite_swaps_in_the_new_directory(tmp_path, tiny_dir):
    out = tmp_path / "tf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    assert cli(["convert", "--input", str(tiny_dir), "--output", str(out), "--overwrite"]) == 0
    assert not (out / "old.txt").exists() and (out / "bert_model.ckpt.index").is_file()
    assert not list(tmp_path.glob(".tf.*"))  # no temporary directory left beside it


def test_atomic_writes_leave_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()
    d = tmp_path / "d"
    d.mkdir()
    (d / "keep").write_text("keep")
    with pytest.raises(BertkitError):
        with replaced_dir(d) as tmp:
            (tmp / "new").write_text("new")
            raise BertkitError("the gate refused it")
    assert [p.name for p in d.iterdir()] == ["keep"] and sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "d"]


def test_sweep_keeps_temporaries_of_live_writers(tmp_path):
    live = tmp_path / f".x.tmp-{os.getpid()}.npy"
    dead = tmp_path / ".y.tmp-999999999.npy"
    live.write_bytes(b"")
    dead.write_bytes(b"")
    assert sweep_temps(tmp_path) == 1
    assert live.exists() and not dead.exists()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_killed_writes_temporary_is_swept_when_the_output_is_written_again(tmp_path, minilm_dir):
    texts = tmp_path / "t.txt"
    texts.write_text("one\n")
    stale = tmp_path / ".v.npy.tmp-999999999.npy"  # np.save's half-written file; its process is gone
    stale.write_bytes(b"half")
    assert cli(["encode", "--model", str(minilm_dir), "--input", str(texts), "--output", str(tmp_path / "v.npy")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt", "v.npy"]
