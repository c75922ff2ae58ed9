"""Fine-tune: the library function behind `bertkit finetune` (evaluate and predict: `bertkit.inference`).

A fine-tuned model directory is a Hugging Face directory (config.json, model.safetensors, vocab.txt)
plus `task.json` (the task and its label set) and `metrics.json` (the best dev metrics); a model
fine-tuned from a sentence-transformers model (MiniLM) keeps its pipeline files.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bertkit import sentence_files
from bertkit.checkpoint import atomic_write_text, load_config, load_weights, read_state_dict, save_model
from bertkit.config import option, required
from bertkit.config import save as save_config
from bertkit.data.benchmarks import Layout, choose_layout, data_hash, locate
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.inference import load, run_examples
from bertkit.model import BertConfig
from bertkit.outputs import check_output_dir, clear_dir, open_run
from bertkit.tasks import Task, get_task
from bertkit.tasks.multitask import MultiTask
from bertkit.tokenizer import BertTokenizer
from bertkit.train import distributed
from bertkit.train.loop import TrainConfig, Trainer, set_seed

log = logging.getLogger("bertkit")


@dataclass
class QAOptions:
    doc_stride: int = option(128, "tokens between the starts of two context windows", at_least=1)
    max_query_length: int = option(64, "question tokens kept", at_least=1)
    max_answer_length: int = option(30, "longest answer, in tokens", at_least=1)
    n_best: int = option(20, "start and end candidates considered per window", at_least=1)


@dataclass
class TaskSpec:
    """One task of a multi-task run (a list of these under `tasks:` in the YAML config)."""

    name: str = required("a short name for the task, used in metric keys and as its output folder")
    task: str = required("classify, regression, ner or qa")
    train: str = required("training data: a file or a fetched name such as mr:train")
    dev: str = required("dev data: a file or a fetched name such as mr:dev")
    head: str = option("softmax", "ner only: softmax or crf", choices=("softmax", "crf"))


@dataclass
class FinetuneConfig:
    task: str = required(
        "what to learn: classify, regression, ner, qa, embed (sentence embeddings from pairs or scored "
        "pairs), or multitask (with `tasks:`)"
    )
    model: str = required("pretrained model directory or fetched name, e.g. minilm")
    train: TrainConfig = field(default_factory=TrainConfig)
    dev: str | None = option(None, "dev data: a file or a fetched name such as mr:dev")
    output: str = required("directory for the fine-tuned model, metrics.json and the training curve")
    max_length: int | None = option(
        None,
        "tokens per input (default: 384 for qa, else 128); longer inputs are split into overlapping windows",
        at_least=2,
    )
    head: str = option(
        "softmax", "ner: softmax, or crf (decodes only valid BIO/BIOES sequences)", choices=("softmax", "crf")
    )
    format: str | None = option(
        None,
        "classify, regression: read the data as downloaded, e.g. glue:mrpc, clue:tnews, lcqmc, imdb "
        "(default: text/text_b/label records; a task's official folder as --train picks its preset)",
    )
    text_field: str | None = option(None, "classify, regression: the column or field that holds the text")
    text_b_field: str | None = option(None, "classify, regression: the column or field of the second text")
    label_field: str | None = option(None, "classify, regression: the column or field that holds the label")
    qa: QAOptions = field(default_factory=QAOptions)
    tasks: list[TaskSpec] = option([], "multitask: the tasks, each with name, task, train, dev (and head)")
    sampling: str = option(
        "proportional", "multitask: how batches are drawn from the tasks", choices=("proportional", "temperature")
    )
    temperature: float = option(2.0, "multitask, temperature sampling: 1 is proportional, larger is flatter", above=0)
    init: str = option(
        "pretrained",
        "pretrained weights, or `random` to train from scratch with the "
        "model's config (a baseline for what pretraining brings)",
        choices=("pretrained", "random"),
    )
    size: str = option(
        "small",
        "init=random with a vocab-only directory (no config.json): the model size preset",
        choices=("tiny", "mini", "small", "medium", "base", "large"),
    )
    dropout: float | None = option(
        None,
        "hidden and attention dropout while fine-tuning (default: the model's "
        "config.json; e.g. 0.1 for a model pretrained without dropout)",
        at_least=0,
        below=1,
    )
    train_examples: int | None = option(
        None,
        "train on a seeded random sample of this many examples (e.g. a SQuAD subset that fits the time you have)",
        at_least=1,
    )
    seeds: list[int] = option(
        [], "run once per seed (e.g. 1,2,3) and report mean and std of the dev metrics", at_least=0, at_most=2**32 - 1
    )
    resume: bool = option(
        False,
        "continue an interrupted run from OUTPUT/checkpoint (refused when the task, "
        "labels, model or data differ from the run's)",
    )
    overwrite: bool = option(
        False, "replace what OUTPUT holds (nothing is removed before the options, model and data are checked)"
    )
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")


def data_layout(cfg: FinetuneConfig) -> Layout | None:
    """How the run's data files are read: `--format` and the field options (`bertkit.data.benchmarks`)."""
    layout = choose_layout(cfg.format, cfg.text_field, cfg.text_b_field, cfg.label_field, cfg.train.data)
    if layout is None or layout.task == cfg.task:
        return layout
    if layout.name != "fields":
        raise BertkitError(
            f"--format {layout.name} is data for --task {layout.task}, not {cfg.task}; pass --task {layout.task}"
        )
    if cfg.task not in ("classify", "regression"):
        raise BertkitError(
            f"--text-field, --text-b-field and --label-field name the columns of classify and regression "
            f"data; --task {cfg.task} reads its own format (docs/data-formats.md)"
        )
    return layout


