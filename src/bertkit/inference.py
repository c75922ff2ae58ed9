"""Inference: a model directory -> a runnable model, and a task's predictions and metrics on it.

The one place that knows the backends (PyTorch, or the ONNX graphs `bertkit export` writes, fp32 and
int8) and picks the device. Fine-tuning, serving, export and encoding use it; it uses none of them.

    from bertkit import inference
    run = inference.load_task("runs/mr")                    # a fine-tuned directory (task.json)
    preds = inference.predict_inputs(run, ["a gorgeous film", "a dull film"])
    metrics = inference.evaluate_file(run, "mr:test")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from bertkit.checkpoint import load_config, load_model, load_weights, read_state_dict
from bertkit.data.collate import collate, sorted_batches
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data, resolve_model
from bertkit.model import BertModel
from bertkit.onnx_model import OnnxModel, load_onnx
from bertkit.tasks import Task, get_task
from bertkit.tokenizer import BertTokenizer

BACKENDS = ("torch", "onnx", "onnx-int8")  # onnx: model.onnx of an exported directory; onnx-int8: model.int8.onnx


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """`cpu`, `cuda`, `cuda:1`; None: cuda when available, else the CPU."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise BertkitError(f"unknown backend `{backend}`: use one of {', '.join(BACKENDS)}")


@dataclass
class Loaded:
    """A runnable model: `task` is None for a plain encoder directory."""

    task: Task | None
    model: nn.Module | OnnxModel
    tokenizer: BertTokenizer
    max_length: int
    device: torch.device
    directory: Path

    @property
    def fine_tuned(self) -> Task:
        """The task; an error for a plain encoder directory."""
        if self.task is None:
            raise BertkitError(
                f"{self.directory} has no task.json: it is not a fine-tuned model; fine-tune one with "
                "`bertkit finetune --task classify --model minilm --train ... --output DIR`"
            )
        return self.task


def load_encoder(
    model_dir: str | Path, backend: str = "torch", device: str | None = None
) -> tuple[nn.Module | OnnxModel, torch.device]:
    """The base model of a directory (eval mode) and the device it runs on."""
    check_backend(backend)
    d = resolve_model(str(model_dir))
    if backend == "torch":
        dev = resolve_device(device)
        return load_model(d, BertModel).to(dev), dev
    return load_onnx(d, int8=backend == "onnx-int8").to(device or "cpu"), torch.device("cpu")


def load(model_dir: str | Path, backend: str = "torch", device: str | None = None, task: str | None = None) -> Loaded:
    """A fine-tuned directory (task.json: the task, its head and labels) or, without task.json, the
    plain encoder; `backend` onnx / onnx-int8 runs the graph `bertkit export` wrote (CPU only).

    `task`: a task whose head the directory holds without fine-tuning (fill-mask and nsp: the
    pretraining heads `bertkit pretrain` saves), for a directory without task.json."""
    check_backend(backend)
    d = resolve_model(str(model_dir))
    tokenizer = BertTokenizer.from_dir(d)
    task_file = d / "task.json"
    if task_file.is_file():
        state = json.loads(task_file.read_text(encoding="utf-8"))
        if task is not None and task != state["task"]:
            raise BertkitError(
                f"{d} is fine-tuned for task `{state['task']}` (task.json), not `{task}`: "
                f"drop --task, or pass --task {state['task']}"
            )
    elif task is not None:
        state = {"task": task, "max_length": min(512, load_config(d).max_position_embeddings)}
    else:
        model, dev = load_encoder(d, backend, device)
        return Loaded(None, model, tokenizer, min(512, load_config(d).max_position_embeddings), dev, d)
    chosen = get_task(state["task"], **{k: v for k, v in state.items() if k not in ("task", "max_length")})
    max_length = state.get("max_length", 128)
    if backend != "torch":
        return Loaded(
            chosen,
            load_onnx(d, int8=backend == "onnx-int8").to(device or "cpu"),
            tokenizer,
            max_length,
            torch.device("cpu"),
            d,
        )
    head = chosen.build_model(load_config(d))
    report = load_weights(head, read_state_dict(d), source=str(d))
    if report.newly_initialised and not task_file.is_file():
        raise BertkitError(
            f"{d} has no weights for the head of task `{chosen.name}` ({', '.join(report.newly_initialised[:2])}): "
            "use a model directory saved with that head, e.g. by `bertkit pretrain` (masked LM and NSP); "
            "an encoder-only model such as MiniLM has none"
        )
    if report.newly_initialised:
        raise BertkitError(
            f"{d} lacks the task head ({', '.join(report.newly_initialised[:2])}): "
            "the directory is incomplete; fine-tune again"
        )
    dev = resolve_device(device)
    return Loaded(chosen, head.to(dev).eval(), tokenizer, max_length, dev, d)


