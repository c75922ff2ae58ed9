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
from typing import Any

import torch
from safetensors.torch import save_file

from bertkit import sentence_files
from bertkit.checkpoint import atomic_write_text, read_state_dict
from bertkit.data.collate import pad
from bertkit.data.samples import sample_texts
from bertkit.errors import BertkitError
from bertkit.export.onnx import export_onnx, parity
from bertkit.export.quantize import check_drop, quantize_int8
from bertkit.fetch import resolve_model
from bertkit.inference import Loaded, evaluate_file, load
from bertkit.model import config_of
from bertkit.onnx_model import OnnxModel, load_onnx
from bertkit.outputs import atomic_path
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger("bertkit")

FORMATS = ("onnx",)
QUANTIZE = ("int8",)
COPIED = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "task.json",
)  # and the sentence-transformers pipeline files (modules.json and the module folders it names)


# What decoding a CRF model's graph takes; in export.json ("decoding"), README.txt and the log.
CRF_DECODING = (
    "model.onnx gives each word piece's emission scores (logits [batch, tokens, labels]); this NER "
    "model's tags come from a linear-chain CRF over them, so argmax over the logits is NOT its "
    "prediction. To decode outside bertkit: take the scores at each word's first piece (a sentence's "
    "words in order), then run Viterbi with the CRF scores in crf.safetensors (crf.start [labels], "
    "crf.transitions [labels, labels] from->to, crf.end [labels]), treating the moves the tagging "
    "scheme in task.json forbids as -inf (BIO: I-X only after B-X or I-X, never first; BIOES: only "
    "I-X or E-X after B-X or I-X, I-X and E-X nowhere else, a sentence starts with B, S or O and ends "
    "with E, S or O). bertkit does this for `--backend onnx` (bertkit predict, evaluate, serve)."
)


def sample_batches(
    tokenizer: BertTokenizer, texts: list[str], max_length: int, batch_size: int = 8
) -> list[tuple[torch.Tensor, ...]]:
    """Padded batches of `texts` in input order, plus one unpadded batch (all cut to 8 tokens)."""
    ids = [e.ids for e in tokenizer.encode_batch(texts, max_length=max_length)]
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    batches.append([s[:7] + [tokenizer.sep_id] for s in ids[:3]])
    return [(*pad(b, tokenizer.pad_id), torch.zeros(len(b), max(map(len, b)), dtype=torch.long)) for b in batches]


def _load_torch(model_dir: Path):
    """(task or None, model in eval mode on the CPU, tokenizer, max_length)."""
    if not (model_dir / "config.json").is_file() and (model_dir / "metrics.json").is_file():
        raise BertkitError(
            f"{model_dir} looks like a multi-task run: export each task's folder (e.g. {model_dir}/NAME) on its own"
        )
    read_state_dict(model_dir)  # a clear error when there are no weights
    run = load(model_dir, device="cpu")
    max_length = run.max_length if run.task is not None else min(128, config_of(run.model).max_position_embeddings)
    return run.task, run.model, run.tokenizer, max_length


def export_dir(
    model: str | Path,
    output: str | Path,
    fmt: str = "onnx",
    quantize: str | None = None,
    dev: str | None = None,
    force: bool = False,
    max_drop: float = 1.0,
) -> dict:
    """Export, self-check and optionally quantise; returns (and writes as export.json) the report."""
    if fmt not in FORMATS:
        raise BertkitError(f"unknown export format `{fmt}`: bertkit exports {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise BertkitError(f"unknown quantisation `{quantize}`: use --quantize int8, or omit it for fp32")
    model_dir = resolve_model(str(model))
    out = Path(output)
    if out.resolve() == model_dir.resolve():
        raise BertkitError(f"--output {out} is the model directory itself: choose a new directory")
    if dev is not None and not (model_dir / "task.json").is_file():
        raise BertkitError(
            f"--dev needs a fine-tuned model (with task.json); {model_dir} is a plain encoder: drop --dev"
        )
    task, torch_model, tokenizer, max_length = _load_torch(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = model_dir / name
        if src.is_dir():
            shutil.copytree(src, out / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, out / name)
    sentence_files.copy_sentence_files(model_dir, out)
    crf = getattr(torch_model, "crf", None)
    if crf is not None:  # decoding needs the transition scores; they are not part of the graph
        save_file({k: v.contiguous() for k, v in crf.state_dict().items()}, str(out / "crf.safetensors"))
        atomic_write_text(out / "README.txt", CRF_DECODING + "\n")
        log.info("%s", CRF_DECODING)

    export_onnx(torch_model, out / "model.onnx", tokenizer.pad_id)
    batches = sample_batches(tokenizer, sample_texts(), max_length)
    report: dict[str, Any] = {
        "format": fmt,
        "source": str(model_dir),
        "task": task.name if task else None,
        "fp32": parity(torch_model, OnnxModel(out / "model.onnx", spin=False), batches),
    }
    if crf is not None:
        report["decoding"] = CRF_DECODING
    log.info(
        "model.onnx vs PyTorch: max abs diff %.2e, worst cosine %.6f",
        report["fp32"]["max_abs_diff"],
        report["fp32"]["worst_cosine"],
    )
    if quantize == "int8":
        int8_path = out / "model.int8.onnx"
        with atomic_path(int8_path) as tmp:  # kept only when it passes the gate
            quantize_int8(out / "model.onnx", tmp)
            report["int8"] = parity(torch_model, OnnxModel(tmp, spin=False), batches)
            log.info(
                "model.int8.onnx vs PyTorch: max abs diff %.2e, worst cosine %.6f",
                report["int8"]["max_abs_diff"],
                report["int8"]["worst_cosine"],
            )
            if dev is not None:
                report["gate"] = _gate(
                    task, torch_model, OnnxModel(tmp, spin=False), tokenizer, max_length, dev, force, max_drop
                )
    atomic_write_text(out / "export.json", json.dumps(report, indent=2) + "\n")
    return report


def dev_metric(task, model, tokenizer, max_length: int, dev: str) -> float:
    """The task's main metric of `model` (torch or OnnxModel) on the dev file."""
    run = Loaded(task, model, tokenizer, max_length, torch.device("cpu"), Path("."))
    return float(evaluate_file(run, dev, progress=False)[task.main_metric])


def _gate(task, torch_model, int8_model, tokenizer, max_length, dev, force, max_drop) -> dict:
    int8_model.crf = getattr(torch_model, "crf", None)
    before = dev_metric(task, torch_model, tokenizer, max_length, dev)
    after = dev_metric(task, int8_model, tokenizer, max_length, dev)
    log.info("dev %s: %.4f (PyTorch fp32) -> %.4f (int8)", task.main_metric, before, after)
    return check_drop(task.name, task.main_metric, before, after, max_drop, force)


__all__ = ["OnnxModel", "export_dir", "export_onnx", "load_onnx", "parity", "quantize_int8"]