def _task_options(name: str, cfg: FinetuneConfig, head: str) -> dict:
    if name in ("classify", "regression"):
        return {"layout": data_layout(cfg) if name == cfg.task else None}
    if name == "ner":
        return {"head": head}
    if name == "qa":
        return dict(cfg.qa.__dict__)
    if name == "embed":
        return {"pooling": embed_pooling(resolve_model(cfg.model))}
    return {}


def embed_pooling(model_dir: Path) -> str:
    """The pooling an embedding model trains with: its sentence-transformers pipeline's, else mean."""
    if sentence_files.dense(model_dir) is not None:
        raise BertkitError(
            f"{model_dir} has a Dense projection after pooling (modules.json); --task embed fine-tunes "
            "pipelines of encoder, pooling and normalisation only"
        )
    pooling = sentence_files.pooling_mode(model_dir) or "mean"
    if pooling not in ("cls", "mean", "max"):
        raise BertkitError(f"{model_dir} pools with `{pooling}`; --task embed trains cls, mean or max pooling")
    return pooling


def read_data(task, train: str, dev: str, limit: int | None = None, seed: int = 0, layout: Layout | None = None):
    """(train, dev) examples, read and validated: every data problem is reported here, before any training.
    With a `layout`, a task's folder stands for its train and dev files."""
    train_path, dev_path = locate(train, "train", layout), locate(dev, "dev", layout)
    train_examples, dev_examples = task.read(str(train_path)), task.read(str(dev_path))
    if limit is not None and limit < len(train_examples):
        log.info(
            "training on a random sample of %d of the %d examples in %s (seed %d)",
            limit,
            len(train_examples),
            train_path,
            seed,
        )
        keep = sorted(random.Random(seed).sample(range(len(train_examples)), limit))
        train_examples = [train_examples[i] for i in keep]
    task.fit(train_examples)
    task.check(dev_examples, str(dev_path))
    return train_examples, dev_examples


