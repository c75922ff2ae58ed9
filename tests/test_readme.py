"""The README as a newcomer meets it: its commands run as written, its Python runs, it stays short, and
the docs speak of the project only.

Every command line in the README's ```sh blocks is either run here (`RUN`, in a temporary directory,
the paths adapted) or named in `SKIPPED` with the reason, so a new command in the README is a test
failure until it is placed in one or the other.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").rglob("*.md"))
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))

# Commands not run here: (how the line starts, why).
SKIPPED = [
    ("make demo", "fine-tunes MiniLM on all of MR: about 8 minutes"),
    ("make test", "sets up .venv, fetches every data set and runs this suite"),
    ("make setup && .venv/bin/python -m pytest", "runs this suite"),
    ("python3 -m venv", "installing takes minutes and the network"),
    (".venv/bin/pip install", "installing takes minutes and the network"),
    (
        "bertkit serve",
        "a server runs until stopped; test_serve_readme.py serves MiniLM and runs the Serve "
        "section's curl commands against it",
    ),
    ("curl ", "run as written by test_serve_readme.py, against a live server"),
]

# Commands run here, in the order written. The finetune line trains a tiny model on a few MR sentences
# instead of MiniLM on all of them (minutes), so that the evaluate, predict and Python lines after it
# have a `runs/mr` to read.
RUN = [
    "bertkit fetch --list",
    "bertkit fetch minilm mr",
    "bertkit finetune --task classify --model minilm --train mr:train --dev mr:dev --output runs/mr",
    "bertkit evaluate --model runs/mr --data mr:test",
    "bertkit predict --model runs/mr --input reviews.txt --output predictions.jsonl",
    "bertkit encode --model minilm --input sentences.txt --output vectors.npy",
    "bertkit finetune --help",
]
NEEDS_NO_DATA = {"bertkit fetch --list", "bertkit finetune --help"}


def sh_commands(text: str) -> list[str]:
    """The command lines of the ```sh blocks: comments dropped, continuation lines joined."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def bertkit(command: str, cwd: Path, substitutions: dict[str, str] | None = None) -> str:
    """Run a README `bertkit ...` line through this interpreter's bertkit; its stdout."""
    words = shlex.split(command)
    assert words[0] == "bertkit", command
    words = [(substitutions or {}).get(w, w) for w in words[1:]]
    done = subprocess.run(
        [sys.executable, "-m", "bertkit.cli.main", *words], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    return done.stdout


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = sh_commands(README.read_text(encoding="utf-8"))
    unplaced = [c for c in commands if c not in RUN and not any(c.startswith(p) for p, _ in SKIPPED)]
    assert not unplaced, f"README commands neither run by this test nor skipped with a reason: {unplaced}"
    missing = [c for c in RUN if c not in commands]
    assert not missing, f"commands this test runs are no longer in the README: {missing}"


def test_readme_commands_that_need_no_data(tmp_path):
    listed = bertkit("bertkit fetch --list", tmp_path)
    assert {"minilm", "mr", "corpus-zh"} <= {line.split()[0] for line in listed.splitlines() if line.strip()}
    assert "--train.head-lr" in bertkit("bertkit finetune --help", tmp_path)


@pytest.fixture()
def tiny_mr(tmp_path, tiny_dir, mr_dir):
    """A few MR sentences per label for the finetune line, and the files the README's lines read."""
    from helpers import slice_tsv

    train = slice_tsv(mr_dir / "train.tsv", tmp_path / "train.tsv", 24)
    dev = slice_tsv(mr_dir / "dev.tsv", tmp_path / "dev.tsv", 8)
    (tmp_path / "reviews.txt").write_text("a gorgeous film\na dull film\n", encoding="utf-8")
    (tmp_path / "sentences.txt").write_text(
        "This is an example sentence\nEach sentence is converted\n", encoding="utf-8"
    )
    return {"minilm": str(tiny_dir), "mr:train": str(train), "mr:dev": str(dev)}


def test_readme_commands_and_python_run_as_written(tmp_path, tiny_mr, minilm_dir, mr_dir):
    for command in RUN:
        if command in NEEDS_NO_DATA:
            continue
        if command.startswith("bertkit finetune --task"):
            out = bertkit(
                command + " --max-length 48 --train.epochs 1 --train.batch-size 16 --device cpu", tmp_path, tiny_mr
            )
            assert "accuracy" in json.loads(out)
        elif command.startswith("bertkit fetch minilm mr"):
            assert bertkit(command, tmp_path).split() == [str(minilm_dir), str(mr_dir)]
        elif command.startswith("bertkit evaluate"):
            assert 0 <= json.loads(bertkit(command, tmp_path))["accuracy"] <= 1
            assert (tmp_path / "runs" / "mr" / "eval-mr-test.json").is_file()
        else:
            bertkit(command, tmp_path)
    predictions = (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(p)["text"] for p in predictions] == ["a gorgeous film", "a dull film"]
    vectors = np.load(tmp_path / "vectors.npy")
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # MiniLM's own vector

    (snippet,) = python_blocks(README.read_text(encoding="utf-8"))
    assert len(snippet.strip().splitlines()) <= 5, snippet
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'label'" in done.stdout and "a dull film" in done.stdout


def test_python_api_guide_runs(tmp_path, tiny_mr, minilm_dir, mr_dir):
    """docs/python-api.md's snippets, the fine-tuning on a tiny model and a few sentences (the Client
    snippet needs a running server; test_serve_http covers the client)."""
    text = (ROOT / "docs" / "python-api.md").read_text(encoding="utf-8")
    code = "\n".join(b for b in python_blocks(text) if "Client(" not in b)
    for old, new in {
        'model="minilm", dev="mr:dev"': f"model={tiny_mr['minilm']!r}, dev={tiny_mr['mr:dev']!r}",
        'data="mr:train", epochs=2': f"data={tiny_mr['mr:train']!r}, epochs=1",
        '"configs/mr.yaml"': repr(str(ROOT / "configs" / "mr.yaml")),
        '"mr:test"': repr(tiny_mr["mr:dev"]),
    }.items():
        assert old in code, f"docs/python-api.md no longer has {old}: update this test"
        code = code.replace(old, new)
    code += "\nassert v.shape == (1, 384) and abs(float(v[0, 0]) - 0.0677) < 1e-3, v[0, :2]\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs" / "mr" / "task.json").is_file()
    assert (tmp_path / "runs" / "minilm-2labels" / "vocab.txt").is_file()


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; keep it under 200 (details go to docs/)"
    long = [(n, len(line)) for n, line in enumerate(lines, 1) if len(line) > 110]
    assert not long, f"README.md lines over 110 characters (line, length): {long}"


def test_the_project_speaks_of_itself_only():
    """No development history: README, docs, configs and bench results say what is, not how it came."""
    pattern = re.compile(r"\bsession[ -]|\bthis session\b", re.I)
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in [README, ROOT / "bench" / "results.md", *DOCS, *CONFIGS]
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_readme_and_docs_resolve():
    broken = []
    for page in [README, ROOT / "bench" / "results.md", *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.is_file():
                headings = re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
