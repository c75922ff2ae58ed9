"""The one training loop. Nothing here knows about labels, spans or BERT's heads: a task supplies the
loss, the predictions and the metrics (see `bertkit.tasks`).

Exact resume: the batch order of epoch e is drawn from a generator seeded with `seed + e`, and a
checkpoint (weights, optimiser, scheduler, RNG states, epoch and batch position) is written
atomically at optimiser-step boundaries, so a killed run resumed with `resume=True` takes exactly
the steps an uninterrupted run would have taken.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bertkit.config import option
from bertkit.data.collate import collate, length_grouped_batches, sorted_batches
from bertkit.train.optim import build_optimizer, linear_schedule

log = logging.getLogger("bertkit")


@dataclass
class TrainConfig:
    data: str | None = option(None, "training data: a file or a fetched name such as mr:train")
    epochs: int = option(3, "passes over the training data")
    batch_size: int = option(32, "examples per optimiser step (split into micro-batches by grad_accum)")
    grad_accum: int = option(1, "micro-batches per optimiser step")
    eval_batch_size: int = option(64, "examples per forward pass when evaluating")
    lr: float = option(5e-5, "peak learning rate")
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    warmup: float = option(0.1, "share of the steps spent warming the learning rate up from 0")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    eval_every: int = option(0, "evaluate every N optimiser steps (0: at the end of every epoch)")
    patience: int = option(0, "stop after N evaluations without improvement (0: never stop early)")
    checkpoint_every: int = option(200, "write a resumable checkpoint every N optimiser steps")
    seed: int = option(42, "seed for initialisation, dropout and data order")
    log_every: int = option(20, "log the training loss every N optimiser steps")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """RNG states as tensors and plain numbers, so the checkpoint loads with `weights_only=True`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    return {"python": [version, torch.tensor(py_state), py_gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state.tolist()), py_gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def predict(model, task, features: list[dict], examples: list[dict], batch_size: int = 64,
            pad_id: int = 0, device="cpu", progress: bool = False) -> list[dict]:
    """The task's predictions for `examples` (features run longest first, results put back in order)."""
    was_training = model.training
    model.eval()
    groups = [f["task"] for f in features] if features and "task" in features[0] else None
    batches = sorted_batches([len(f["input_ids"]) for f in features], batch_size, groups)
    order, outputs = [], []
    for idx in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
        outputs.append(task.forward(model, _to(collate([features[i] for i in idx], pad_id), device)))
        order += idx
    model.train(was_training)
    return task.decode(outputs, [features[i] for i in order], examples)


def evaluate(model, task, features, examples, batch_size=64, pad_id=0, device="cpu") -> dict[str, float]:
    return task.metrics(predict(model, task, features, examples, batch_size, pad_id, device), examples)


class Trainer:
    """Runs `cfg` on (model, task, data) and writes into `out_dir`:
    metrics.jsonl (every logged step and evaluation), metrics.json (the best dev metrics),
    training.png, checkpoint/ (the last resumable state) and, through `save_best`, the best model."""

    def __init__(self, model, task, cfg: TrainConfig, out_dir: str | Path, save_best, pad_id: int = 0,
                 device: str | torch.device = "cpu"):
        self.model, self.task, self.cfg = model.to(device), task, cfg
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.save_best, self.pad_id, self.device = save_best, pad_id, torch.device(device)
        self.state_path = self.out / "checkpoint" / "state.pt"

    def fit(self, train_features, dev_features, dev_examples, resume: bool = False,
            stop_after_steps: int | None = None) -> dict:
        cfg = self.cfg
        micro = max(1, cfg.batch_size // cfg.grad_accum)
        lengths = [len(f["input_ids"]) for f in train_features]
        # A task may order its own batches (multi-task sampling); the default groups by length.
        def sampler(g: torch.Generator) -> list[list[int]]:
            if hasattr(self.task, "train_batches"):
                return self.task.train_batches(train_features, micro, g)
            return length_grouped_batches(lengths, micro, g)

        batches_per_epoch = len(sampler(torch.Generator().manual_seed(cfg.seed)))
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
        total = steps_per_epoch * cfg.epochs
        optimizer = build_optimizer(self.model, cfg.lr, cfg.weight_decay)
        scheduler = linear_schedule(optimizer, int(cfg.warmup * total), total)
        pos = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_metrics": {}, "bad_evals": 0}
        if resume and self.state_path.is_file():
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
            pos = state["position"]
            log.info("resumed from %s at step %d (epoch %d)", self.state_path, pos["step"], pos["epoch"] + 1)
            self._truncate_log(pos["step"])
        elif not resume:
            (self.out / "metrics.jsonl").unlink(missing_ok=True)
        self.model.train()
        bar = tqdm(total=total, initial=pos["step"], desc="train", unit="step")
        start, tokens, running = time.perf_counter(), 0, []
        stop = False
        while pos["epoch"] < cfg.epochs and not stop:
            g = torch.Generator().manual_seed(cfg.seed + pos["epoch"])
            batches = sampler(g)
            while pos["batch"] < len(batches):
                group = batches[pos["batch"]: pos["batch"] + cfg.grad_accum]
                n_examples = sum(len(b) for b in group)
                loss_sum = 0.0
                for idx in group:  # gradient accumulation: losses weighted by micro-batch size
                    batch = _to(collate([train_features[i] for i in idx], self.pad_id), self.device)
                    loss = self.task.loss(self.model, batch) * (len(idx) / n_examples)
                    loss.backward()
                    loss_sum += loss.item()
                    tokens += int(batch["attention_mask"].sum())
                if cfg.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                pos["batch"] += len(group)
                pos["step"] += 1
                running.append(loss_sum)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                                tok_s=f"{tokens / (time.perf_counter() - start):.0f}")
                if pos["step"] % cfg.log_every == 0:
                    self._log({"step": pos["step"], "epoch": pos["epoch"] + pos["batch"] / len(batches),
                               "loss": sum(running) / len(running), "lr": scheduler.get_last_lr()[0]})
                    running = []
                end_of_epoch = pos["batch"] >= len(batches)
                if (cfg.eval_every and pos["step"] % cfg.eval_every == 0) or (end_of_epoch and not cfg.eval_every):
                    stop = self._evaluate(pos, dev_features, dev_examples)
                if end_of_epoch:
                    pos["epoch"], pos["batch"] = pos["epoch"] + 1, 0
                if end_of_epoch or stop or pos["step"] % cfg.checkpoint_every == 0:
                    self._checkpoint(optimizer, scheduler, pos)
                if stop or (stop_after_steps is not None and pos["step"] >= stop_after_steps):
                    stop = True
                if stop or end_of_epoch:  # a new epoch draws a new batch order
                    break
        bar.close()
        self._plot()
        return pos["best_metrics"]

    def _evaluate(self, pos, dev_features, dev_examples) -> bool:
        metrics = evaluate(self.model, self.task, dev_features, dev_examples, self.cfg.eval_batch_size,
                           self.pad_id, self.device)
        self.model.train()
        score = metrics[self.task.main_metric]
        self._log({"step": pos["step"], "epoch": pos["epoch"] + 1, "dev": metrics})
        shown = [k for k, v in metrics.items() if isinstance(v, float)][:6]  # per-type NER keys go to the file
        log.info("step %d: dev %s", pos["step"], ", ".join(f"{k} {metrics[k]:.4f}" for k in shown))
        if pos["best"] is None or score > pos["best"]:
            pos.update(best=score, best_metrics=metrics, bad_evals=0)
            self.save_best(self.model, metrics)
            return False
        pos["bad_evals"] += 1
        if self.cfg.patience and pos["bad_evals"] >= self.cfg.patience:
            log.info("early stopping: %s has not improved for %d evaluations", self.task.main_metric,
                     pos["bad_evals"])
            return True
        return False

    def _checkpoint(self, optimizer, scheduler, pos) -> None:
        self.state_path.parent.mkdir(exist_ok=True)
        tmp = self.state_path.with_name(".state.pt.tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(), "position": dict(pos)}, tmp)
        os.replace(tmp, self.state_path)

    def _truncate_log(self, step: int) -> None:
        """Drop records a killed run wrote after its last checkpoint: the resumed run writes them again."""
        path = self.out / "metrics.jsonl"
        if path.is_file():
            keep = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in keep))

    def _log(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _plot(self) -> None:
        from bertkit.train.plot import plot_metrics

        plot_metrics(self.out / "metrics.jsonl", self.out / "training.png", self.task.main_metric)
