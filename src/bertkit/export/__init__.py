"""`bertkit export`: a model directory -> an ONNX model directory, checked against PyTorch.

The output is itself a model directory (config.json, vocab.txt, task.json, pooling files) with
model.onnx, optionally model.int8.onnx, and export.json holding the parity numbers (and the int8
accuracy gate's before/after metrics), so `Encoder(..., backend="onnx")` and `load_onnx` read it.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bertkit.checkpoint import atomic_write_text, load_config, load_model
from bertkit.errors import BertkitError
from bertkit.export.onnx import OnnxModel, export_onnx, parity
from bertkit.export.quantize import check_drop, quantize_int8
from bertkit.model import BertModel
from bertkit.outputs import atomic_path
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger("bertkit")

FORMATS = ("onnx",)
QUANTIZE = ("int8",)
COPIED = ("config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
          "sentence_bert_config.json", "task.json", "1_Pooling")

# Varied sentences for the parity check when the `mr` data set is not fetched.
BUILT_IN = [
    "This is an example sentence.",
    "Each sentence is converted.",
    "The gorgeously elaborate continuation of ''The Lord of the Rings'' trilogy is so huge.",
    "Effective but too tepid biopic.",
    "Café déjà vu, naïve coöperation — 東京 and 北京!",
    "Where was the first Olympic Games held, and in which year?",
    "no.",
    "A 12.5% rise in Q3 revenue (to $4,200,000) surprised analysts at 9:30 a.m. on 2024-03-01.",
    "I've never seen anything like it; it's dull, overlong and, frankly, a waste of two hours.",
    "URLs like https://example.com/a?b=c and e-mails like someone@example.org get split into pieces.",
]


def sample_texts(n: int = 32) -> list[str]:
    """Real sentences: the first `n` of the fetched `mr` dev set, else the built-in list."""
    from bertkit.data.readers import read_texts
    from bertkit.fetch import cached_path

    mr = cached_path("mr")
    if mr is not None and (mr / "dev.tsv").is_file():
        return read_texts(mr / "dev.tsv")[:n]
    return BUILT_IN


def sample_batches(tokenizer: BertTokenizer, texts: list[str], max_length: int,
                   batch_size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    """Padded batches of `texts` in input order, plus one unpadded batch (all cut to 8 tokens)."""
    ids = [e.ids for e in tokenizer.encode_batch(texts, max_length=max_length)]
    batches = [_pad(ids[i: i + batch_size], tokenizer.pad_id) for i in range(0, len(ids), batch_size)]
    batches.append(_pad([s[:7] + [tokenizer.sep_id] for s in ids[:3]], tokenizer.pad_id))
    return batches


def _pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    return ids, mask, torch.zeros_like(ids)


def _load_torch(model_dir: Path):
    """(task or None, model in eval mode on the CPU, tokenizer, max_length)."""
    from bertkit.checkpoint import read_state_dict

    if not (model_dir / "config.json").is_file() and (model_dir / "metrics.json").is_file():
        raise BertkitError(f"{model_dir} looks like a multi-task run: export each task's folder "
                           f"(e.g. {model_dir}/NAME) on its own")
    read_state_dict(model_dir)  # a clear error when there are no weights
    tokenizer = BertTokenizer.from_dir(model_dir)
    if (model_dir / "task.json").is_file():
        from bertkit.finetune import load_finetuned

        task, model, tokenizer, max_length = load_finetuned(model_dir, "cpu")
        return task, model, tokenizer, max_length
    model = load_model(model_dir, BertModel)
    return None, model, tokenizer, min(128, model.config.max_position_embeddings)


def export_dir(model: str | Path, output: str | Path, fmt: str = "onnx", quantize: str | None = None,
               dev: str | None = None, force: bool = False, max_drop: float = 1.0) -> dict:
    """Export, self-check and optionally quantise; returns (and writes as export.json) the report."""
    from bertkit.fetch import resolve_model

    if fmt not in FORMATS:
        raise BertkitError(f"unknown export format `{fmt}`: bertkit exports {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise BertkitError(f"unknown quantisation `{quantize}`: use --quantize int8, or omit it for fp32")
    model_dir = resolve_model(str(model))
    out = Path(output)
    if out.resolve() == model_dir.resolve():
        raise BertkitError(f"--output {out} is the model directory itself: choose a new directory")
    if dev is not None and not (model_dir / "task.json").is_file():
        raise BertkitError(f"--dev needs a fine-tuned model (with task.json); {model_dir} is a plain "
                           "encoder: drop --dev")
    task, torch_model, tokenizer, max_length = _load_torch(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = model_dir / name
        if src.is_dir():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, out / name)
    crf = getattr(torch_model, "crf", None)
    if crf is not None:  # decoding needs the transition scores; they are not part of the graph
        save_file({k: v.contiguous() for k, v in crf.state_dict().items()}, str(out / "crf.safetensors"))

    export_onnx(torch_model, out / "model.onnx", tokenizer.pad_id)
    batches = sample_batches(tokenizer, sample_texts(), max_length)
    report = {"format": fmt, "source": str(model_dir), "task": task.name if task else None,
              "fp32": parity(torch_model, OnnxModel(out / "model.onnx", spin=False), batches)}
    log.info("model.onnx vs PyTorch: max abs diff %.2e, worst cosine %.6f",
             report["fp32"]["max_abs_diff"], report["fp32"]["worst_cosine"])
    if quantize == "int8":
        int8_path = out / "model.int8.onnx"
        with atomic_path(int8_path) as tmp:  # kept only when it passes the gate
            quantize_int8(out / "model.onnx", tmp)
            report["int8"] = parity(torch_model, OnnxModel(tmp, spin=False), batches)
            log.info("model.int8.onnx vs PyTorch: max abs diff %.2e, worst cosine %.6f",
                     report["int8"]["max_abs_diff"], report["int8"]["worst_cosine"])
            if dev is not None:
                report["gate"] = _gate(task, torch_model, OnnxModel(tmp, spin=False), tokenizer, max_length, dev,
                                       force, max_drop)
    atomic_write_text(out / "export.json", json.dumps(report, indent=2) + "\n")
    return report


def dev_metric(task, model, tokenizer, max_length: int, dev: str) -> float:
    """The task's main metric of `model` (torch or OnnxModel) on the dev file."""
    from bertkit.fetch import resolve_data
    from bertkit.train.loop import predict

    path = resolve_data(dev, "dev")
    examples = task.read(str(path))
    task.check(examples, str(path))
    features = task.featurize(examples, tokenizer, max_length)
    preds = predict(model, task, features, examples, 64, tokenizer.pad_id, "cpu")
    return float(task.metrics(preds, examples)[task.main_metric])


