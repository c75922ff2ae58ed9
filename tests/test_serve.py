"""`bertkit serve` and `bertkit.client.Client`: the real MiniLM over HTTP, tiny fine-tuned models behind
/predict, dynamic batching under concurrent load, back-pressure (503), validation and model failures."""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import head_conll, run_finetune, slice_tsv
from test_serve_http import StubEngine, serving

from bertkit.cli.main import main as cli
from bertkit.client import Client
from bertkit.encode import Encoder
from bertkit.encode.server import Limits, PredictEngine, create_app
from bertkit.errors import BertkitError
from bertkit.inference import load_task, predict_file
from bertkit.tasks.ner import NerTask

TEXTS = [
    "the movie was wonderful and moving",
    "a dull , tedious mess",
    "Barack Obama visited Paris on Monday",
    "I love New York in the spring",
]


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return Encoder(minilm_dir)


@pytest.fixture(scope="module")
def runs(tiny_dir, mr_dir, wnut16_dir, tmp_path_factory):
    """A tiny classifier (mr, 1 epoch) and NER model (wnut16, 40 sentences, 1 epoch)."""
    d = tmp_path_factory.mktemp("runs")
    train = slice_tsv(mr_dir / "train.tsv", d / "train.tsv", 20)
    assert run_finetune(tiny_dir, train, train, d / "cls", "--train.epochs=1") == 0
    conll = head_conll(wnut16_dir / "train.conll", d / "train.conll", 40)
    assert (
        cli(
            [
                "finetune",
                "--task",
                "ner",
                "--model",
                str(tiny_dir),
                "--train",
                str(conll),
                "--dev",
                str(conll),
                "--output",
                str(d / "ner"),
                "--train.epochs=1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    return {"sentiment": d / "cls", "ner": d / "ner"}


@pytest.fixture(scope="module")
def api(encoder, runs):
    predictors = {name: PredictEngine(load_task(path, device="cpu")) for name, path in runs.items()}
    with TestClient(create_app(encoder, predictors, Limits(max_texts=8, max_chars=200))) as client:
        yield client


@pytest.fixture
def stub():
    with TestClient(create_app(None, {}, Limits(max_texts=4, max_chars=50), encode_engine=StubEngine())) as client:
        yield client


def test_encode_is_the_published_minilm_vector_and_equals_the_encoder(api, encoder, minilm_dir):
    r = api.post("/encode", json={"texts": ["This is an example sentence", *TEXTS]})
    assert r.status_code == 200, r.text
    v = np.array(r.json()["vectors"], dtype=np.float32)
    assert r.json()["shape"] == [5, 384]
    assert round(float(v[0, 0]), 4) == 0.0677 and round(float(v[0, 1]), 4) == 0.0635
    np.testing.assert_allclose(v, encoder.encode(["This is an example sentence", *TEXTS]), atol=1e-5)
    # base64: little-endian float32, row-major, the same numbers
    r = api.post("/encode", json={"texts": TEXTS, "encoding": "base64"}).json()
    b = np.frombuffer(base64.b64decode(r["vectors"]), dtype="<f4").reshape(r["shape"])
    np.testing.assert_allclose(b, v[1:], atol=1e-5)
    # per-request options give what an Encoder built with them gives
    r = api.post("/encode", json={"texts": TEXTS, "pooling": "cls", "layer": -2, "normalize": False}).json()
    other = Encoder(minilm_dir, pooling="cls", layer=-2, normalize=False)
    np.testing.assert_allclose(np.array(r["vectors"]), other.encode(TEXTS), atol=1e-4)


def test_similarity_worked_example(api, encoder):
    a, b, c = "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."
    pairs = api.post("/similarity", json={"pairs": [[a, b], [a, c]]}).json()["scores"]
    query = api.post("/similarity", json={"query": a, "texts": [b, c]}).json()["scores"]
    v = encoder.encode([a, b, c])
    assert pairs == pytest.approx([float(v[0] @ v[1]), float(v[0] @ v[2])], abs=1e-5)
    assert query == pytest.approx(pairs, abs=1e-5)
    assert pairs[0] > 0.5 > pairs[1]  # the paraphrase scores high, the unrelated sentence low


def test_predict_equals_predict_file(api, runs, tmp_path):
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    for name in ("sentiment", "ner"):
        r = api.post(f"/predict/{name}", json={"texts": TEXTS})
        assert r.status_code == 200, r.text
        got, want = r.json()["predictions"], predict_file(load_task(runs[name], device="cpu"), str(inputs))
        assert len(got) == len(TEXTS)
        for g, w in zip(got, want):
            assert g.keys() == w.keys()
            for key in g:
                assert g[key] == (pytest.approx(w[key], abs=1e-5) if key == "probs" else w[key]), key
    ner = api.post("/predict/ner", json={"texts": TEXTS}).json()["predictions"]
    assert all(len(p["tags"]) == len(t.split()) for p, t in zip(ner, TEXTS))
    pair = api.post("/predict/sentiment", json={"inputs": [{"text": "good", "text_b": "fine"}]})
    assert pair.status_code == 200 and pair.json()["predictions"][0]["text_b"] == "fine"


@pytest.mark.parametrize(
    "path, body, status, says",
    [
        ("/encode", "{not json", 422, "not valid JSON"),
        ("/encode", "[1, 2]", 422, "must be a JSON object"),
        ("/encode", {"texts": "one string"}, 422, '"texts": ["a sentence"'),
        ("/encode", {"texts": [1, 2]}, 422, "texts.0"),
        ("/encode", {"text": ["a"]}, 422, "unknown field `text`"),
        ("/encode", {"texts": []}, 400, "at least one text"),
        ("/encode", {"texts": ["a"] * 5}, 413, "at most 4"),
        ("/encode", {"texts": ["x" * 51]}, 413, "limit is 50"),
        ("/encode", {"texts": ["  "]}, 400, "texts[0] is empty"),
        ("/encode", {"texts": ["a"], "pooling": "sum"}, 422, "pooling"),
        ("/encode", {"texts": ["a"], "encoding": "hex"}, 422, "base64"),
        ("/similarity", {"pairs": [["a"]]}, 422, "pairs"),
        ("/similarity", {"texts": ["a"]}, 422, "either `pairs` or `query`"),
        ("/predict/nope", {"texts": ["a"]}, 404, "loaded tasks: none"),
    ],
)
def test_bad_requests_get_4xx_saying_what_to_send(stub, path, body, status, says):
    if isinstance(body, str):
        r = stub.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = stub.post(path, json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]


def test_qa_predict_equals_predict_file(tiny_dir, squad11_dir, tmp_path):
    data = json.loads((squad11_dir / "dev.json").read_text(encoding="utf-8"))
    paragraphs = data["data"][0]["paragraphs"][:2]
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    assert (
        cli(
            [
                "finetune",
                "--task",
                "qa",
                "--model",
                str(tiny_dir),
                "--train",
                str(small),
                "--dev",
                str(small),
                "--output",
                str(tmp_path / "qa"),
                "--train.epochs=1",
                "--max-length=64",
                "--qa.doc-stride=32",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    inputs = [
        {"id": f"q{i}", "question": qa["question"], "context": p["context"]}
        for i, (p, qa) in enumerate((p, qa) for p in paragraphs for qa in p["qas"][:2])
    ]
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(i) + "\n" for i in inputs))
    want = predict_file(load_task(tmp_path / "qa", device="cpu"), str(questions))
    app = create_app(None, {"squad": PredictEngine(load_task(tmp_path / "qa", device="cpu"))})
    with TestClient(app) as client:
        got = client.post("/predict/squad", json={"inputs": inputs}).json()["predictions"]
        assert got == want and all(i["context"][g["start"] : g["end"]] == g["answer"] for i, g in zip(inputs, got))
        r = client.post("/predict/squad", json={"texts": ["a"]})
        assert r.status_code == 422 and '"question"' in r.json()["error"]


def test_unknown_task_names_the_loaded_ones(api):
    r = api.post("/predict/sentimnt", json={"texts": ["a"]})
    assert r.status_code == 404 and "sentiment, ner" in r.json()["error"]
    r = api.post("/predict/ner", json={"texts": ["a"], "inputs": [{"text": "a"}]})
    assert r.status_code == 422 and "either `texts` or `inputs`" in r.json()["error"]
    r = api.post("/encode", json={"texts": ["a"], "layer": 7})
    assert r.status_code == 422 and "layer 7 does not exist: send 0 (embeddings) to 6" in r.json()["error"]
    r = api.post("/encode", json={"texts": ["a"], "pooling": "pooler", "layer": -2})
    assert r.status_code == 422 and "layer -1" in r.json()["error"]


def test_model_failure_is_a_500_and_the_server_carries_on(stub):
    r = stub.post("/encode", json={"texts": ["boom"]})
    assert r.status_code == 500 and "boom in the model" in r.json()["error"]
    assert stub.get("/health").json()["status"] == "ok"
    assert stub.post("/encode", json={"texts": ["fine"]}).json()["vectors"] == [[4.0, 1.0, 0.0]]
    metrics = stub.get("/metrics").text
    assert 'bertkit_requests_total{endpoint="/encode",status="500"} 1' in metrics
    assert 'bertkit_requests_total{endpoint="/encode",status="200"} 1' in metrics


def _metric(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_concurrent_requests_are_batched(encoder):
    app = create_app(encoder, {}, Limits(max_batch=64, max_wait_ms=100))
    with serving(app) as url, Client(url) as client, ThreadPoolExecutor(20) as pool:
        vectors = list(pool.map(lambda t: client.encode([t]), [f"sentence number {i}" for i in range(20)]))
        metrics = client.metrics()
    assert all(v.shape == (1, 384) for v in vectors)
    batches, items = _metric(metrics, "bertkit_batch_size_count"), _metric(metrics, "bertkit_batch_size_sum")
    singles = _metric(metrics, 'bertkit_batch_size_bucket{le="1"}')
    assert items == 20 and batches < 20 and batches - singles >= 1  # some batch held several requests
    assert _metric(metrics, "bertkit_queue_depth") == 0
    np.testing.assert_allclose(vectors[3][0], encoder.encode(["sentence number 3"])[0], atol=1e-5)


def test_full_queue_answers_503_with_retry_after_and_the_client_retries():
    app = create_app(None, {}, Limits(max_batch=1, max_wait_ms=0, max_queue=2), encode_engine=StubEngine(0.3))
    with serving(app) as url:
        with ThreadPoolExecutor(8) as pool:
            responses = list(
                pool.map(lambda i: httpx.post(f"{url}/encode", json={"texts": [f"t{i}"]}, timeout=30), range(8))
            )
        codes = sorted(r.status_code for r in responses)
        assert 503 in codes and 200 in codes, codes
        busy = next(r for r in responses if r.status_code == 503)
        assert busy.headers["Retry-After"] == "1" and "busy" in busy.json()["error"]
        with Client(url, retries=10) as client, ThreadPoolExecutor(4) as pool:  # retries ride out the load
            out = list(pool.map(lambda i: client.encode(["abc"]), range(4)))
        assert all(v.tolist() == [[3.0, 1.0, 0.0]] for v in out)
        with Client(url, retries=0) as client:
            assert client.health()["status"] == "ok"


def test_client_round_trip_and_errors(encoder, runs, tmp_path):
    predictors = {"sentiment": PredictEngine(load_task(runs["sentiment"], device="cpu"))}
    with serving(create_app(encoder, predictors)) as url, Client(url) as client:
        v = client.encode(TEXTS)
        assert v.dtype == np.float32 and v.shape == (4, 384)
        np.testing.assert_array_equal(
            v, np.array(httpx.post(f"{url}/encode", json={"texts": TEXTS}).json()["vectors"], dtype=np.float32)
        )
        assert client.similarity(query=TEXTS[0], texts=TEXTS[:2])[0] == pytest.approx(1.0, abs=1e-5)
        assert client.similarity(pairs=[(TEXTS[0], TEXTS[0])]) == pytest.approx([1.0], abs=1e-5)
        preds = client.predict("sentiment", TEXTS[:2])
        assert [p["text"] for p in preds] == TEXTS[:2] and all(p["label"] in ("negative", "positive") for p in preds)
        assert client.health()["tasks"] == {"sentiment": "classify"}
        with pytest.raises(BertkitError, match="404: no task `ner` is loaded; loaded tasks: sentiment"):
            client.predict("ner", ["a"])
        # `bertkit encode --server URL` writes what the local encoder writes, in requests of --batch-size texts
        source = tmp_path / "texts.txt"
        source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
        assert (
            cli(
                [
                    "encode",
                    "--server",
                    url,
                    "--input",
                    str(source),
                    "--output",
                    str(tmp_path / "v.npy"),
                    "--batch-size",
                    "3",
                ]
            )
            == 0
        )
        np.testing.assert_allclose(np.load(tmp_path / "v.npy"), encoder.encode(TEXTS), atol=1e-5)
        assert cli(["encode", "--input", str(source), "--output", str(tmp_path / "w.npy")]) == 2  # no --model
    with pytest.raises(BertkitError, match="is `bertkit serve` running"):
        Client(url, timeout=2).health()


def test_serve_cli_options():
    from bertkit.cli.serve import _join_repeated, parse_tasks

    assert _join_repeated(["--task", "a=x", "--port", "1", "--task=b=y"], "--task") == [
        "--port",
        "1",
        "--task",
        "a=x,b=y",
    ]
    assert parse_tasks(["a=x", "b=y", "c=nsp:z"]) == {"a": ("x", None), "b": ("y", None), "c": ("z", "nsp")}
    with pytest.raises(BertkitError, match="write NAME=DIR"):
        parse_tasks(["runs/mr"])
    assert cli(["serve"]) == 2  # nothing to serve: the error says to pass --model or --task
    assert cli(["serve", "--backend", "onnx"]) == 2


def test_a_client_that_disconnects_while_queued_costs_no_model_work():
    seen = []

    class Recording(StubEngine):
        def __call__(self, items):
            seen.extend(text for text, *_ in items)
            return super().__call__(items)

    app = create_app(None, {}, Limits(max_wait_ms=0), encode_engine=Recording(0.6))
    with serving(app) as url, ThreadPoolExecutor(1) as pool:
        busy = pool.submit(httpx.post, f"{url}/encode", json={"texts": ["first"]}, timeout=30)
        time.sleep(0.2)  # `first` is inside the model; the next request queues behind it
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/encode", json={"texts": ["abandoned"]}, timeout=0.2)
        assert busy.result().status_code == 200
        time.sleep(0.5)
        assert httpx.post(f"{url}/encode", json={"texts": ["after"]}, timeout=30).status_code == 200
        assert seen == ["first", "after"]  # `abandoned` was dropped from the queue, never computed
        assert "bertkit_dropped_items_total 1" in httpx.get(f"{url}/metrics").text


def test_shutdown_finishes_requests_in_flight():
    app = create_app(None, {}, Limits(max_wait_ms=0), encode_engine=StubEngine(0.5))
    with ThreadPoolExecutor(1) as pool:
        with serving(app) as url:
            pending = pool.submit(httpx.post, f"{url}/encode", json={"texts": ["abcd"]}, timeout=30)
            time.sleep(0.2)  # the request is inside the model when the server is told to stop
        assert not pending.done() or pending.result().status_code == 200
        assert pending.result().json()["vectors"] == [[4.0, 1.0, 0.0]]


def test_serve_builds_the_app_from_cli_options(minilm_dir, runs):
    from bertkit.cli.serve import ServeConfig, build_app

    cfg = ServeConfig(model=str(minilm_dir), task=[f"sentiment={runs['sentiment']}"], max_texts=2)
    with TestClient(build_app(cfg)) as client:
        assert client.get("/health").json()["encoder"] == {
            "name": "minilm",
            "pooling": "mean",
            "layer": -1,
            "layer_combine": "concat",
            "normalize": True,
            "dim": 384,
        }
        assert client.post("/encode", json={"texts": ["a", "b", "c"]}).status_code == 413
        assert "/predict/{task}" in client.get("/openapi.json").json()["paths"]
        assert client.get("/docs").status_code == 200


# ---- the web page, in a real (headless) Chromium ----


def _chromium() -> tuple[str, str] | str:
    """(browser, driver) paths, installing Debian's chromium + chromium-driver if needed; or why not."""
    import os
    import shutil
    import subprocess

    def found():
        browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
        driver = shutil.which("chromedriver")
        return (browser, driver) if browser and driver else None

    if found():
        return found()
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return (
            "Chromium is not installed and cannot be (needs root and apt-get): apt-get install chromium chromium-driver"
        )
    install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (install, ["apt-get", "update", "-q"], install):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if cmd is install and done.returncode == 0:
            break
    return found() or f"apt-get could not install chromium: {done.stderr.strip()[-300:]}"


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("selenium", reason="selenium is a test extra: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = _chromium()
    if isinstance(paths, str):
        pytest.skip(paths)
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    yield driver
    driver.quit()


class NamesEngine:
    """A NER stand-in with known answers: every capitalised word is a `person`, so the test knows the spans."""

    task = NerTask  # what the server reads of a task: its name and input fields

    def examples(self, inputs):
        return inputs

    def __call__(self, examples):
        return [
            {
                "entities": [
                    {"type": "person", "text": m.group(), "start": m.start(), "end": m.end()}
                    for m in re.finditer(r"\b[A-Z]\w+", e["text"])
                ]
            }
            for e in examples
        ]


def test_web_page_in_headless_chromium(browser, encoder, runs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    predictors = {"sentiment": PredictEngine(load_task(runs["sentiment"], device="cpu")), "people": NamesEngine()}
    text = "Anna 😀 & Bo <b>loved</b> the café scenes in Paris"  # an emoji: one code point, two UTF-16 units
    candidates = [
        "The stock market fell sharply today",
        "I adored this film and its settings",
        "How do I reset my password?",
    ]
    with serving(create_app(encoder, predictors)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
        assert "tasks: sentiment (classify), people (ner)" in browser.find_element(By.ID, "status").text

        browser.find_element(By.ID, "run").click()  # nothing typed yet
        wait.until(lambda d: d.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == "Type a text first."

        # ChromeDriver types only characters of the Basic Multilingual Plane (since about version 150 it
        # refuses the rest), so the text up to the emoji is typed and the rest put in as a paste would.
        box = browser.find_element(By.ID, "text")
        box.send_keys(text[: text.index("😀")])
        browser.execute_script(
            "arguments[0].value += arguments[1];arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
            box,
            text[text.index("😀") :],
        )
        assert box.get_attribute("value") == text
        browser.find_element(By.ID, "candidates").send_keys("\n".join(candidates))
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        assert browser.find_element(By.ID, "error").text == ""

        expected = httpx.post(f"{url}/predict/sentiment", json={"texts": [text]}).json()["predictions"][0]
        sentiment = browser.find_element(By.CSS_SELECTOR, 'section[data-task="sentiment"]')
        assert sentiment.find_element(By.CLASS_NAME, "label").text == expected["label"]
        bars = {
            b.get_attribute("data-label"): float(b.get_attribute("data-probability"))
            for b in sentiment.find_elements(By.CLASS_NAME, "bar")
        }
        assert bars == pytest.approx(expected["probabilities"])

        marks = browser.find_elements(By.CSS_SELECTOR, 'section[data-task="people"] mark')
        assert [
            (
                m.get_attribute("data-type"),
                int(m.get_attribute("data-start")),
                m.find_element(By.CLASS_NAME, "entity").text,
            )
            for m in marks
        ] == [("person", 0, "Anna"), ("person", 9, "Bo"), ("person", 44, "Paris")]
        shown = browser.find_element(By.CSS_SELECTOR, 'section[data-task="people"] .ner-text')
        assert "<b>loved</b>" in shown.text  # the user's text is shown as text, never as HTML

        ranked = [li.text.split(" ", 1)[1] for li in browser.find_elements(By.CSS_SELECTOR, "ol#similar li")]
        scores = httpx.post(f"{url}/similarity", json={"query": text, "texts": candidates}).json()["scores"]
        assert ranked == [c for _, c in sorted(zip(scores, candidates), reverse=True)]
        assert ranked[0] == "I adored this film and its settings"

        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


class UpperEngine:
    """A seq2seq stand-in: the target is the source in capitals."""

    class task:  # what the server reads of a task: its name and input fields
        name, inputs, optional_inputs = "seq2seq", ("source",), ()

    def examples(self, inputs):
        return inputs

    def __call__(self, examples):
        return [{"generated": e["source"].upper()} for e in examples]


def test_web_page_shows_the_pretraining_heads_and_generation(browser, minilm_dir, tmp_path):
    """fill-mask (the top tokens of each [MASK]), nsp (with the second text box) and seq2seq on the page,
    each as the API answers it."""
    import torch
    from helpers import tiny_config
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from bertkit.checkpoint import save_model
    from bertkit.model import BertForPreTraining
    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(minilm_dir)
    torch.manual_seed(0)
    pretrained = save_model(BertForPreTraining(tiny_config(tokenizer.vocab_size)), tmp_path / "pre", tokenizer)
    predictors = {
        "fill": PredictEngine(load_task(pretrained, device="cpu", task="fill-mask")),
        "next": PredictEngine(load_task(pretrained, device="cpu", task="nsp")),
        "upper": UpperEngine(),
    }
    text = "paris is the [MASK] of france."
    with serving(create_app(None, predictors)) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 30)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
        assert browser.find_element(By.ID, "second-box").is_displayed()
        browser.find_element(By.ID, "text").send_keys(text)
        browser.find_element(By.ID, "text-b").send_keys("it is a large city.")
        browser.find_element(By.ID, "run").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        assert browser.find_element(By.ID, "error").text == ""

        expected = httpx.post(f"{url}/predict/fill", json={"texts": [text]}).json()["predictions"][0]
        fill = browser.find_element(By.CSS_SELECTOR, 'section[data-task="fill"]')
        assert fill.find_element(By.CLASS_NAME, "filled").text == expected["filled"]
        shown = [li.get_attribute("data-token") for li in fill.find_elements(By.CSS_SELECTOR, "ol.mask li")]
        assert shown == [c["token"] for c in expected["masks"][0]["predictions"]]

        pair = {"inputs": [{"text": text, "text_b": "it is a large city."}]}
        nsp = httpx.post(f"{url}/predict/next", json=pair).json()["predictions"][0]
        section = browser.find_element(By.CSS_SELECTOR, 'section[data-task="next"]')
        assert section.find_element(By.CLASS_NAME, "label").text == nsp["label"]
        generated = browser.find_element(By.CSS_SELECTOR, 'section[data-task="upper"] .generated')
        assert generated.text == text.upper()
