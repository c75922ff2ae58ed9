"""Benchmark: the library function behind `bertkit benchmark`, GLUE or CLUE end to end.

For each model and each task found in DATA_DIR (under the official folder names, see
`bertkit.data.benchmarks`): fine-tune with the task's recipe once per seed (`bertkit.finetune`), score
the dev sets by the benchmark's rules, label the test sets with the best seed's model, and write

    OUTPUT/leaderboard.md, leaderboard.json   one row per model: the suite score, one column per task
    OUTPUT/MODEL/TASK/seed-N/                 the fine-tuned models (finetune's output)
    OUTPUT/MODEL/TASK/benchmark.json          the task's dev metrics per seed, written last
    OUTPUT/MODEL/submission/                  GLUE: CoLA.tsv, ...; CLUE: tnews11_predict.json, ...

A task whose benchmark.json exists is not run again; an unfinished one starts over.

Scores are on 0-100, as the leaderboards print them. A task with two metrics (MRPC and QQP: F1 and
accuracy; STS-B: Pearson and Spearman; MNLI: matched and mismatched accuracy) counts their mean, and
the suite score is the unweighted mean over the tasks run (the GLUE leaderboard's rule).

`budget` b in (0, 1] scales training: each task trains on a seeded random sample of ceil(b * N) of its
N training examples for the recipe's epochs, so its optimiser steps scale by b too. Dev and test sets
are always whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from bertkit.checkpoint import load_config
from bertkit.config import from_dict, option, required
from bertkit.data.benchmarks import LAYOUTS, Layout, folder_layout, get_layout, read_layout, split_file
from bertkit.errors import BertkitError, suggest
from bertkit.fetch import resolve_model
from bertkit.finetune import FinetuneConfig, finetune
from bertkit.inference import Loaded, load, run_examples
from bertkit.outputs import atomic_write_text, check_output_dir
from bertkit.tasks.classify import ClassifyTask

log = logging.getLogger("bertkit")

DONE = "benchmark.json"  # a task's final metrics; its presence means the task is finished


@dataclass(frozen=True)
class Recipe:
    """One task of a suite: how it is trained, scored and submitted."""

    name: str  # the leaderboard's column, e.g. MRPC
    layout: str  # the data preset, e.g. glue:mrpc
    metrics: tuple[str, ...]  # dev metrics; `split.metric` for another dev split (MNLI's mismatched)
    column: str  # what the column shows, e.g. F1/acc
    submissions: tuple[tuple[str, str, str], ...]  # (layout, test split, file the leaderboard takes)
    lr: float = 2e-5
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128


def _glue(name: str, metrics: tuple[str, ...], column: str, *more: tuple[str, str, str]) -> Recipe:
    """GLUE with the BERT paper's setup: batch 32, 3 epochs, 128 tokens (lr 2e-5, from the paper's
    {5e-5, 4e-5, 3e-5, 2e-5}, which it chose per task on dev)."""
    layout = f"glue:{name.lower()}"
    return Recipe(name, layout, metrics, column, ((layout, "test", f"{name}.tsv"), *more))


def _clue(name: str, submit: str, metrics=("accuracy",), column="acc", **recipe) -> Recipe:
    """CLUE with the settings of CLUE's BERT baseline scripts (run_classifier_TASK.sh)."""
    return Recipe(name, f"clue:{name}", metrics, column, ((f"clue:{name}", "test", submit),), **recipe)


SUITES: dict[str, tuple[Recipe, ...]] = {
    "glue": (
        _glue("CoLA", ("mcc",), "MCC"),
        _glue("SST-2", ("accuracy",), "acc"),
        _glue("MRPC", ("f1", "accuracy"), "F1/acc"),
        _glue("STS-B", ("pearson", "spearman"), "Pearson/Spearman"),
        _glue("QQP", ("f1", "accuracy"), "F1/acc"),
        dataclasses.replace(
            _glue("MNLI", ("accuracy", "dev_mismatched.accuracy"), "m/mm acc"),
            submissions=(
                ("glue:mnli", "test", "MNLI-m.tsv"),
                ("glue:mnli", "test_mismatched", "MNLI-mm.tsv"),
                ("glue:ax", "test", "AX.tsv"),  # GLUE's diagnostic set, labelled by the MNLI model
            ),
        ),
        _glue("QNLI", ("accuracy",), "acc"),
        _glue("RTE", ("accuracy",), "acc"),
        _glue("WNLI", ("accuracy",), "acc"),
    ),
    # File names of CLUE 1.1's submission examples.
    "clue": (
        _clue("tnews", "tnews11_predict.json", lr=3e-5, epochs=2, batch_size=16),
        _clue("iflytek", "iflytek_predict.json"),
        _clue("afqmc", "afqmc_predict.json", lr=3e-5, epochs=2, batch_size=16),
        _clue("cmnli", "cmnli_predict.json"),
        _clue("ocnli", "ocnli_50k_predict.json"),
        _clue("csl", "csl_predict.json", lr=1e-5, batch_size=4, max_length=256),
        _clue("cluener", "cluener_predict.json", ("f1",), "F1", lr=3e-5),
    ),
}


