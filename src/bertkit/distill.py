"""Knowledge distillation: a fine-tuned teacher trains a smaller student on its soft outputs.

`bertkit distill --teacher DIR --student mini --train DATA [--unlabeled TEXT,...] --dev DATA --output DIR`

The teacher is any fine-tuned bertkit directory; its task (classify, regression, ner, qa) is the
student's. The student is a fresh compact BERT (tiny/mini/small/medium, Turc et al. 2019) with the
teacher's vocab, or a model directory to start from, e.g. one pretrained with `bertkit pretrain`:
"Well-Read Students Learn Better" pre-trains the student, then distils it ("pre-trained distillation").

What the student learns from, per feature (a text, or one window of a long one):
- the teacher's outputs on it, computed once before training and kept on disk (memory-mapped) in
  OUTPUT/teacher/, so every epoch reads them instead of running the teacher again: softened at
  temperature T and matched with KL divergence (times T^2, Hinton et al. 2015) for classification
  logits, per-token tag scores (a CRF teacher's emissions too) and QA start/end logits; matched with
  squared error for regression scores;
- its labels, where it has them, with the task's own loss; unlabelled transfer text (`--unlabeled`)
  is labelled by the teacher only.
loss = soft_weight * soft + (1 - soft_weight) * hard, on the one training loop (resume, seeds, torchrun).

`--task embed` distils a sentence encoder instead (sentence-transformers' "Making Monolingual Sentence
Embeddings Multilingual" recipe, in one language): the teacher is any encoder (minilm), the student
learns to reproduce its sentence vectors (squared error, after the teacher's pooling and through a
projection when the widths differ) on `--unlabeled` text, and is chosen on the cosine between its
vectors and the teacher's on `--dev` text. The student is a sentence-transformers directory.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import sentence_files
from bertkit.checkpoint import load_config, load_weights, read_state_dict, save_model
from bertkit.config import option, required
from bertkit.config import save as save_config
from bertkit.data.collate import collate, length_grouped_batches, sorted_batches
from bertkit.data.readers import read_texts
from bertkit.encode import Encoder
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_data, resolve_model
from bertkit.finetune import numeric, read_data, save_task_dir
from bertkit.inference import Loaded, load_task
from bertkit.model import PRESETS, BertConfig, BertForSequenceClassification, SelfAttention
from bertkit.onnx_model import OnnxModel
from bertkit.outputs import atomic_path, atomic_write_text, check_output_dir, content_hash, open_run
from bertkit.tasks import Task
from bertkit.tasks.embed import EmbedTask
from bertkit.train import distributed
from bertkit.train.loop import TrainConfig, Trainer, set_seed

log = logging.getLogger("bertkit")


@dataclass
class DistillConfig:
    teacher: str = required("the fine-tuned teacher: a directory written by `bertkit finetune`; its task is learned")
    task: str | None = option(
        None,
        "embed: distil a sentence encoder (the teacher: any encoder such as minilm; its vectors on --unlabeled "
        "text are the targets; --dev: held-out text); default: the fine-tuned teacher's task",
        choices=("embed",),
    )
    student: str = required(
        "tiny, mini, small or medium (a fresh compact BERT with the teacher's vocab), or a model directory "
        "to start from (e.g. pretrained with `bertkit pretrain`: pre-trained distillation)"
    )
    train: TrainConfig = field(default_factory=TrainConfig)
    unlabeled: list[str] = option(
        [], "unlabelled transfer text the teacher labels: text files (one text a line) or data names (corpus-en)"
    )
    unlabeled_examples: int | None = option(
        None, "use a seeded sample of this many unlabelled texts (default: all)", at_least=1
    )
    dev: str | None = option(None, "dev data (labelled), for the student's best checkpoint")
    output: str = required("directory for the student (an ordinary fine-tuned model directory)")
    temperature: float = option(2.0, "softmax temperature of the soft targets (1: the teacher's own)", above=0)
    soft_weight: float = option(
        0.5, "share of the loss from the teacher's soft outputs; the rest from the labels", at_least=0, at_most=1
    )
    hidden_weight: float = option(
        0.0,
        "intermediate-layer distillation (TinyBERT): weight of the squared error between each student layer's "
        "hidden states, through a learned projection, and a teacher layer's; 0: off",
        at_least=0,
    )
    attention_weight: float = option(
        0.0,
        "attention-map distillation (TinyBERT, MiniLM): weight of the KL divergence from each mapped teacher "
        "layer's attention distribution to the student layer's, averaged over heads (so head counts may "
        "differ); 0: off",
        at_least=0,
    )
    layer_map: list[int] = option(
        [], "the teacher layer (1-based) each student layer learns from (default: evenly spaced)", at_least=1
    )
    max_length: int | None = option(None, "tokens per input (default: the teacher's)", at_least=2)
    train_examples: int | None = option(None, "train on a seeded sample of this many labelled examples", at_least=1)
    teacher_cache: str | None = option(
        None,
        "where the teacher's outputs are kept (default: OUTPUT/teacher); students of the same teacher, data "
        "and seed can share one, so the teacher runs once for all of them",
    )
    resume: bool = option(False, "continue an interrupted run from OUTPUT/checkpoint")
    overwrite: bool = option(False, "replace what OUTPUT holds")
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")


def teacher_outputs(model: nn.Module | OnnxModel, features: list[dict], pad_id: int, device, batch_size: int = 64):
    """(outputs, per_token): the teacher's raw outputs per feature as float32 numpy arrays, a tuple per
    feature with one array per model output; per_token says whether they score every token ([T, L] tag
    scores, [T] QA start/end logits, cut to the feature's length) or the sequence ([C] logits)."""
    per_token = not isinstance(model, BertForSequenceClassification)
    out: list = [None] * len(features)
    model.eval()
    with torch.no_grad():
        for idx in sorted_batches([len(f["input_ids"]) for f in features], batch_size):
            batch = {k: v.to(device) for k, v in collate([features[i] for i in idx], pad_id).items()}
            raw = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            raw = raw if isinstance(raw, tuple) else (raw,)
            for row, i in enumerate(idx):
                n = len(features[i]["input_ids"])
                out[i] = tuple((t[row, :n] if per_token else t[row]).float().cpu().numpy() for t in raw)
    return out, per_token


class TeacherCache:
    """Teacher outputs for every training feature, written once to DIR as memory-mapped arrays: for
    each model output k, `out{k}.npy` [total rows, ...] where a feature's rows are
    offsets[i]:offsets[i + 1] (one row for a sequence score, one per token for token scores)."""

    def __init__(self, directory: Path):
        self.directory = directory
        meta = json.loads((directory / "teacher.json").read_text())
        self.per_token: bool = meta["per_token"]
        self.offsets = [np.load(directory / f"offsets{k}.npy") for k in range(meta["outputs"])]
        self.arrays = [np.load(directory / f"out{k}.npy", mmap_mode="r") for k in range(meta["outputs"])]

    @staticmethod
    def write(directory: Path, outputs: list, per_token: bool, fingerprint: str) -> TeacherCache:
        """Write the cache (teacher.json last: its presence means the arrays are complete)."""
        directory.mkdir(parents=True, exist_ok=True)
        for k in range(len(outputs[0])):
            parts = [o[k] if per_token else o[k][None] for o in outputs]
            offsets = np.cumsum([0] + [len(p) for p in parts]).astype(np.int64)
            with atomic_path(directory / f"out{k}.npy") as tmp:
                np.save(tmp, np.concatenate(parts).astype(np.float32))
            with atomic_path(directory / f"offsets{k}.npy") as tmp:
                np.save(tmp, offsets)
        meta = {"per_token": per_token, "outputs": len(outputs[0]), "fingerprint": fingerprint}
        with atomic_path(directory / "teacher.json") as tmp:
            tmp.write_text(json.dumps(meta))
        return TeacherCache(directory)

    @staticmethod
    def fingerprint_of(directory: Path) -> str | None:
        meta = directory / "teacher.json"
        return json.loads(meta.read_text())["fingerprint"] if meta.is_file() else None

    def rows(self, k: int, i: int) -> np.ndarray:
        return np.asarray(self.arrays[k][self.offsets[k][i] : self.offsets[k][i + 1]])

    def batch(self, k: int, indices: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Output k of the features `indices`: [B, ...] for sequence scores, or [B, width, ...] for token
        scores (zero-padded) with the mask of real rows."""
        rows = [self.rows(k, i) for i in indices]
        if not self.per_token:
            return torch.from_numpy(np.stack([r[0] for r in rows])), torch.ones(len(rows), dtype=torch.bool)
        out = np.zeros((len(rows), width, *rows[0].shape[1:]), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=bool)
        for b, r in enumerate(rows):
            out[b, : len(r)] = r
            mask[b, : len(r)] = True
        return torch.from_numpy(out), torch.from_numpy(mask)


class DistillTask(Task):
    """The teacher's task, trained on a mix of its labels and the teacher's soft outputs (see the module
    docstring). Reading, featurizing, decoding and metrics are the inner task's; a student saved from
    here is an ordinary model directory of that task.

    Batches hold labelled or unlabelled features, never both, so one forward pass gives the hard loss
    (the inner task's own, run on the whole batch) and the soft loss (from the same outputs, captured).
    With `layers` (intermediate-layer distillation, as TinyBERT), each student layer's hidden states,
    through a learned projection to the teacher's width (the student's `distill_projection`, dropped
    when the student is saved), and its attention distributions (averaged over heads) are also
    matched to a teacher layer's (`layer_map`), the teacher running alongside."""

    def __init__(
        self,
        inner: Task,
        cache: TeacherCache | None,
        temperature: float,
        soft_weight: float,
        regression: bool,
        layers: tuple[nn.Module, list[int], float, float] | None = None,
    ):
        self.inner, self.cache = inner, cache
        self.temperature, self.soft_weight, self.regression = temperature, soft_weight, regression
        # (teacher model, teacher layer per student layer, hidden-state weight, attention weight)
        self.layers = layers
        self.name, self.main_metric, self.labels = inner.name, inner.main_metric, inner.labels
        self.metric_scale = inner.metric_scale

    def featurize(self, examples, tokenizer, max_length):
        return self.inner.featurize(examples, tokenizer, max_length)

    def build_model(self, config):
        return self.inner.build_model(config)

    def forward(self, model, batch):
        return self.inner.forward(model, batch)

    def decode(self, outputs, features, examples):
        return self.inner.decode(outputs, features, examples)

    def metrics(self, predictions, examples):
        return self.inner.metrics(predictions, examples)

    def state(self) -> dict:
        return self.inner.state()

    def label_config(self) -> dict:
        return self.inner.label_config()

    def train_batches(self, features, batch_size, generator, lengths):
        """Length-grouped batches of the labelled and of the unlabelled features, shuffled together."""
        batches = []
        for flag in (1, 0):
            indices = [i for i, f in enumerate(features) if f["labelled"] == flag]
            part = length_grouped_batches([lengths[i] for i in indices], batch_size, generator)
            batches += [[indices[j] for j in b] for b in part]
        order = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in order]

    def loss(self, model, batch):
        labelled = bool(batch["labelled"].all())
        assert labelled or not batch["labelled"].any(), "train_batches keeps labelled and unlabelled apart"
        outputs: list = []
        layers: list = []
        hooks = [model.register_forward_hook(lambda _m, _i, out: outputs.append(out))]
        if self.layers is not None:
            encoder = model.bert
            hooks.append(encoder.embeddings.register_forward_hook(lambda _m, _i, out: layers.append(out)))
            hooks += [layer.register_forward_hook(lambda _m, _i, out: layers.append(out)) for layer in encoder.layers]
        try:
            if labelled and self.soft_weight < 1:
                hard = self.inner.loss(model, batch)  # runs the model once; the hook keeps its outputs
            else:
                hard = None
                model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        finally:
            for hook in hooks:
                hook.remove()
        loss = self.soft_loss(outputs[0], batch)
        if hard is not None:
            loss = self.soft_weight * loss + (1 - self.soft_weight) * hard
        if self.layers is not None:
            loss = loss + self.layer_loss(model, layers, batch)
        return loss

    def layer_loss(self, model, student_layers: list[torch.Tensor], batch) -> torch.Tensor:
        """hidden weight x the mean squared error between projected student hidden states (embeddings
        and every layer) and the mapped teacher layers', over real tokens; plus attention weight x the
        KL divergence of each student layer's head-averaged attention from its teacher layer's, over
        real queries."""
        assert self.layers is not None
        teacher, layer_map, hidden_weight, attention_weight = self.layers
        encoder = teacher.get_submodule("bert")
        with torch.no_grad():
            out = encoder(
                batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], output_hidden_states=True
            )
        real = batch["attention_mask"].bool()
        loss = student_layers[0].new_zeros(())
        if hidden_weight > 0:
            pairs = zip(student_layers, [0, *layer_map])  # embeddings to embeddings, then the layer map
            projection = model.get_submodule("distill_projection")
            losses = [F.mse_loss(projection(s)[real], out.hidden_states[t][real]) for s, t in pairs]
            loss = loss + hidden_weight * torch.stack(losses).mean()
        if attention_weight > 0:
            kls = []
            for i, t in enumerate(layer_map):  # a layer's attention is computed from its input
                mine = cast(SelfAttention, model.get_submodule(f"bert.layers.{i}.attn"))
                theirs = cast(SelfAttention, encoder.get_submodule(f"layers.{t - 1}.attn"))
                student = attention_map(mine, student_layers[i], real)
                with torch.no_grad():
                    target = attention_map(theirs, out.hidden_states[t - 1], real)
                kl = F.kl_div(student.clamp_min(1e-9).log(), target, reduction="none").sum(-1)  # [B, T]
                kls.append(kl[real].mean())
            loss = loss + attention_weight * torch.stack(kls).mean()
        return loss

    def soft_loss(self, raw, batch) -> torch.Tensor:
        assert self.cache is not None, "the teacher's outputs are computed before training"
        raw = raw if isinstance(raw, tuple) else (raw,)
        indices = batch["teacher_row"].tolist()
        total = raw[0].new_zeros(())
        for k, student in enumerate(raw):
            teacher, mask = self.cache.batch(k, indices, batch["input_ids"].shape[1])
            teacher, mask = teacher.to(student.device), mask.to(student.device)
            if self.regression:
                total = total + F.mse_loss(student.float().squeeze(-1), teacher.squeeze(-1))
                continue
            t = self.temperature
            if student.dim() == 2 and self.cache.per_token:  # QA: start (or end) is a distribution over tokens
                student = student.float().masked_fill(~mask, -1e4)
                teacher = teacher.masked_fill(~mask, -1e4)
                kl = F.kl_div(
                    F.log_softmax(student / t, -1),
                    F.log_softmax(teacher / t, -1),
                    log_target=True,
                    reduction="batchmean",
                )
            else:  # a distribution over classes, per sequence or per token
                log_p = F.log_softmax(student.float() / t, -1)
                log_q = F.log_softmax(teacher / t, -1)
                per_row = (log_q.exp() * (log_q - log_p)).sum(-1)
                kl = per_row[mask].mean() if per_row.dim() > 1 else per_row.mean()
            total = total + kl * t * t
        return total / len(raw)


