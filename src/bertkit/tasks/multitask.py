"""Multi-task learning: one shared encoder, one head per task, batches drawn from the tasks in turn.

`MultiTask` composes ordinary tasks (classify, regression, ner, qa); it subclasses none of them. Each
batch holds features of one task only (their targets differ in shape), and the task's own loss runs
on its own head. How often each task is drawn:
- `proportional`: every batch of every task once per epoch, in a random interleaving, so a task is
  drawn in proportion to its size (Liu et al. 2019, MT-DNN);
- `temperature`: task i is drawn with probability n_i^(1/T) / sum_j n_j^(1/T) (T=1 is proportional,
  larger T moves toward uniform, which helps small tasks; Arivazhagan et al. 2019). A task drawn
  more often than it has batches starts another pass over its (reshuffled) data.

Features carry `task` (the task's index) and `example` (an index into the combined example list);
the model is a `MultiTaskModel` whose heads are the tasks' own models sharing one `bert`.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from bertkit.data.collate import length_grouped_batches
from bertkit.errors import BertkitError
from bertkit.tasks import Task

SAMPLING = ("proportional", "temperature")


class MultiTaskModel(nn.Module):
    """`heads[name]` is a complete single-task model (e.g. BertForSequenceClassification) whose
    `bert` is this model's `bert`, so each head can be saved and served on its own."""

    def __init__(self, heads: dict[str, nn.Module]):
        super().__init__()
        first = next(iter(heads.values()))
        self.bert = first.bert
        for head in heads.values():
            head.bert = self.bert  # share: one encoder, trained by every task's batches
        self.heads = nn.ModuleDict(heads)


class MultiTask(Task):
    name = "multitask"
    main_metric = "score"  # the mean of the tasks' main metrics
    unused_parameters = True  # a batch trains one head: the others get no gradient in that step

    def __init__(self, tasks: dict, sampling: str = "proportional", temperature: float = 2.0):
        if sampling not in SAMPLING:
            raise BertkitError(f"unknown sampling `{sampling}`; use one of: {', '.join(SAMPLING)}")
        if not tasks:
            raise BertkitError("a multi-task run needs at least one task under `tasks:`")
        self.tasks, self.names = dict(tasks), list(tasks)
        self.sampling, self.temperature = sampling, temperature

    @property
    def default_max_length(self) -> int:  # type: ignore[override]
        return max(t.default_max_length for t in self.tasks.values())

    def state(self) -> dict:
        return {
            "task": self.name,
            "tasks": {name: t.state() for name, t in self.tasks.items()},
            "sampling": self.sampling,
            "temperature": self.temperature,
        }

    # Examples are the tasks' own, tagged with the task's index.
    def tag(self, name: str, examples: list[dict]) -> list[dict]:
        index = self.names.index(name)
        return [{**e, "task": index} for e in examples]

    def _split(self, items: list[dict]) -> list[list[int]]:
        """Indices of `items` per task."""
        parts: list[list[int]] = [[] for _ in self.names]
        for i, item in enumerate(items):
            parts[item["task"]].append(i)
        return parts

    def featurize(self, examples: list[dict], tokenizer, max_length: int) -> list[dict]:
        features = []
        for t, indices in enumerate(self._split(examples)):
            sub = self.tasks[self.names[t]].featurize([examples[i] for i in indices], tokenizer, max_length)
            features += [{**f, "example": indices[f["example"]], "task": t} for f in sub]
        return features

    def build_model(self, config) -> MultiTaskModel:
        return MultiTaskModel({name: task.build_model(config) for name, task in self.tasks.items()})

    def train_batches(
        self, features: list[dict], batch_size: int, g: torch.Generator, lengths: list[int] | None = None
    ) -> list[list[int]]:
        """One epoch of single-task batches (as many as the tasks have in all), drawn as configured."""
        per_task = []
        for indices in self._split(features):
            lengths = [len(features[i]["input_ids"]) for i in indices]
            per_task.append([[indices[j] for j in b] for b in length_grouped_batches(lengths, batch_size, g)])
        sizes = torch.tensor([len(b) for b in per_task], dtype=torch.double)
        order: list[int]
        if self.sampling == "proportional":
            tasks = torch.cat([torch.full((len(b),), t) for t, b in enumerate(per_task)])
            order = tasks[torch.randperm(len(tasks), generator=g)].tolist()
        else:
            weights = sizes ** (1.0 / self.temperature)
            order = torch.multinomial(weights, int(sizes.sum()), replacement=True, generator=g).tolist()
        batches, used = [], [0] * len(per_task)
        for t in order:
            if used[t] == len(per_task[t]):  # drawn more often than it has batches: go round again
                perm = torch.randperm(len(per_task[t]), generator=g).tolist()
                per_task[t], used[t] = [per_task[t][i] for i in perm], 0
            batches.append(per_task[t][used[t]])
            used[t] += 1
        return batches

    def _task_of(self, batch) -> tuple[str, object]:
        t = int(batch["task"][0])
        return self.names[t], self.tasks[self.names[t]]

    def loss(self, model, batch):
        name, task = self._task_of(batch)
        return task.loss(model.heads[name], batch)

    def forward(self, model, batch):
        name, task = self._task_of(batch)
        return int(batch["task"][0]), task.forward(model.heads[name], batch)

    def decode(self, outputs, features, examples) -> list[dict]:
        """Each task decodes its own outputs; predictions come back in the combined example order."""
        predictions: list[dict | None] = [None] * len(examples)
        example_parts = self._split(examples)
        for t, name in enumerate(self.names):
            local = {g: i for i, g in enumerate(example_parts[t])}
            sub_outputs = [out for task_index, out in outputs if task_index == t]
            sub_features = [{**f, "example": local[f["example"]]} for f in features if f["task"] == t]
            sub_examples = [examples[i] for i in example_parts[t]]
            if not sub_examples:
                continue
            for g, p in zip(example_parts[t], self.tasks[name].decode(sub_outputs, sub_features, sub_examples)):
                predictions[g] = {"task": name, **p}
        return [p if p is not None else {} for p in predictions]

    def metrics(self, predictions, examples) -> dict[str, float]:
        """`{task}.{metric}` for every task, and `score`, the mean of the tasks' main metrics, each on a
        0-1 scale (SQuAD's EM and F1 are percentages: they count /100 in the score)."""
        out, mains = {}, []
        for t, indices in enumerate(self._split(examples)):
            if not indices:
                continue
            task = self.tasks[self.names[t]]
            sub = task.metrics([predictions[i] for i in indices], [examples[i] for i in indices])
            out.update({f"{self.names[t]}.{k}": v for k, v in sub.items() if isinstance(v, (int, float))})
            mains.append(sub[task.main_metric] / task.metric_scale)
        out["score"] = statistics.mean(mains)
        return out

    def pretrained_target(self, model: nn.Module) -> nn.Module:
        assert isinstance(model, MultiTaskModel)
        return model.heads[self.names[0]]  # its `bert` is every head's

    def parts(self, model: nn.Module, metrics: dict) -> list:
        assert isinstance(model, MultiTaskModel)
        split = self.per_task(metrics)
        return [(name, self.tasks[name], model.heads[name], split[name]) for name in self.names]

    def per_task(self, metrics: dict) -> dict[str, dict]:
        """Split `{task}.{metric}` keys back into one dict per task."""
        return {
            name: {k.split(".", 1)[1]: v for k, v in metrics.items() if k.startswith(name + ".")} for name in self.names
        }