@dataclass
class BenchmarkConfig:
    suite: str = option("glue", "glue or clue", choices=tuple(SUITES))
    data_dir: str = required(
        "the folder that holds the tasks' folders as downloaded (GLUE: CoLA, SST-2, MRPC, ...; CLUE: tnews, ...)"
    )
    model: list[str] = required("pretrained model directories or fetched names, comma-separated: a row each")
    output: str = required("directory for the leaderboard, the fine-tuned models and the submission files")
    tasks: list[str] = option([], "only these tasks, e.g. mrpc,rte (default: every task found in --data-dir)")
    seeds: list[int] = option(
        [1], "fine-tune each task once per seed; the table shows mean ± std", at_least=0, at_most=2**32 - 1
    )
    budget: float = option(
        1.0,
        "share of each task's training examples to train on (a seeded sample; the steps scale with it)",
        above=0,
        at_most=1,
    )
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")


def benchmark(cfg: BenchmarkConfig) -> dict:
    """Run every task found for every model (finished tasks are kept); the leaderboard as a dict."""
    if not cfg.seeds:
        raise BertkitError("--seeds is empty; pass at least one seed, e.g. --seeds 1,2,3")
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise BertkitError(f"--data-dir {data_dir} is not a folder; give the folder that holds the task folders")
    models = {model: resolve_model(model) for model in cfg.model}
    out = check_output_dir(cfg.output, [data_dir, *models.values()], resume=True)
    names = [_slug(m) for m in models]
    if len(set(names)) != len(names):
        raise BertkitError(f"models {', '.join(cfg.model)} would share an output folder; give models distinct names")
    found = _found_tasks(cfg.suite, data_dir, cfg.tasks)
    rows = []
    for (model, model_dir), name in zip(models.items(), names):
        results = {r.name: _run_task(cfg, model, model_dir, r, data_dir, out / name) for r in found}
        rows.append({"model": model, **summarise(results, found)})
    table = {
        "suite": cfg.suite,
        "budget": cfg.budget,
        "seeds": cfg.seeds,
        "tasks": [r.name for r in found],
        "not_run": [r.name for r in SUITES[cfg.suite] if r not in found],
        "rows": rows,
    }
    atomic_write_text(out / "leaderboard.json", json.dumps(table, indent=2) + "\n")
    atomic_write_text(out / "leaderboard.md", markdown(table))
    return table


def _slug(model: str) -> str:
    return Path(model).name or model.strip("/").replace("/", "-")


def task_folder(data_dir: Path, layout: Layout) -> Path | None:
    """The task's folder in `data_dir`: its official name, case aside (CLUE's `NAME_public` too)."""
    return next((p for p in sorted(data_dir.iterdir()) if p.is_dir() and folder_layout(p) == layout), None)


def _found_tasks(suite: str, data_dir: Path, wanted: list[str]) -> list[Recipe]:
    """The suite's tasks to run: those asked for (each must be there), else every one found."""
    recipes = SUITES[suite]
    by_name = {r.name.lower(): r for r in recipes}
    for name in wanted:
        if name.lower() not in by_name:
            raise BertkitError(
                f"--tasks: `{name}` is not a {suite} task{suggest(name.lower(), by_name)}; "
                f"its tasks: {', '.join(r.name for r in recipes)}"
            )
    chosen = [by_name[n.lower()] for n in wanted] if wanted else list(recipes)
    found = [r for r in chosen if task_folder(data_dir, get_layout(r.layout)) is not None]
    missing = [r for r in chosen if r not in found]
    if (wanted and missing) or not found:
        folders = ", ".join(get_layout(r.layout).folder for r in missing)
        raise BertkitError(
            f"{data_dir}: no folder {folders}; unpack each task's download there under its official "
            "name (docs/benchmarks.md)"
        )
    return found


