"""Pretrain BERT with masked LM + next sentence prediction: the library function behind `bertkit pretrain`.

Data is a directory written by `bertkit pretrain-data` (`bertkit.data.pretraining`), read lazily, one
batch at a time. The training loop is the one fine-tuning uses (`bertkit.train.loop`), with
`bertkit.tasks.pretrain.PretrainTask` as the task; under `torchrun` it trains data-parallel
(`bertkit.train.distributed`).

Where the model comes from:
- continued pretraining, `--model minilm` (a fetched name or any model directory with config.json and
  weights): the encoder is loaded as is; heads the checkpoint lacks (MiniLM is a bare BertModel) are
  initialised afresh, the MLM output projection tied to the word embeddings, and the log names them.
- from scratch, `--model-size tiny|mini|small|medium|base|large` (BertConfig.preset) with the vocab
  from `--vocab FILE_OR_DIR` (a vocab.txt, a directory holding one, or a fetched name such as
  zh-vocab), or from `--model DIR` when DIR holds only vocab.txt.
- a custom shape: a size plus `--config-overrides.KEY=VALUE` with the keys of config.json, e.g.
  `--model-size mini --config-overrides.num-hidden-layers=6`. When hidden_size is overridden, heads
  and intermediate size follow it (hidden / 64 and 4 x hidden) unless given too. A continued model
  keeps its shape; only its dropout can be overridden.

The held-out set: the last `--eval-instances` instances of --data, never trained on, or the first
ones of a separate `--dev DIR`. They are masked once (epoch 0), so evaluations are comparable.

The output directory is a Hugging Face model directory (config.json with `architectures:
["BertForPreTraining"]`, model.safetensors, vocab.txt) that `transformers.BertForPreTraining`
loads and `bertkit finetune --model DIR` fine-tunes, plus pretrain.yaml (the resolved config),
metrics.jsonl and training.png (the curves), metrics.json (the last evaluation) and checkpoint/
(resume with `--resume`); a continued sentence-transformers model (MiniLM) keeps its pipeline files.
The saved weights are those at the end of training, not the best evaluation: held-out MLM accuracy
keeps rising for all but the shortest runs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.checkpoint import atomic_write_text, load_config, load_weights, read_state_dict, save_model
from bertkit.config import option, required
from bertkit.config import save as save_config
from bertkit.data.pretraining import PretrainingData
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.model import PRESETS, BertConfig, BertForPreTraining, config_of
from bertkit.outputs import check_output_dir, content_hash, open_run
from bertkit.tasks.pretrain import PretrainTask, freeze_nsp
from bertkit.tokenizer import BertTokenizer
from bertkit.train import distributed
from bertkit.train.loop import TrainConfig, Trainer, set_seed

log = logging.getLogger("bertkit")

SHAPE_KEYS = (
    "num_hidden_layers",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "hidden_act",
    "initializer_range",
)


@dataclass
class ConfigOverrides:
    """config.json keys that change a new model's shape (dropout may change a continued model's too)."""

    num_hidden_layers: int | None = option(None, "Transformer layers", at_least=1)
    hidden_size: int | None = option(None, "hidden size H", at_least=1)
    num_attention_heads: int | None = option(None, "attention heads (default: hidden_size / 64)", at_least=1)
    intermediate_size: int | None = option(None, "feed-forward size (default: 4 x hidden_size)", at_least=1)
    max_position_embeddings: int | None = option(None, "longest sequence the model can take", at_least=1)
    type_vocab_size: int | None = option(None, "segment types (2 for sentence pairs)", at_least=1)
    hidden_act: str | None = option(None, "activation: gelu, gelu_new, relu, ...")
    initializer_range: float | None = option(None, "std of the normal initialisation", above=0)
    hidden_dropout_prob: float | None = option(None, "dropout after embeddings and sub-layers", at_least=0, below=1)
    attention_probs_dropout_prob: float | None = option(None, "dropout on attention weights", at_least=0, below=1)

    def given(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class PretrainConfig:
    data: str = required("pretraining data: a directory written by `bertkit pretrain-data`")
    output: str = required("directory for the pretrained model (a Hugging Face directory), metrics and checkpoint")
    model: str | None = option(
        None,
        "continue pretraining this model (a directory or a fetched name such as "
        "minilm); a directory with only vocab.txt (zh-vocab) starts from scratch",
    )
    model_size: str | None = option(
        None,
        "from scratch: the size (tiny L2/H128, mini L4/H256, small L4/H512, "
        "medium L8/H512, base L12/H768, large L24/H1024)",
        choices=tuple(PRESETS),
    )
    vocab: str | None = option(None, "from scratch: vocab.txt, a directory holding one, or a fetched name (zh-vocab)")
    config_overrides: ConfigOverrides = field(
        default_factory=ConfigOverrides,
        metadata={"help": "from scratch: config.json keys that differ from the --model-size preset"},
    )
    train: TrainConfig = field(
        default_factory=TrainConfig,
        metadata={"help": "the training loop (as for finetune); set max_steps for pretraining"},
    )
    dev: str | None = option(None, "held-out pretraining data directory (default: the end of --data)")
    eval_instances: int = option(
        1000,
        "instances evaluated every --train.eval-every steps: the last N of --data, "
        "excluded from training, or the first N of --dev; 0: no evaluation",
        at_least=0,
    )
    resume: bool = option(
        False,
        "continue an interrupted run from OUTPUT/checkpoint (refused when the model, "
        "vocab or data differ from the run's)",
    )
    overwrite: bool = option(
        False, "replace what OUTPUT holds (nothing is removed before the options, model and data are checked)"
    )
    device: str | None = option(None, "cpu or cuda (default: cuda when available; under torchrun cuda:LOCAL_RANK)")


class EpochView:
    """`data.feature(i, epoch)` for the instances `indices`, as a sequence: what the loop trains on in
    one epoch. `functools.partial(EpochView, data, indices)` is the loop's `epoch -> sequence`, so
    dynamically masked data is re-masked every epoch."""

    def __init__(self, data, indices: range, epoch: int = 0):
        self.data, self.indices, self.epoch = data, indices, epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.data.feature(self.indices[i], self.epoch)


def _read_vocab(name: str) -> BertTokenizer:
    path = Path(name).expanduser()
    if path.is_file():
        return BertTokenizer.from_vocab(path)
    directory = resolve_model(name)
    if not (directory / "vocab.txt").is_file() and not (directory / "tokenizer.json").is_file():
        raise BertkitError(
            f"{directory} has no vocab.txt or tokenizer.json: pass --vocab with a vocab.txt or a directory holding one"
        )
    return BertTokenizer.from_dir(directory)


def build_model(cfg: PretrainConfig):
    """(BertForPreTraining, tokenizer): a continued checkpoint with its missing heads new, or a fresh model."""
    model_dir = resolve_model(cfg.model) if cfg.model else None
    overrides = cfg.config_overrides.given()
    if model_dir is not None and (model_dir / "config.json").is_file():
        if cfg.model_size or cfg.vocab:
            raise BertkitError(
                f"--model {cfg.model} continues pretraining a model with its own shape and vocab; "
                "leave out --model-size and --vocab, or start from scratch with --vocab "
                f"{cfg.model} instead of --model"
            )
        shape = sorted(set(overrides) & set(SHAPE_KEYS))
        if shape:
            raise BertkitError(
                f"--config-overrides.{shape[0]} would change the shape of {cfg.model}; a continued "
                "model keeps its shape (only dropout can be overridden): start from scratch "
                "with --model-size to train another shape"
            )
        config = dataclasses.replace(load_config(model_dir), **overrides)
        tokenizer = BertTokenizer.from_dir(model_dir)
        tokenizer.check_vocab_size(config.vocab_size, where=str(model_dir / "config.json"))
        set_seed(cfg.train.seed)
        model = BertForPreTraining(config)
        report = load_weights(model, read_state_dict(model_dir), source=str(model_dir))
        fresh = [n for n in report.newly_initialised if n.startswith(("mlm.", "nsp.", "bert.pooler."))]
        if any(n.startswith("mlm.") for n in fresh):
            log.info(
                "%s has no MLM head: training a fresh one (transform + bias; its output projection is "
                "tied to the word embeddings): %s",
                cfg.model,
                ", ".join(fresh),
            )
        elif fresh:
            log.info("%s: fresh %s", cfg.model, ", ".join(fresh))
        return model, tokenizer
    if cfg.vocab is None and model_dir is None:
        raise BertkitError(
            "say which model to train: --model minilm (continue pretraining a model), or "
            "--model-size mini --vocab zh-vocab (from scratch with that vocab)"
        )
    if cfg.model_size is None:
        raise BertkitError(
            f"{cfg.vocab or cfg.model} is a vocab without a model: pass --model-size "
            f"({', '.join(PRESETS)}) to pretrain a new model from scratch"
        )
    tokenizer = _read_vocab(cfg.vocab) if cfg.vocab else BertTokenizer.from_dir(model_dir)
    if "hidden_size" in overrides:  # heads and feed-forward follow the hidden size, as in the presets
        overrides.setdefault("num_attention_heads", max(1, overrides["hidden_size"] // 64))
        overrides.setdefault("intermediate_size", 4 * overrides["hidden_size"])
    config = BertConfig.preset(cfg.model_size, vocab_size=tokenizer.vocab_size, **overrides)
    log.info(
        "from scratch: %d layers, hidden %d, %d heads, feed-forward %d, vocab %d (%s)",
        config.num_hidden_layers,
        config.hidden_size,
        config.num_attention_heads,
        config.intermediate_size,
        config.vocab_size,
        tokenizer.vocab_file,
    )
    set_seed(cfg.train.seed)
    return BertForPreTraining(config), tokenizer


def _heldout(cfg: PretrainConfig, data, config: BertConfig):
    """(training indices, held-out features): the held-out instances come from the end of --data or
    from --dev, masked as in epoch 0; each feature's `example` is its index in the held-out set."""
    n = max(0, cfg.eval_instances)
    if cfg.dev:
        source = PretrainingData(cfg.dev, vocab_size=config.vocab_size)
        if source.nsp != data.nsp:
            raise BertkitError(
                f"--dev {cfg.dev} was built with nsp={source.nsp} but --data {cfg.data} with "
                f"nsp={data.nsp}; build both with the same `bertkit pretrain-data` options"
            )
        held, train = range(min(n, len(source))), range(len(data))
    else:
        if n and n >= len(data):
            raise BertkitError(
                f"--eval-instances {n} leaves nothing to train on: {cfg.data} holds {len(data)} "
                f"instances; pass a smaller --eval-instances (or 0), or a separate --dev DIR"
            )
        source, held, train = data, range(len(data) - n, len(data)), range(len(data) - n)
        dupes = data.index.get("settings", {}).get("dupe_factor", 1)
        if n and dupes > 1:
            # Each document is in dupe_factor passes of its chunk, so the last N instances mostly repeat
            # text that is also trained on (in corpus-zh at 3 passes: 708 of 1,000 share a 12-token span).
            log.warning(
                "the held-out instances come from the end of %s, built with dupe_factor %d: the same "
                "documents are in the training part too, so held-out MLM/NSP scores are optimistic; "
                "for a clean measure build --dev DIR from separate text (bertkit pretrain-data "
                "--input held-out.txt ... --dupe-factor 1)",
                cfg.data,
                dupes,
            )
    features = [{**source.feature(i, 0), "example": k} for k, i in enumerate(held)]
    return train, features