def load_task(
    model_dir: str | Path, backend: str = "torch", device: str | None = None, task: str | None = None
) -> Loaded:
    """`load`, for a directory that must hold a fine-tuned task (or the head of `task`)."""
    run = load(model_dir, backend, device, task)
    run.fine_tuned  # noqa: B018 (an error now, for a plain encoder directory)
    return run


@torch.no_grad()
def predict(
    model: nn.Module | OnnxModel,
    task,
    features: list[dict],
    examples: list[dict],
    batch_size: int = 64,
    pad_id: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[dict]:
    """The task's predictions for `examples` (features run longest first, results put back in order)."""
    was_training = model.training
    model.eval()
    groups = [f["task"] for f in features] if features and "task" in features[0] else None
    batches = sorted_batches([len(f["input_ids"]) for f in features], batch_size, groups)
    order, outputs = [], []
    # disable=None: a bar only on a terminal, never in logs and captured output
    for idx in tqdm(batches, desc="predict", unit="batch", disable=None if progress else True, leave=False):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id).items()}
        outputs.append(task.forward(model, batch))
        order += idx
    model.train(was_training)
    return task.decode(outputs, [features[i] for i in order], examples)


def evaluate(
    model, task, features, examples, batch_size=64, pad_id=0, device="cpu", progress: bool = False
) -> dict[str, float]:
    return task.metrics(predict(model, task, features, examples, batch_size, pad_id, device, progress), examples)


def run_examples(run: Loaded, examples: list[dict], batch_size: int = 64, progress: bool = False) -> list[dict]:
    """Featurize `examples` as the task was trained and predict them."""
    task = run.fine_tuned
    features = task.featurize(examples, run.tokenizer, run.max_length)
    return predict(run.model, task, features, examples, batch_size, run.tokenizer.pad_id, run.device, progress)


def predict_inputs(run: Loaded, inputs: list, batch_size: int = 64) -> list[dict]:
    """Predictions for inputs given in code: texts, (text, text_b) pairs, or dicts of the task's fields
    (QA: {"question": ..., "context": ...})."""
    records = [
        i if isinstance(i, dict) else {"text": i[0], "text_b": i[1]} if isinstance(i, (tuple, list)) else {"text": i}
        for i in inputs
    ]
    task = run.fine_tuned
    for n, record in enumerate(records):
        missing = [f for f in task.inputs if not str(record.get(f) or "").strip()]
        if missing:
            raise BertkitError(
                f"input {n} has no {', '.join(missing)}: task `{task.name}` takes inputs with "
                f"{', '.join(task.inputs + task.optional_inputs)}"
            )
    examples = [task.example(r, n) for n, r in enumerate(records)]
    return with_inputs(examples, run_examples(run, examples, batch_size))


def with_inputs(examples: list[dict], preds: list[dict]) -> list[dict]:
    """Each prediction with the input fields that identify it (id, text, text_b, question)."""
    keep = ("id", "text", "text_b", "question")
    return [{**{k: e[k] for k in keep if e.get(k) is not None}, **p} for e, p in zip(examples, preds)]


def evaluate_file(
    run: Loaded, data: str, batch_size: int = 64, split: str = "dev", progress: bool = True
) -> dict[str, float]:
    """The task's metrics on a labelled file (or a fetched name such as mr:test)."""
    path = resolve_data(data, split)
    task = run.fine_tuned
    examples = task.read(str(path))
    task.check(examples, str(path))
    return _numbers(task.metrics(run_examples(run, examples, batch_size, progress), examples))


def predict_file(run: Loaded, data: str, batch_size: int = 64) -> list[dict]:
    """Predictions for a file of inputs (labels are not needed; if present they are ignored)."""
    path = resolve_data(data, "test")
    examples = run.fine_tuned.read_inputs(str(path))
    return with_inputs(examples, run_examples(run, examples, batch_size, progress=True))


def _numbers(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