def _run_task(cfg: BenchmarkConfig, model: str, model_dir: Path, recipe: Recipe, data_dir: Path, out: Path) -> dict:
    """A task's result ({"seeds": {seed: {metric: value}}, ...}): read from its benchmark.json, or
    fine-tuned, scored and submitted now."""
    task_dir = out / recipe.name
    settings = {"model": model, "budget": cfg.budget, "seeds": cfg.seeds, "recipe": dataclasses.asdict(recipe)}
    done = task_dir / DONE
    if done.is_file():
        result = json.loads(done.read_text(encoding="utf-8"))
        if result["settings"] != json.loads(json.dumps(settings)):
            raise BertkitError(
                f"{done} was run with other settings ({json.dumps(result['settings'])}); pass the same "
                "--model, --budget and --seeds, or another --output"
            )
        log.info("%s %s: finished earlier, kept (%s)", model, recipe.name, done)
        return result
    layout = get_layout(recipe.layout)
    folder = task_folder(data_dir, layout)
    assert folder is not None  # _found_tasks kept only tasks with a folder
    train, dev = (_need(folder, layout, split) for split in ("train", "dev"))
    total = len(read_layout(train, layout)[0])
    limit = train_limit(cfg.budget, total)
    max_length = min(recipe.max_length, load_config(model_dir).max_position_embeddings)
    log.info(
        "%s %s: %d of %d training examples, lr %g, %d epochs, batch %d, %d tokens",
        model, recipe.name, limit or total, total, recipe.lr, recipe.epochs, recipe.batch_size, max_length,
    )  # fmt: skip
    job = {
        "task": layout.task,
        "model": model,
        "format": layout.name if layout.task != "ner" else None,  # ner reads CLUENER's JSON itself
        "train": {"data": str(train), "lr": recipe.lr, "epochs": recipe.epochs, "batch_size": recipe.batch_size},
        "dev": str(dev),
        "output": str(task_dir),
        "max_length": max_length,
        "train_examples": limit,
        "seeds": cfg.seeds,
        "overwrite": True,  # an unfinished task starts over
        "device": cfg.device,
    }
    finetune(from_dict(FinetuneConfig, job, "bertkit benchmark"))
    seeds = {}
    for seed in cfg.seeds:
        seed_dir = task_dir / f"seed-{seed}"
        dev_metrics = json.loads((seed_dir / "metrics.json").read_text(encoding="utf-8"))
        seeds[str(seed)] = _scores(recipe, layout, folder, dev_metrics, seed_dir, cfg.device)
    best = max(seeds, key=lambda s: statistics.mean(seeds[s].values()))
    submitted = _submit(recipe, data_dir, task_dir / f"seed-{best}", out / "submission", cfg.device)
    result = {
        "task": recipe.name,
        "settings": settings,
        "seeds": seeds,
        "submitted_from_seed": best,
        "files": submitted,
    }
    atomic_write_text(done, json.dumps(result, indent=2) + "\n")
    return result


def train_limit(budget: float, total: int) -> int | None:
    """How many of `total` training examples a budget trains on: ceil(budget * total), at least one;
    None (all of them) for budget 1."""
    return max(1, math.ceil(budget * total)) if budget < 1 else None


def _need(folder: Path, layout: Layout, split: str) -> Path:
    path = split_file(folder, layout, split)
    if path is None:
        raise BertkitError(
            f"{folder}: no {split} file ({' or '.join(layout.files[split])}); the task's folder must hold "
            "its files as the download unpacks them"
        )
    return path


def _scores(recipe: Recipe, layout: Layout, folder: Path, dev_metrics: dict, model_dir: Path, device) -> dict:
    """The recipe's metrics for one seed: from finetune's dev metrics, and other dev splits scored here."""
    scores, run = {}, None
    for key in recipe.metrics:
        split, _, metric = key.rpartition(".")
        if not split:
            scores[key] = dev_metrics[metric]
            continue
        run = run or load(model_dir, device=device)
        task = _reading(run, layout)
        path = _need(folder, layout, split)
        examples = task.read(str(path))
        task.check(examples, str(path))
        scores[key] = task.metrics(run_examples(run, examples), examples)[metric]
    return scores


def _reading(run: Loaded, layout: Layout):
    """The run's task, reading files in `layout` (classify and regression; ner reads CLUENER itself)."""
    task = run.fine_tuned
    if isinstance(task, ClassifyTask):
        task.layout = layout
    return task