def pretrain(cfg: PretrainConfig) -> dict:
    """Train `cfg`, save the model into `cfg.output`; the last held-out metrics (rank 0; {} elsewhere)."""
    with distributed.launched(cfg.device) as info:
        return _pretrain(cfg, info)


def _pretrain(cfg: PretrainConfig, info: distributed.Dist) -> dict:
    if cfg.train.data is not None:
        raise BertkitError(f"pretraining reads --data DIR; --train {cfg.train.data} is for finetune")
    PretrainingData(cfg.data)  # a missing or broken data directory fails before a model is loaded
    out = Path(cfg.output)
    inputs = [
        cfg.data,
        cfg.dev,
        resolve_model(cfg.model) if cfg.model else None,
        cfg.vocab if cfg.vocab and Path(cfg.vocab).exists() else None,
    ]
    check_output_dir(out, inputs, cfg.overwrite, cfg.resume)
    model, tokenizer = build_model(cfg)
    config = config_of(model)
    data = PretrainingData(cfg.data, vocab_size=config.vocab_size)
    task = PretrainTask(nsp=data.nsp)
    if data.max_seq_length > config.max_position_embeddings:
        raise BertkitError(
            f"{cfg.data} holds sequences of up to {data.max_seq_length} tokens but the model has "
            f"{config.max_position_embeddings} positions; rebuild the data with --max-seq-length "
            f"{config.max_position_embeddings} or less"
        )
    train_indices, dev_features = _heldout(cfg, data, config)
    if not data.nsp:
        frozen = freeze_nsp(model)
        log.info(
            "%s has no sentence pairs: MLM only; the pooler and NSP head are kept as they are (%s)",
            cfg.data,
            ", ".join(frozen),
        )
    log.info("%s: %d instances for training, %d held out", data, len(train_indices), len(dev_features))
    job = {
        "model": cfg.model,
        "model_size": cfg.model_size,
        "vocab": cfg.vocab,
        "config": config.to_dict(),
        "data": content_hash(cfg.data),
        "dev": content_hash(cfg.dev) if cfg.dev else None,
        "eval_instances": cfg.eval_instances,
        "seed": cfg.train.seed,
    }
    open_run(out, job, cfg.overwrite, cfg.resume, info.is_main)
    if info.is_main:
        save_config(cfg, out / "pretrain.yaml")
    device = distributed.device_for(cfg.device, info)
    trainer = Trainer(
        model, task, cfg.train, out, save_best=lambda trained, metrics: None, pad_id=tokenizer.pad_id, device=device
    )
    lengths = data.lengths[train_indices.start : train_indices.stop]
    trainer.fit(
        functools.partial(EpochView, data, train_indices),
        dev_features,
        dev_features,
        resume=cfg.resume,
        lengths=lengths,
    )
    if info.is_main:
        # A continued model keeps its sentence-transformers files (MiniLM's mean pooling and normalisation).
        save_model(trainer.model, out, tokenizer, pipeline_from=resolve_model(cfg.model) if cfg.model else None)
        if trainer.last_metrics:  # (none when resuming a run that had already finished)
            atomic_write_text(out / "metrics.json", json.dumps(trainer.last_metrics, indent=2))
        log.info("saved the pretrained model to %s", out)
    return trainer.last_metrics
