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

import numpy as np
import torch
from safetensors.torch import save_file

from bertkit import sentence_files
from bertkit.checkpoint import atomic_write_text, read_state_dict
from bertkit.data.collate import pad
from bertkit.data.samples import sample_texts
from bertkit.errors import BertkitError
from bertkit.export.onnx import export_onnx, flat_outputs, output_names, parity, per_sequence
from bertkit.export.quantize import check_drop, cosine_summary, per_token_scaling, quantize_int8, search_int8
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
    calibration: list[str] | None = None,
    min_cosine: float = 0.99,
) -> dict:
    """Export, self-check and optionally quantise; returns (and writes as export.json) the report.

    int8: `calibration` texts (default: 1,000 MR dev sentences, `sample_texts`) are split in two; the search
    keeps MatMuls in fp32 until the worst cosine to fp32 on the first half reaches `min_cosine`, and the
    export is refused (unless `force`) when the second, held-out half's worst case misses it.
    """
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
        with atomic_path(int8_path) as tmp:  # kept only when it passes the gates
            report["int8"] = _int8(
                torch_model, out / "model.onnx", tmp, tokenizer, max_length, calibration, min_cosine, force
            )
            report["int8"].update(parity(torch_model, OnnxModel(tmp, spin=False), batches))
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


def example_vectors(model, batches: list[tuple[torch.Tensor, ...]], names: tuple[str, ...], whole: set[str]) -> list:
    """One float64 vector per example: a plain encoder's mean-pooled last layer (its sentence vector);
    for a task graph, all its outputs at the real tokens, flattened (as `parity` compares them)."""
    rows = []
    for ids, mask, types in batches:
        outs = flat_outputs(model(ids, mask, types))
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            if names[0] == "last_hidden_state":
                rows.append(outs[0][row][real].double().mean(0).numpy())
                continue
            parts = [(t[row] if n in whole else t[row][real]).flatten() for n, t in zip(names, outs)]
            rows.append(torch.cat(parts).double().numpy())
    return rows


def _cosines(a: list, b: list) -> np.ndarray:
    return np.array([float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)) for x, y in zip(a, b)])


def _int8(torch_model, fp32: Path, dst: Path, tokenizer, max_length, calibration, min_cosine, force) -> dict:
    """Plain int8 if it meets the bound on half the calibration text, else per-token scaling and the
    fp32-fallback search on that half; then the held-out gate on the other half."""
    texts = [t for t in (calibration or sample_texts(1000)) if t.strip()]
    if len(texts) < 2:
        raise BertkitError("--calibration needs at least 2 non-empty texts (a few hundred real sentences is typical)")
    names, whole = output_names(torch_model), per_sequence(torch_model)
    halves = [sorted(texts[i::2], key=len) for i in (0, 1)]  # sorted: batches of like lengths, little padding
    batches = [sample_batches(tokenizer, half, max_length, 16)[:-1] for half in halves]
    reference = [example_vectors(OnnxModel(fp32, spin=False), b, names, whole) for b in batches]

    def cosines(path: Path, half: int = 0) -> np.ndarray:
        return _cosines(example_vectors(OnnxModel(path, spin=False), batches[half], names, whole), reference[half])

    # The search aims past the bound (half the allowed loss kept back): the worst held-out text is
    # usually a little worse than the worst text searched.
    target = 1 - (1 - min_cosine) / 2 if min_cosine > 0 else 0.0
    # Plain dynamic int8 first: the fastest graph (per-token scaling costs 15-20% of its speed), kept
    # when it meets the bound already.
    quantize_int8(fp32, dst)
    calibration_cos = cosines(dst)
    plain = round(float(calibration_cos.min()), 5)
    record: dict = {"per_token": bool(calibration_cos.min() < target), "plain_int8_worst": plain}
    if record["per_token"]:
        scaled = dst.with_name(dst.name + ".scaled.onnx")
        try:
            per_token_scaling(fp32, scaled)
            record.update(search_int8(scaled, dst, cosines, target))
        finally:
            scaled.unlink(missing_ok=True)
        calibration_cos = cosines(dst)  # the graph the search ended with
    else:
        record.update(search_target=round(target, 6), all_int8_worst=plain, kept_fp32=[])
    record["min_cosine"] = min_cosine
    held_out = cosines(dst, 1)
    record["calibration"], record["held_out"] = cosine_summary(calibration_cos), cosine_summary(held_out)
    held = record["held_out"]
    log.info(
        "model.int8.onnx, cosine to fp32 on %d held-out calibration texts: mean %.4f, p1 %.4f, worst %.4f "
        "(per-token scaling: %s; %d MatMul(s) kept in fp32)",
        held["examples"],
        held["mean"],
        held["p1"],
        held["worst"],
        "yes" if record["per_token"] else "no, plain int8 meets the bound",
        len(record["kept_fp32"]),
    )
    if held_out.min() < min_cosine:
        message = (
            f"int8: the worst held-out calibration text keeps cosine {held_out.min():.6f} to fp32, below "
            f"--min-cosine {min_cosine:g} (the search met it on the other half). Give more calibration "
            "text like the model's real input (--calibration), lower --min-cosine, or pass --force"
        )
        if not force:
            raise BertkitError(message)
        log.warning("%s; --force given: writing it anyway", message)
    return record


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