def _build_task(cfg: FinetuneConfig) -> tuple[Task, list[tuple[str, Task, str, str]]]:
    """The run's task and its parts, (name, task, train, dev): the task itself for a single-task run,
    or a `MultiTask` over the config's `tasks:` list (one part each)."""
    if cfg.task != "multitask":
        if cfg.train.data is None or cfg.dev is None:
            raise BertkitError("pass --train FILE and --dev FILE (files or fetched names such as mr:train)")
        data_layout(cfg)  # refuses a --format the task does not read
        task = get_task(cfg.task, **_task_options(cfg.task, cfg, cfg.head))
        return task, [("", task, cfg.train.data, cfg.dev)]
    if not cfg.tasks:
        raise BertkitError(
            "--task multitask needs a list of tasks in the config file, e.g.\n"
            "tasks:\n  - {name: mr, task: classify, train: mr:train, dev: mr:dev}\n"
            "  - {name: wnut, task: ner, train: wnut16:train, dev: wnut16:dev}"
        )
    names = [spec.name for spec in cfg.tasks]
    if len(set(names)) != len(names):
        raise BertkitError(f"task names must differ, got {names}")
    subs = {spec.name: get_task(spec.task, **_task_options(spec.task, cfg, spec.head)) for spec in cfg.tasks}
    return MultiTask(subs, cfg.sampling, cfg.temperature), [(s.name, subs[s.name], s.train, s.dev) for s in cfg.tasks]


def finetune(cfg: FinetuneConfig) -> dict:
    """Train the task on `cfg.train.data`, keep the best dev checkpoint in `cfg.output`; dev metrics
    (on rank 0; {} on the other processes of a `torchrun` run, see `bertkit.train.distributed`)."""
    with distributed.launched(cfg.device) as info:
        return _finetune_seeds(cfg, info) if cfg.seeds else _finetune(cfg, info)


def _finetune(cfg: FinetuneConfig, info: distributed.Dist) -> dict:
    out = Path(cfg.output)
    model_dir = resolve_model(cfg.model)
    task, parts = _build_task(cfg)
    if cfg.max_length is None:
        cfg = dataclasses.replace(cfg, max_length=task.default_max_length)
    assert cfg.max_length is not None
    layout = data_layout(cfg) if cfg.task != "multitask" else None
    data_paths = {
        "train": [locate(p[2], "train", layout) for p in parts],
        "dev": [locate(p[3], "dev", layout) for p in parts],
    }
    check_output_dir(out, [model_dir, *data_paths["train"], *data_paths["dev"]], cfg.overwrite, cfg.resume)
    tokenizer = BertTokenizer.from_dir(model_dir)
    if cfg.init == "random" and not (model_dir / "config.json").is_file():
        config = BertConfig.preset(cfg.size, vocab_size=tokenizer.vocab_size)
        log.info(
            "init=random: a %s BERT (%d layers, hidden %d) on %s",
            cfg.size,
            config.num_hidden_layers,
            config.hidden_size,
            tokenizer.vocab_file,
        )
    else:
        config = load_config(model_dir)
    if cfg.dropout is not None:
        config = dataclasses.replace(config, hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout)
    tokenizer.check_vocab_size(config.vocab_size, where=str(model_dir))
    if cfg.max_length > config.max_position_embeddings:
        raise BertkitError(
            f"--max-length {cfg.max_length} is longer than the model's "
            f"{config.max_position_embeddings} positions; pass --max-length "
            f"{config.max_position_embeddings} or less (longer inputs are windowed)"
        )
    train_examples, dev_examples, dev_parts = [], [], {}
    for name, part, train, dev in parts:
        tr, dv = read_data(part, train, dev, cfg.train_examples, cfg.train.seed, layout)
        train_examples += task.tag(name, tr)
        dev_examples += task.tag(name, dv)
        dev_parts[name] = dv
    train_features = task.featurize(train_examples, tokenizer, cfg.max_length)
    dev_features = task.featurize(dev_examples, tokenizer, cfg.max_length)
    log.info(
        "%s: %d train examples (%d features), %d dev examples (%d features)",
        task.name,
        len(train_examples),
        len(train_features),
        len(dev_examples),
        len(dev_features),
    )

    set_seed(cfg.train.seed)
    model = task.build_model(config)
    if cfg.init == "pretrained":
        load_weights(task.pretrained_target(model), read_state_dict(model_dir), source=str(model_dir))
    else:
        log.info("init=random: training from randomly initialised weights (no pretraining)")
    job = {
        "task": task.state(),
        "model": cfg.model,
        "init": cfg.init,
        "max_length": cfg.max_length,
        "train_examples": cfg.train_examples,
        "seed": cfg.train.seed,
        **{split: [data_hash(p) for p in paths] for split, paths in data_paths.items()},
    }
    open_run(out, job, cfg.overwrite, cfg.resume, info.is_main)
    if info.is_main:
        save_config(cfg, out / "finetune.yaml")

    def save_best(trained, metrics):
        for name, part, part_model, part_metrics in task.parts(trained, metrics):
            save_task_dir(out / name, part_model, part, tokenizer, cfg.max_length, part_metrics, model_dir)
        atomic_write_text(out / "metrics.json", json.dumps(numeric(metrics), indent=2))

    trainer = Trainer(
        model, task, cfg.train, out, save_best, tokenizer.pad_id, distributed.device_for(cfg.device, info)
    )
    best = trainer.fit(train_features, dev_features, dev_examples, resume=cfg.resume)
    if not info.is_main:
        return {}
    for name, part, _, _ in task.parts(trainer.model, best) if best else []:  # files about the best model
        part.report(
            out / name,
            functools.partial(_best_predictions, out / name, dev_parts[name], trainer.device),
            dev_parts[name],
        )
    return numeric(best)


