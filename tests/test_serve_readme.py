"""The curl commands of the README's Serve section, run as they are written (only the port changes)
against a live server with MiniLM behind /encode and a stand-in classifier behind /predict/sentiment.
With the `curl` binary when there is one; else httpx sends what curl -d sends (a form Content-Type)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import httpx
import numpy as np
from test_serve_http import serving

from bertkit.encode import Encoder
from bertkit.encode.server import create_app
from bertkit.tasks.classify import ClassifyTask

README = Path(__file__).resolve().parents[1] / "README.md"


def serve_section_curls() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Serve\n", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.strip().startswith("curl ")]


class Sentiment:
    """A classifier stand-in: the test is about what reaches the server, not about the model."""

    task = ClassifyTask  # what the server reads of a task: its name and input fields

    def examples(self, inputs):
        return inputs

    def __call__(self, examples):
        return [{"text": e["text"], "label": "positive"} for e in examples]


def run_curl(command: str) -> str:
    if shutil.which("curl"):
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, env={**os.environ, "NO_PROXY": "*"}
        )
        assert done.returncode == 0, done.stderr
        return done.stdout
    words = shlex.split(command)
    url = "http://" + next(w for w in words[1:] if not w.startswith("-") and w.startswith("localhost"))
    data = words[words.index("-d") + 1]
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "*/*", "User-Agent": "curl/8"}
    return httpx.post(url, content=data.encode(), headers=headers).text


def test_the_readme_curl_commands_work_as_written(minilm_dir):
    commands = serve_section_curls()
    assert [c.split()[2].split("/", 1)[1] for c in commands] == ["encode", "predict/sentiment"], commands
    encoder = Encoder(minilm_dir)
    with serving(create_app(encoder, {"sentiment": Sentiment()})) as url:
        port = url.rsplit(":", 1)[1]
        encoded, predicted = (json.loads(run_curl(c.replace("localhost:8000", f"localhost:{port}"))) for c in commands)
    assert encoded["shape"] == [1, 384]
    np.testing.assert_allclose(encoded["vectors"], encoder.encode(["a gorgeous film"]), atol=1e-5)
    assert predicted == {"predictions": [{"text": "a gorgeous film", "label": "positive"}]}