def attention_map(attention: SelfAttention, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The attention distribution of a self-attention module (`bertkit.model.SelfAttention`) over its
    input x [B, T, H], averaged over heads: [B, T queries, T keys], padding keys left out."""
    q, k, _ = attention.project(x)  # [B, N, T, D] each
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    scores = scores.float().masked_fill(~real[:, None, None, :], float("-inf"))
    return scores.softmax(-1).mean(1)


def default_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer (1-based) for each student layer, evenly spaced: 4 of 12 -> 3, 6, 9, 12."""
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def _student(cfg: DistillConfig, teacher_config: BertConfig, vocab_size: int) -> tuple[BertConfig, Path | None]:
    if cfg.student in PRESETS:
        config = BertConfig.preset(
            cfg.student, vocab_size=vocab_size, max_position_embeddings=teacher_config.max_position_embeddings
        )
        return config, None
    directory = resolve_model(cfg.student)
    config = load_config(directory)
    if config.vocab_size != vocab_size:
        raise BertkitError(
            f"--student {cfg.student} has a vocab of {config.vocab_size} tokens, the teacher {vocab_size}: the "
            "student reads the teacher's tokens; pretrain it with the teacher's vocab (bertkit pretrain --vocab "
            f"{cfg.teacher}) or pass a size ({', '.join(PRESETS)})"
        )
    return config, directory


def distill(cfg: DistillConfig) -> dict:
    """Distil the teacher into the student in `cfg.output`; the student's best dev metrics."""
    with distributed.launched(cfg.device) as info:
        return _distill(cfg, info)


def _distill(cfg: DistillConfig, info: distributed.Dist) -> dict:
    if cfg.task == "embed":
        return _distill_embed(cfg, info)
    out = Path(cfg.output)
    teacher_dir = resolve_model(cfg.teacher)
    if cfg.train.data is None and not cfg.unlabeled:
        raise BertkitError("pass --train DATA (labelled) and/or --unlabeled TEXT: the student needs examples")
    if cfg.dev is None:
        raise BertkitError("pass --dev DATA: the student's best checkpoint is chosen on it")
    sources = [resolve_data(u) for u in cfg.unlabeled] + ([resolve_data(cfg.train.data)] if cfg.train.data else [])
    check_output_dir(out, [teacher_dir, *sources, resolve_data(cfg.dev, "dev")], cfg.overwrite, cfg.resume)
    teacher: Loaded = load_task(teacher_dir, device=str(distributed.device_for(cfg.device, info)))
    inner = teacher.fine_tuned
    max_length = cfg.max_length or teacher.max_length
    tokenizer = teacher.tokenizer

    train, dev = (
        read_data(inner, cfg.train.data, cfg.dev, cfg.train_examples, cfg.train.seed)
        if cfg.train.data
        else ([], _read_dev(inner, cfg.dev))
    )
    transfer = _unlabelled(inner, cfg, cfg.train.seed)
    examples = train + transfer
    features = inner.featurize(examples, tokenizer, max_length)
    labelled = {i for i, e in enumerate(examples) if i < len(train)}
    for i, f in enumerate(features):
        f["teacher_row"], f["labelled"] = i, int(f["example"] in labelled)
    dev_features = inner.featurize(dev, tokenizer, max_length)
    log.info(
        "distill %s: %d labelled and %d unlabelled examples (%d features), %d dev examples",
        inner.name,
        len(train),
        len(transfer),
        len(features),
        len(dev),
    )

    teacher_config = load_config(teacher.directory)
    student_config, student_dir = _student(cfg, teacher_config, tokenizer.vocab_size)
    regression = inner.name == "regression"
    weights = teacher_dir / "model.safetensors"
    labelled_by: dict[str, Any] = {  # what decides the teacher's outputs: the same for every student
        "teacher": str(teacher_dir.resolve()),
        "weights": content_hash(weights) if weights.is_file() else None,
        "task": inner.state(),
        "max_length": max_length,
        "data": [content_hash(p) for p in sources],
        "seed": cfg.train.seed,  # draws the samples
        "unlabeled_examples": cfg.unlabeled_examples,
        "train_examples": cfg.train_examples,
    }
    job = {**labelled_by, "student": cfg.student, "layer_map": cfg.layer_map, "hidden_weight": cfg.hidden_weight}
    job["attention_weight"] = cfg.attention_weight
    open_run(out, job, cfg.overwrite, cfg.resume, info.is_main)
    fingerprint = json.dumps(labelled_by, sort_keys=True)
    cache_dir = Path(cfg.teacher_cache) if cfg.teacher_cache else out / "teacher"
    if info.is_main and TeacherCache.fingerprint_of(cache_dir) != fingerprint:
        log.info("the teacher labels %d features (once; kept in %s)", len(features), cache_dir)
        raw, per_token = teacher_outputs(teacher.model, features, tokenizer.pad_id, teacher.device)
        TeacherCache.write(cache_dir, raw, per_token, fingerprint)
    elif info.is_main:
        log.info("the teacher's outputs for these %d features are in %s already", len(features), cache_dir)
    distributed.barrier()
    set_seed(cfg.train.seed)
    model = inner.build_model(student_config)
    if student_dir is not None:
        load_weights(inner.pretrained_target(model), read_state_dict(student_dir), source=str(student_dir))
    layers = None
    if cfg.hidden_weight > 0 or cfg.attention_weight > 0:  # the teacher runs alongside the student
        assert isinstance(teacher.model, nn.Module)  # loaded with the torch backend
        layer_map = _layer_map(cfg, student_config, teacher_config)
        layers = (teacher.model, layer_map, cfg.hidden_weight, cfg.attention_weight)
    if cfg.hidden_weight > 0:
        model.distill_projection = nn.Linear(student_config.hidden_size, teacher_config.hidden_size)
    task = DistillTask(inner, TeacherCache(cache_dir), cfg.temperature, cfg.soft_weight, regression, layers)
    if info.is_main:
        save_config(cfg, out / "distill.yaml")

    def save_best(trained, metrics):
        if hasattr(trained, "distill_projection"):  # trained for distillation only: not part of the student
            trained = copy.deepcopy(trained)
            del trained.distill_projection
        # a student started from a model directory keeps that model's sentence-transformers files
        save_task_dir(out, trained, inner, tokenizer, max_length, metrics, pipeline_from=student_dir)

    trainer = Trainer(
        model, task, cfg.train, out, save_best, tokenizer.pad_id, distributed.device_for(cfg.device, info)
    )
    best = trainer.fit(features, dev_features, dev, resume=cfg.resume)
    return numeric(best) if info.is_main else {}


def _layer_map(cfg: DistillConfig, student: BertConfig, teacher: BertConfig) -> list[int]:
    if not cfg.layer_map:
        return default_layer_map(student.num_hidden_layers, teacher.num_hidden_layers)
    if len(cfg.layer_map) != student.num_hidden_layers or max(cfg.layer_map) > teacher.num_hidden_layers:
        raise BertkitError(
            f"--layer-map {','.join(map(str, cfg.layer_map))}: give one teacher layer (1 to "
            f"{teacher.num_hidden_layers}) for each of the student's {student.num_hidden_layers} layers"
        )
    return cfg.layer_map


def _read_dev(task: Task, dev: str) -> list[dict]:
    path = resolve_data(dev, "dev")
    examples = task.read(str(path))
    task.check(examples, str(path))
    return examples


def _unlabelled(task: Task, cfg: DistillConfig, seed: int) -> list[dict]:
    """Examples of the teacher's task from plain transfer text (no labels)."""
    texts = _transfer_texts(cfg, seed)
    if texts and task.inputs != ("text",):
        raise BertkitError(
            f"--unlabeled gives plain texts, but task `{task.name}` takes {' and '.join(task.inputs)}: "
            "distil it on its labelled data (--train) only"
        )
    return [task.example({"text": t}, n, "unlabelled") for n, t in enumerate(texts)]


def _transfer_texts(cfg: DistillConfig, seed: int) -> list[str]:
    """The --unlabeled texts, or a seeded sample of --unlabeled-examples of them."""
    texts = [t for name in cfg.unlabeled for t in read_texts(resolve_data(name))]
    if cfg.unlabeled_examples is not None and cfg.unlabeled_examples < len(texts):
        texts = random.Random(seed).sample(texts, cfg.unlabeled_examples)
    return texts


class EmbedDistillTask(EmbedTask):
    """Sentence vectors trained towards a teacher's: squared error to the cached teacher vector of each
    text; on dev, the cosine between the student's vectors and the teacher's (`target`)."""

    main_metric = "cosine"

    def __init__(self, pooling: str, dim: int, cache: TeacherCache):
        super().__init__(pooling, dim)
        self.cache, self.main_metric = cache, "cosine"

    def loss(self, model, batch):
        student = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float()
        teacher, _ = self.cache.batch(0, batch["teacher_row"].tolist(), 0)
        return F.mse_loss(student, teacher.to(student.device))

    def metrics(self, predictions, examples):
        student = torch.tensor([p["vector"] for p in predictions])
        teacher = torch.tensor(np.stack([e["target"] for e in examples]))
        cosine = F.cosine_similarity(student, teacher, dim=-1)
        return {
            "cosine": cosine.mean().item(),
            "cosine_min": cosine.min().item(),
            "mse": F.mse_loss(student, teacher).item(),
        }


def _distill_embed(cfg: DistillConfig, info: distributed.Dist) -> dict:
    """`--task embed`: the student learns the teacher encoder's sentence vectors (module docstring)."""
    out = Path(cfg.output)
    if not cfg.unlabeled and cfg.train.data is None:
        raise BertkitError("pass --unlabeled TEXT (e.g. corpus-en): the student learns the teacher's vectors of it")
    if cfg.dev is None:
        raise BertkitError("pass --dev TEXT (held-out texts): the student is chosen on its cosine to the teacher there")
    if cfg.hidden_weight > 0 or cfg.attention_weight > 0:
        raise BertkitError(
            "--hidden-weight and --attention-weight are for task distillation; drop them with --task embed"
        )
    teacher_dir = resolve_model(cfg.teacher)
    sources = [resolve_data(u) for u in cfg.unlabeled] + ([resolve_data(cfg.train.data)] if cfg.train.data else [])
    dev_path = resolve_data(cfg.dev, "dev")
    check_output_dir(out, [teacher_dir, *sources, dev_path], cfg.overwrite, cfg.resume)
    device = distributed.device_for(cfg.device, info)
    teacher = Encoder(teacher_dir, device=str(device), max_length=cfg.max_length)
    if teacher.pooling not in ("cls", "mean", "max"):
        raise BertkitError(
            f"{teacher_dir} pools with `{teacher.pooling}`; an embedding student pools with cls, mean or max"
        )
    texts = _transfer_texts(cfg, cfg.train.seed) + (read_texts(sources[-1]) if cfg.train.data else [])
    dev_texts = read_texts(dev_path)
    task = EmbedTask(teacher.pooling, teacher.dim)
    examples = [task.example({"text": t}, n + 1, "train") for n, t in enumerate(texts)]
    features = task.featurize(examples, teacher.tokenizer, teacher.max_length)
    for i, f in enumerate(features):
        f["teacher_row"] = i
    log.info("distill embed: %d texts, %d dev texts; vectors of %d dimensions", len(texts), len(dev_texts), teacher.dim)

    weights = teacher_dir / "model.safetensors"
    labelled_by = {
        "teacher": str(teacher_dir.resolve()),
        "weights": content_hash(weights) if weights.is_file() else None,
        "task": "embed",
        "max_length": teacher.max_length,
        "data": [content_hash(p) for p in sources],
        "seed": cfg.train.seed,
        "unlabeled_examples": cfg.unlabeled_examples,
    }
    open_run(out, {**labelled_by, "student": cfg.student}, cfg.overwrite, cfg.resume, info.is_main)
    fingerprint = json.dumps(labelled_by, sort_keys=True)
    cache_dir = Path(cfg.teacher_cache) if cfg.teacher_cache else out / "teacher"
    if info.is_main and TeacherCache.fingerprint_of(cache_dir) != fingerprint:
        log.info("the teacher encodes %d texts (once; kept in %s)", len(texts), cache_dir)
        TeacherCache.write(cache_dir, [(v,) for v in teacher.encode(texts)], False, fingerprint)
    distributed.barrier()
    dev = [
        {**task.example({"text": t}, n + 1, str(dev_path)), "target": v}
        for n, (t, v) in enumerate(zip(dev_texts, teacher.encode(dev_texts)))
    ]
    dev_features = task.featurize(dev, teacher.tokenizer, teacher.max_length)

    student_config, student_dir = _student(cfg, load_config(teacher_dir), teacher.tokenizer.vocab_size)
    set_seed(cfg.train.seed)
    distill_task = EmbedDistillTask(teacher.pooling, teacher.dim, TeacherCache(cache_dir))
    model = distill_task.build_model(student_config)
    if student_dir is not None:
        load_weights(model, read_state_dict(student_dir), source=str(student_dir))
    if info.is_main:
        save_config(cfg, out / "distill.yaml")
    has_pipeline = bool(sentence_files.modules(teacher_dir))

    def save_best(trained, metrics):
        # a sentence-transformers directory: the encoder, the teacher's pooling and normalisation, the projection
        save_model(trained.bert, out, teacher.tokenizer, pipeline_from=teacher_dir if has_pipeline else None)
        if not has_pipeline:
            sentence_files.write_pipeline(out, teacher.pooling, student_config.hidden_size, teacher.normalize)
        if trained.dense is not None:
            sentence_files.add_dense(out, trained.dense)
        atomic_write_text(out / "metrics.json", json.dumps(numeric(metrics), indent=2))

    trainer = Trainer(model, distill_task, cfg.train, out, save_best, teacher.tokenizer.pad_id, device)
    best = trainer.fit(features, dev_features, dev, resume=cfg.resume)
    return numeric(best) if info.is_main else {}