def _submit(recipe: Recipe, data_dir: Path, model_dir: Path, out: Path, device) -> list[str]:
    """The test sets' predictions as the leaderboard takes them; a missing test file is skipped."""
    run, written = load(model_dir, device=device), []
    for name, split, file_name in recipe.submissions:
        layout = LAYOUTS[name]
        folder = task_folder(data_dir, layout)
        path = split_file(folder, layout, split) if folder is not None else None
        if path is None:
            log.info("%s: no %s file for %s in %s, so no %s", recipe.name, split, name, data_dir, file_name)
            continue
        examples = _reading(run, layout).read_inputs(str(path))
        predictions = run_examples(run, examples)
        ids = [r["id"] for _, r in read_layout(path, layout, labelled=False)[0]]
        if len(ids) != len(predictions):
            raise BertkitError(f"{path}: {len(ids)} ids for {len(predictions)} examples; check the file's blank lines")
        rows = [(i if i is not None else n, _answer(p)) for n, (i, p) in enumerate(zip(ids, predictions))]
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / file_name, submission_text(file_name, rows))
        written.append(file_name)
    return written


def _answer(prediction: dict):
    """What a leaderboard takes for one prediction: a label, a score, or CLUENER's entity map."""
    if "entities" in prediction:  # {type: {text: [[start, end]]}}, end inclusive
        entities: dict[str, dict[str, list]] = {}
        for e in prediction["entities"]:
            entities.setdefault(e["type"], {}).setdefault(e["text"], []).append([e["start"], e["end"] - 1])
        return entities
    if "score" in prediction:
        return round(prediction["score"], 3)
    return prediction["label"]


def submission_text(file_name: str, rows: list[tuple]) -> str:
    """GLUE: a TSV with `index<TAB>prediction`; CLUE: JSON lines with `id` and `label`."""
    if file_name.endswith(".tsv"):
        return "index\tprediction\n" + "".join(f"{i}\t{answer}\n" for i, answer in rows)
    return "".join(json.dumps({"id": _as_int(i), "label": answer}, ensure_ascii=False) + "\n" for i, answer in rows)


def _as_int(value):
    return int(value) if isinstance(value, str) and value.isdigit() else value


# --- scores and the table ---------------------------------------------------------------------------
def task_score(metrics: dict[str, float]) -> float:
    """A task's score: the mean of its metrics (MRPC: F1 and accuracy)."""
    return statistics.mean(metrics.values())


def suite_score(tasks: dict[str, dict[str, float]]) -> float:
    """The suite's score: the unweighted mean of the task scores."""
    return statistics.mean(task_score(m) for m in tasks.values())


def _mean_std(values: list[float]) -> dict:
    """Mean and std (0 for one seed) on 0-100."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": 100 * statistics.mean(values), "std": 100 * std}


def summarise(results: dict[str, dict], recipes: list[Recipe]) -> dict:
    """A model's row: the suite score and each task's metrics, mean and std over seeds (0-100)."""
    seeds = list(next(iter(results.values()))["seeds"])
    per_seed = [{name: r["seeds"][s] for name, r in results.items()} for s in seeds]
    tasks = {}
    for recipe in recipes:
        runs = [run[recipe.name] for run in per_seed]
        tasks[recipe.name] = {
            "score": _mean_std([task_score(r) for r in runs]),
            **{key: _mean_std([r[key] for r in runs]) for key in recipe.metrics},
        }
    return {"score": _mean_std([suite_score(run) for run in per_seed]), "tasks": tasks}


def markdown(table: dict) -> str:
    """The leaderboard as a Markdown table, with a line on how it was made."""
    recipes = {r.name: r for r in SUITES[table["suite"]]}
    names = table["tasks"]
    header = ["model", f"{table['suite'].upper()} score"] + [f"{n} ({recipes[n].column})" for n in names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table["rows"]:
        cells = [row["model"], _cell(row["score"])]
        cells += [" / ".join(_cell(row["tasks"][n][k]) for k in recipes[n].metrics) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, table["seeds"]))
    note = (
        f"\nDev sets, mean ± std over seeds {seeds}, budget {table['budget']:g}. A task with two metrics "
        "counts their mean; the score is the unweighted mean over the tasks in the table."
    )
    if table["not_run"]:
        note += f" Not run (not asked for, or no folder in the data directory): {', '.join(table['not_run'])}."
    return "\n".join(lines) + "\n" + note + "\n"


def _cell(value: dict) -> str:
    return f"{value['mean']:.1f} ± {value['std']:.1f}"