def _gate(task, torch_model, int8_model, tokenizer, max_length, dev, force, max_drop) -> dict:
    int8_model.crf = getattr(torch_model, "crf", None)
    before = dev_metric(task, torch_model, tokenizer, max_length, dev)
    after = dev_metric(task, int8_model, tokenizer, max_length, dev)
    log.info("dev %s: %.4f (PyTorch fp32) -> %.4f (int8)", task.main_metric, before, after)
    return check_drop(task.name, task.main_metric, before, after, max_drop, force)


def load_onnx(model_dir: str | Path, int8: bool = False) -> OnnxModel:
    """The exported graph of a directory written by `export_dir`, with config (and CRF) attached."""
    d = Path(model_dir)
    name = "model.int8.onnx" if int8 else "model.onnx"
    if not (d / name).is_file():
        flag = " --quantize int8" if int8 else ""
        raise BertkitError(f"{d} has no {name}: export it with "
                           f"`bertkit export --model MODEL --format onnx{flag} --output {d}`")
    model = OnnxModel(d / name, load_config(d))
    if (d / "crf.safetensors").is_file():  # a NER head with a CRF: decoding reads its transition scores
        from bertkit.tasks import get_task
        from bertkit.tasks.crf import CRF

        state = json.loads((d / "task.json").read_text())
        task = get_task("ner", labels=state["labels"], head="crf", scheme=state.get("scheme"))
        model.crf = CRF(task.labels, task.scheme)
        model.crf.load_state_dict(load_file(str(d / "crf.safetensors")))
    return model


__all__ = ["OnnxModel", "export_dir", "export_onnx", "load_onnx", "parity", "quantize_int8"]