def _best_predictions(model_dir: Path, examples: list[dict], device) -> list[dict]:
    """The saved best model's predictions for `examples`."""
    return run_examples(load(model_dir, device=device), examples)


def save_task_dir(
    out: Path, model, task, tokenizer, max_length: int, metrics: dict, pipeline_from: Path | None = None
) -> None:
    """A fine-tuned model directory: the model (config.json with the label maps), task.json, metrics.json,
    and the sentence-transformers files of `pipeline_from`, the model it was fine-tuned from (its encoder
    still encodes sentences as that pipeline does)."""
    save_model(model, out, tokenizer, extra_config=task.label_config(), pipeline_from=pipeline_from)
    atomic_write_text(out / "task.json", json.dumps({**task.state(), "max_length": max_length}, indent=2))
    atomic_write_text(out / "metrics.json", json.dumps(numeric(metrics), indent=2))


def numeric(metrics: dict) -> dict:
    """The metrics that are numbers (metrics.json's content; per-type tables stay in metrics.jsonl)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}


def _finetune_seeds(cfg: FinetuneConfig, info: distributed.Dist) -> dict:
    """The same job once per seed, into OUTPUT/seed-N; OUTPUT/metrics.json holds mean and std."""
    check_output_dir(cfg.output, [resolve_model(cfg.model)], cfg.overwrite, cfg.resume)
    if cfg.overwrite and info.is_main:
        clear_dir(cfg.output)
    runs = []
    for seed in cfg.seeds:
        one = FinetuneConfig(
            **{
                **cfg.__dict__,
                "seeds": [],
                "output": str(Path(cfg.output) / f"seed-{seed}"),
                "train": TrainConfig(**{**cfg.train.__dict__, "seed": seed}),
            }
        )
        runs.append(_finetune(one, info))
    if not info.is_main:
        return {}
    summary = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        summary[key] = statistics.mean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    summary["seeds"] = len(runs)
    atomic_write_text(Path(cfg.output) / "metrics.json", json.dumps(summary, indent=2))
    log.info(
        "over %d seeds: %s", len(runs), ", ".join(f"{k} {summary[k]:.4f} ± {summary[k + '_std']:.4f}" for k in runs[0])
    )
    return summary
