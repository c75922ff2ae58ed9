"""The one training loop, for fine-tuning and pretraining alike. Nothing here knows about labels, spans
or BERT's heads: a task supplies the loss, the predictions and the metrics (see `bertkit.tasks`).

Training data is any sequence of features (`len` and `[i]`), read one batch at a time, so it may be
lazy (memory-mapped pretraining data), or a function `epoch -> sequence` for features that change
from epoch to epoch (dynamic masking). A run lasts `epochs` passes or, with `max_steps`, that many
optimiser steps, going round the data as often as needed.

Exact resume: the batch order of epoch e is drawn from a generator seeded with `seed + e`, and a
checkpoint (weights, optimiser, scheduler, RNG states, epoch and batch position) is written
atomically at optimiser-step boundaries, so a killed run resumed with `resume=True` takes exactly
the steps an uninterrupted run would have taken.

Distributed (`torchrun`, see `bertkit.train.distributed`): the batches are global, every process
trains on its slice of each, the loss is normalised by global counts, and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bertkit.config import option
from bertkit.data.collate import collate
from bertkit.errors import BertkitError
from bertkit.inference import evaluate
from bertkit.outputs import atomic_path
from bertkit.train import distributed
from bertkit.train.board import Board
from bertkit.train.optim import OPTIMIZERS, build_optimizer, linear_schedule
from bertkit.train.plot import plot_metrics

PRECISIONS = ("fp32", "bf16", "fp16")

log = logging.getLogger("bertkit")


@dataclass
class TrainConfig:
    data: str | None = option(None, "training data: a file or a fetched name such as mr:train")
    epochs: int = option(3, "passes over the training data", at_least=1)
    max_steps: int = option(
        0,
        "train for this many optimiser steps, going round the data as often as "
        "needed (0: `epochs` passes); pretraining is usually measured in steps",
        at_least=0,
    )
    batch_size: int = option(
        32,
        "examples per optimiser step (split into micro-batches by grad_accum; "
        "with torchrun, over all processes together)",
        at_least=1,
    )
    grad_accum: int = option(1, "micro-batches per optimiser step", at_least=1)
    eval_batch_size: int = option(64, "examples per forward pass when evaluating", at_least=1)
    optimizer: str = option(
        "adamw", "adamw, or lamb (layer-wise trust ratio, for large-batch pretraining)", choices=OPTIMIZERS
    )
    lr: float = option(5e-5, "peak learning rate", above=0)
    head_lr: float = option(
        0.0,
        "peak learning rate of the task head (classifier, tagger, CRF: what starts "
        "from scratch on a pretrained encoder), when it should differ from lr; 0: lr",
        at_least=0,
    )
    weight_decay: float = option(0.01, "weight decay (not applied to biases, LayerNorm and CRF scores)", at_least=0)
    warmup: float = option(0.1, "share of the steps spent warming the learning rate up from 0", at_least=0, at_most=1)
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)", at_least=0)
    eval_every: int = option(0, "evaluate every N optimiser steps (0: at the end of every epoch)", at_least=0)
    patience: int = option(0, "stop after N evaluations without improvement (0: never stop early)", at_least=0)
    checkpoint_every: int = option(200, "write a resumable checkpoint every N optimiser steps", at_least=1)
    seed: int = option(42, "seed for initialisation, dropout and data order", at_least=0, at_most=2**32 - 1)
    log_every: int = option(20, "log the training loss every N optimiser steps", at_least=1)
    precision: str = option(
        "fp32",
        "fp32, or mixed precision: bf16 (autocast; GPUs since Ampere, CPUs with "
        "AMX/AVX512-BF16) or fp16 (autocast with dynamic loss scaling; CUDA only)",
        choices=PRECISIONS,
    )
    tensorboard: str | None = option(
        None,
        "also log the training loss, learning rate and dev metrics as TensorBoard scalars under DIR/RUN "
        "(RUN: the output directory's name); needs the tensorboard package",
    )


def autocast(precision: str, device: torch.device):
    """The forward pass's autocast context for `precision` (weights and optimiser stay fp32)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise BertkitError("--train.precision fp16 needs a CUDA device; on a CPU use bf16 or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BertkitError(f"{torch.cuda.get_device_name(device)} has no bf16: use --train.precision fp16")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    """RNG states as tensors and plain numbers, so the checkpoint loads with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {
        "python": [version, torch.tensor(py_state), py_gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":  # dropout on the GPU draws from the device's own generator
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _rank_seed(seed: int, rank: int, step: int) -> int:
    """A dropout seed of its own for each process after the first (which keeps `seed`)."""
    return seed + 1_000_003 * rank + step


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@dataclass
class Position:
    """Where a run is: what a checkpoint records besides the weights and optimiser state."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # micro-batches of the current epoch done
    step: int = 0  # optimiser steps done
    best: float | None = None  # the best dev main metric so far
    best_metrics: dict = field(default_factory=dict)  # every dev metric at that evaluation
    bad_evals: int = 0  # evaluations since the best (early stopping)


class Trainer:
    """Runs `cfg` on (model, task, data) and writes into `out_dir`:
    metrics.jsonl (every logged step and evaluation), metrics.json (the best dev metrics),
    training.png, checkpoint/ (the last resumable state) and, through `save_best`, the best model.
    Under torchrun only rank 0 writes (and evaluates); every process trains."""

    def __init__(
        self,
        model,
        task,
        cfg: TrainConfig,
        out_dir: str | Path,
        save_best,
        pad_id: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.model, self.task, self.cfg = model.to(device), task, cfg
        self.dist = distributed.current()
        self.out = Path(out_dir)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.save_best, self.pad_id, self.device = save_best, pad_id, torch.device(device)
        self.state_path = self.out / "checkpoint" / "state.pt"
        self.last_metrics: dict = {}  # the latest evaluation (pretraining reports the last, not the best)
        self.board = Board(cfg.tensorboard, self.out.resolve().name) if cfg.tensorboard and self.dist.is_main else None

    def fit(self, train_features, dev_features, dev_examples, resume: bool = False, lengths=None) -> dict:
        """Train and return the best dev metrics (on rank 0; {} on the other processes).

        `train_features`: a sequence of features, or a function `epoch -> sequence` (see the module
        docstring). `lengths`: the features' token counts, for data where computing them would read
        every feature; by default they are taken from `input_ids`.
        """
        cfg, world, rank = self.cfg, self.dist.world_size, self.dist.rank
        features_at = train_features if callable(train_features) else (lambda epoch: train_features)
        if lengths is None:
            lengths = [len(f["input_ids"]) for f in features_at(0)]
        micro = max(1, cfg.batch_size // cfg.grad_accum)  # global micro-batch: all processes together
        if micro < world:
            raise BertkitError(
                f"--train.batch-size {cfg.batch_size} with --train.grad-accum {cfg.grad_accum} "
                f"gives micro-batches of {micro}, fewer than the {world} processes; pass "
                f"--train.batch-size {world * cfg.grad_accum} or more"
            )

        # The task orders the batches (by default grouped by length; multi-task sampling its own way).
        def sampler(features, g: torch.Generator) -> list[list[int]]:
            batches = self.task.train_batches(features, micro, g, lengths)
            # A short last batch that cannot give every process an example is dropped.
            return [b for b in batches if len(b) >= world]

        batches_per_epoch = len(sampler(features_at(0), torch.Generator().manual_seed(cfg.seed)))
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
        total = cfg.max_steps or steps_per_epoch * cfg.epochs
        optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay, cfg.optimizer, cfg.head_lr or None)
        scheduler = linear_schedule(optimizer, int(cfg.warmup * total), total)
        autocast(cfg.precision, self.device)  # an unusable precision fails here, before any step
        # fp16 gradients underflow without loss scaling; the scaler is a no-op for fp32 and bf16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        pos = self._start(optimizer, scheduler, resume)
        # what losses are computed through (DDP when distributed)
        loss_of = distributed.wrap(self.model, self.device, self.task.unused_parameters)
        self.model.train()
        # a bar on rank 0's terminal only (disable=None: none when stderr is a file or a pipe)
        bar = tqdm(
            total=total, initial=pos.step, desc="train", unit="step", disable=None if self.dist.is_main else True
        )
        start, tokens, running = time.perf_counter(), 0, []
        stop = pos.step >= total
        while not stop:
            features = features_at(pos.epoch)
            batches = sampler(features, torch.Generator().manual_seed(cfg.seed + pos.epoch))
            while pos.batch < len(batches):
                group = batches[pos.batch : pos.batch + cfg.grad_accum]
                micro_batches = [
                    _to(collate([features[i] for i in idx[rank::world]], self.pad_id), self.device) for idx in group
                ]
                loss_sum = self._backward(loss_of, micro_batches)
                tokens += sum(int(b["attention_mask"].sum()) for b in micro_batches)
                if cfg.max_grad_norm > 0:
                    self.scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.scaler.step(optimizer)  # optimizer.step(), skipped when fp16 gradients overflowed
                self.scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                pos.batch += len(group)
                pos.step += 1
                running.append(loss_sum)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_sum:.4f}",
                    lr=f"{scheduler.get_last_lr()[0]:.2e}",
                    tok_s=f"{tokens / (time.perf_counter() - start):.0f}",
                )
                if pos.step % cfg.log_every == 0:
                    self._log(
                        {
                            "step": pos.step,
                            "epoch": pos.epoch + pos.batch / len(batches),
                            "loss": sum(running) / len(running),
                            "lr": scheduler.get_last_lr()[0],
                        }
                    )
                    running = []
                end_of_epoch = pos.batch >= len(batches)
                last = pos.step >= total
                if (cfg.eval_every and pos.step % cfg.eval_every == 0) or (end_of_epoch and not cfg.eval_every) or last:
                    stop = self._evaluate(pos, dev_features, dev_examples)
                if end_of_epoch:
                    pos.epoch, pos.batch = pos.epoch + 1, 0
                if end_of_epoch or stop or last or pos.step % cfg.checkpoint_every == 0:
                    self._checkpoint(optimizer, scheduler, pos)
                if last:
                    stop = True
                if stop or end_of_epoch:  # a new epoch draws a new batch order
                    break
        bar.close()
        if self.board is not None:
            self.board.close()
        if self.dist.is_main:
            self._plot()
        return pos.best_metrics

    def _start(self, optimizer, scheduler, resume: bool) -> Position:
        """The position to start from: the checkpoint's (weights, optimiser, scheduler and RNG states
        restored) when resuming, else the beginning."""
        if resume and self.state_path.is_file():
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if "scaler" in state and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            pos = Position(**state["position"])
            self._restore_rng(state, pos.step)
            if self.dist.is_main:
                log.info("resumed from %s at step %d (epoch %d)", self.state_path, pos.step, pos.epoch + 1)
                self._truncate_log(pos.step)
            return pos
        if not resume and self.dist.is_main:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        if self.dist.rank > 0:
            set_seed(_rank_seed(self.cfg.seed, self.dist.rank, 0))
        return Position()

    def _backward(self, loss_of, micro_batches: list[dict]) -> float:
        """Forward and backward over one optimiser step's micro-batches; the step's mean loss.

        The loss is normalised by what it averages over in the *whole* step (all micro-batches, all
        processes): per example for ordinary tasks, or by the task's own `loss_counts` (masked
        tokens and sentence pairs for pretraining). So the gradient is that of the mean over the
        global batch, however it is split into micro-batches and processes.
        """
        world = self.dist.world_size
        counts = [self.task.loss_counts(b) for b in micro_batches]
        keys = list(counts[0])
        totals = dict(zip(keys, distributed.all_reduce_sum([sum(c[k] for c in counts) for k in keys], self.device)))
        loss_sum = 0.0
        for i, batch in enumerate(micro_batches):
            # gradients are averaged over processes once, after the step's last micro-batch
            sync = world == 1 or i == len(micro_batches) - 1
            with nullcontext() if sync else loss_of.no_sync():
                with autocast(self.cfg.precision, self.device):
                    loss = loss_of(self.task.step_loss, batch, totals)
                if world > 1:
                    loss = loss * world  # DistributedDataParallel divides the summed gradients by `world`
                self.scaler.scale(loss).backward()
            loss_sum += loss.item()
        if world > 1:
            loss_sum = distributed.all_reduce_sum([loss_sum], self.device)[0] / world
        return loss_sum

    def _evaluate(self, pos, dev_features, dev_examples) -> bool:
        """Evaluate on rank 0 (the others wait); True when training should stop early."""
        stop = False
        if self.dist.is_main:
            stop = self._evaluate_main(pos, dev_features, dev_examples)
        return distributed.broadcast_flag(stop, self.device)

    def _evaluate_main(self, pos, dev_features, dev_examples) -> bool:
        if not dev_features:
            return False
        start = time.perf_counter()
        with autocast(self.cfg.precision, self.device):
            metrics = evaluate(
                self.model,
                self.task,
                dev_features,
                dev_examples,
                self.cfg.eval_batch_size,
                self.pad_id,
                self.device,
                progress=True,
            )
        self.model.train()
        self.last_metrics = metrics
        score = metrics[self.task.main_metric]
        self._log({"step": pos.step, "epoch": pos.epoch + 1, "dev": metrics})
        shown = [k for k, v in metrics.items() if isinstance(v, float)][:6]  # per-type NER keys go to the file
        seconds = time.perf_counter() - start
        log.info("step %d: dev %s (%.1f s)", pos.step, ", ".join(f"{k} {metrics[k]:.4f}" for k in shown), seconds)
        if pos.best is None or score > pos.best:
            pos.best, pos.best_metrics, pos.bad_evals = score, metrics, 0
            self.save_best(self.model, metrics)
            return False
        pos.bad_evals += 1
        if self.cfg.patience and pos.bad_evals >= self.cfg.patience:
            log.info("early stopping: %s has not improved for %d evaluations", self.task.main_metric, pos.bad_evals)
            return True
        return False

    def _checkpoint(self, optimizer, scheduler, pos) -> None:
        """Rank 0 writes weights, optimiser, scheduler, RNG states and the global position atomically.
        Every process's RNG state is kept, so a resume with the same number of processes is exact."""
        rngs = distributed.gather_objects(_rng_state(self.device))
        if not self.dist.is_main:
            return
        self.state_path.parent.mkdir(exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rngs[0],
            "position": dataclasses.asdict(pos),
        }
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        if len(rngs) > 1:
            state["rank_rng"] = rngs
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def _restore_rng(self, state: dict, step: int) -> None:
        rank, world = self.dist.rank, self.dist.world_size
        ranks = state.get("rank_rng") or [state["rng"]]
        if len(ranks) == world:
            _set_rng_state(ranks[rank], self.device)
            return
        # Another number of processes than the run that wrote the checkpoint: data order and
        # positions carry over exactly (they are global); only the dropout streams start afresh.
        _set_rng_state(state["rng"], self.device)
        if rank > 0:
            set_seed(_rank_seed(self.cfg.seed, rank, step))
        if self.dist.is_main:
            log.info(
                "resuming a %d-process checkpoint with %d processes: same data order and position, "
                "new dropout streams for ranks 1 and up",
                len(ranks),
                world,
            )

    def _truncate_log(self, step: int) -> None:
        """Drop records a killed run wrote after its last checkpoint: the resumed run writes them again."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.board is not None:
            self.board.write(record)

    def _plot(self) -> None:
        title = f"{self.out.resolve().name}: {self.task.name}"
        plot_metrics(self.out / "metrics.jsonl", self.out / "training.png", self.task.main_metric, title)
