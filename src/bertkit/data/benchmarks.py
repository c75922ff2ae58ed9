"""GLUE, CLUE, LCQMC and IMDB as their downloads ship them, read into the records the tasks read.

`LAYOUTS` is one table: per preset (`glue:mrpc`, `clue:tnews`, `lcqmc`, `imdb`) the official folder
name, the task that learns it, the file of each split, and which column or field holds the text, the
second text, the label and (in test files) the id a leaderboard wants back. `read_layout` follows it
and returns records with `text`, `text_b`, `label` and `id`, what `classify` and `regression` read.
A field mapping (`--text-field sentence1 --label-field gold_label`) is a layout too, over any
TSV/CSV/JSONL file.

The quirks live in the table, not in code per task:
- TSV files are split on tabs with no quote handling: MNLI and QQP hold unbalanced quotes that a CSV
  reader would merge across lines;
- a TSV file whose first line does not name the text column has no header and is read with the
  layout's `names` (CoLA's train and dev files; LCQMC ships both ways);
- QQP's train file has rows with missing fields (`ragged`): skipped and counted;
- NLI sets mark an example without a gold label with `-` (`no_label`): skipped and counted;
- CSL's `keyword` is a list, joined with spaces into the first text, as CLUE's baseline does;
- IMDB is folders, `pos/` and `neg/` with one review a file; `<br />` is read as a space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.data.readers import json_records, read_lines, read_records
from bertkit.errors import BertkitError, suggest
from bertkit.fetch import resolve_data
from bertkit.outputs import content_hash

log = logging.getLogger("bertkit")

KINDS = ("tsv", "jsonl", "folders", "records")  # records: any file `read_records` reads, by extension


@dataclass(frozen=True)
class Layout:
    """Where a data set's splits are and which columns hold what."""

    name: str
    task: str = "classify"  # classify, regression, or ner (CLUENER: the ner task reads its JSON itself)
    folder: str = ""  # the official download's folder (GLUE: MRPC; CLUE: tnews)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> file names, the first found
    kind: str = "records"
    text: str = "text"
    text_b: str | None = "text_b"
    label: str = "label"
    id: str | None = None  # the column of the id a test file's predictions are submitted with
    names: tuple[str, ...] = ()  # the columns of a TSV file without a header
    no_label: tuple[str, ...] = ()  # gold labels that mean "annotators did not agree": skipped
    ragged: bool = False  # rows with fewer fields than the header are skipped, not an error

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)


def _glue(folder: str, text: str, text_b: str | None, label: str, **extra) -> Layout:
    """A GLUE task: TSV files named train/dev/test.tsv in the folder GLUE's download script makes."""
    files = {"train": ("train.tsv",), "dev": ("dev.tsv",), "test": ("test.tsv",), **extra.pop("files", {})}
    given = dict(folder=folder, files=files, kind="tsv", text=text, text_b=text_b, label=label, id="index")
    return Layout(name=f"glue:{folder.lower()}", **{**given, **extra})


def _clue(folder: str, text: str, text_b: str | None, **extra) -> Layout:
    """A CLUE task: JSON lines named train/dev/test.json, the ids of test examples in `id`."""
    files = {"train": ("train.json",), "dev": ("dev.json",), "test": ("test.json",), **extra.pop("files", {})}
    given = dict(folder=folder, files=files, kind="jsonl", text=text, text_b=text_b, label="label", id="id")
    return Layout(name=f"clue:{folder}", **{**given, **extra})


_MNLI_FILES = {
    "dev": ("dev_matched.tsv",),
    "dev_mismatched": ("dev_mismatched.tsv",),
    "test": ("test_matched.tsv",),
    "test_mismatched": ("test_mismatched.tsv",),
}
_TEXT_FILES: dict[str, tuple[str, ...]] = {
    "train": ("train.tsv", "train.txt"),
    "dev": ("dev.tsv", "dev.txt"),
    "test": ("test.tsv", "test.txt"),
}

LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        _glue("CoLA", "sentence", None, "label", names=("source", "label", "original_label", "sentence")),
        _glue("SST-2", "sentence", None, "label"),
        _glue("MRPC", "#1 String", "#2 String", "Quality"),
        _glue("STS-B", "sentence1", "sentence2", "score", task="regression"),
        _glue("QQP", "question1", "question2", "is_duplicate", id="id", ragged=True),
        _glue("MNLI", "sentence1", "sentence2", "gold_label", files=_MNLI_FILES, no_label=("-",)),
        _glue("QNLI", "question", "sentence", "label"),
        _glue("RTE", "sentence1", "sentence2", "label"),
        _glue("WNLI", "sentence1", "sentence2", "label"),
        # GLUE's diagnostic set (AX): test pairs only, labelled by the MNLI model
        Layout(
            name="glue:ax",
            folder="diagnostic",
            files={"test": ("diagnostic.tsv",)},
            kind="tsv",
            text="sentence1",
            text_b="sentence2",
            id="index",
        ),
        _clue("tnews", "sentence", None),
        _clue("iflytek", "sentence", None),
        _clue("afqmc", "sentence1", "sentence2"),
        _clue("cmnli", "sentence1", "sentence2", no_label=("-",)),
        _clue("ocnli", "sentence1", "sentence2", files={"train": ("train.50k.json", "train.json")}, no_label=("-",)),
        _clue("csl", "keyword", "abst", files={"dev": ("dev.json", "val.json")}),
        _clue("cluener", "text", None, task="ner"),
        Layout(
            name="lcqmc",
            folder="lcqmc",
            files=_TEXT_FILES,
            kind="tsv",
            text="text_a",
            names=("text_a", "text_b", "label"),
        ),
        # IMDB has no dev split: its test folder serves as dev, as in most reports
        Layout(
            name="imdb",
            folder="aclImdb",
            files={"train": ("train",), "dev": ("test",), "test": ("test",)},
            kind="folders",
            text_b=None,
        ),
    )
}


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise BertkitError(
            f"unknown --format `{name}`{suggest(name, LAYOUTS)}; the presets: {', '.join(LAYOUTS)} "
            "(or name the columns with --text-field, --text-b-field and --label-field)"
        )
    return LAYOUTS[name]


def choose_layout(
    preset: str | None,
    text_field: str | None = None,
    text_b_field: str | None = None,
    label_field: str | None = None,
    data: str | None = None,
) -> Layout | None:
    """The layout a run reads with: the preset, else the one whose official folder `data` is, else a
    field mapping; the field options override a preset's columns. None: files are read as they are."""
    layout = get_layout(preset) if preset else folder_layout(Path(data)) if data and Path(data).is_dir() else None
    if layout is None:
        if not (text_field or text_b_field or label_field):
            return None
        layout = Layout("fields")
    return dataclasses.replace(
        layout,
        text=text_field or layout.text,
        text_b=text_b_field or layout.text_b,
        label=label_field or layout.label,
    )


def data_in(preset: str | None, data: str, split: str) -> tuple[Layout | None, str]:
    """`bertkit evaluate` / `predict --format PRESET`: the layout (a task's folder picks its preset too)
    and the data file to read."""
    layout = choose_layout(preset, data=data)
    return layout, data if layout is None else str(locate(data, split, layout))


def read_through(task, layout: Layout | None) -> None:
    """Make a loaded classify or regression task read its data through `layout`."""
    if layout is None:
        return
    if not hasattr(task, "layout") or layout.task != task.name:
        raise BertkitError(
            f"--format {layout.name} is data for task {layout.task}; this model was fine-tuned for {task.name}"
        )
    task.layout = layout


def folder_layout(folder: Path) -> Layout | None:
    """The layout whose official folder name `folder` has (case aside; CLUE's `tnews_public` too)."""
    name = folder.resolve().name.lower().removesuffix("_public")
    return next((layout for layout in LAYOUTS.values() if layout.folder.lower() == name), None)


def locate(spec: str, split: str, layout: Layout | None) -> Path:
    """The data of `split`: a file as given; a task's folder -> the layout's file for the split (IMDB:
    its split folder); anything else is a fetched name (`mr:dev`)."""
    path = Path(spec).expanduser()
    if layout is None or not path.is_dir():
        return resolve_data(spec, split)
    if layout.kind == "folders" and any((path / label).is_dir() for label in ("pos", "neg")):
        return path  # already a split folder: aclImdb/train
    found = split_file(path, layout, split)
    if found is None:
        wanted = " or ".join(layout.files.get(split, ()) or ("(none)",))
        raise BertkitError(
            f"{path}: no {split} data for {layout.name} (looked for {wanted}); point at the folder as the "
            "download unpacks it, or give the file itself"
        )
    return found


def split_file(folder: Path, layout: Layout, split: str) -> Path | None:
    """The first of the layout's file names for `split` that exists in `folder`; None if none does."""
    return next((folder / n for n in layout.files.get(split, ()) if (folder / n).exists()), None)


def data_hash(path: Path) -> str:
    """sha256 of a data file, or of a folder's files (names and contents): what `--resume` compares."""
    if not path.is_dir():
        return content_hash(path)
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(f"{p.relative_to(path).as_posix()}\0{content_hash(p)}\n".encode())
    return digest.hexdigest()


def read_layout(path: str | Path, layout: Layout, labelled: bool = True) -> tuple[list[tuple[int, dict]], Counter]:
    """(line number, {"text", "text_b", "label", "id"}) for every example of a file (a folder for
    IMDB), and the count of rows skipped, by reason. Test files (`labelled=False`) need no label."""
    p = Path(path)
    if layout.kind == "folders":
        return _read_folders(p, labelled), Counter()
    skipped: Counter = Counter()
    if layout.kind == "tsv":
        rows = _tsv_rows(p, layout, skipped)
    elif layout.kind == "jsonl":
        rows = json_records(p, example=_json_example(layout))
    else:
        rows = read_records(p)
    records = []
    for number, row in rows:
        record = _standard(row, layout, f"{p}, line {number}", labelled)
        if labelled and record["label"] in layout.no_label:
            skipped[f"gold label {record['label']!r}"] += 1
            continue
        records.append((number, record))
    for reason, n in skipped.items():
        log.info("%s: skipped %d rows (%s)", p, n, reason)
    return records, skipped


def _json_example(layout: Layout) -> str:
    b = f', "{layout.text_b}": "..."' if layout.text_b else ""
    return f'{{"{layout.text}": "..."{b}, "{layout.label}": "..."}}'


def _tsv_rows(p: Path, layout: Layout, skipped: Counter):
    """(line number, {column: value}); the header is the first line when it names the text column."""
    lines = [(n, line) for n, line in read_lines(p) if line.strip()]
    if not lines:
        raise BertkitError(f"{p} is empty: expected {layout.name} data, one example a line")
    first = lines[0][1].split("\t")
    if layout.text in first:
        header, body = first, lines[1:]
    elif layout.names:
        header, body = list(layout.names), lines
    else:
        raise BertkitError(
            f"{p}, line 1: the header ({', '.join(first)}) has no `{layout.text}` column, which "
            f"{layout.name} keeps the text in; check --format, or name the column with --text-field"
        )
    for number, line in body:
        row = line.split("\t")
        if len(row) < len(header) and layout.ragged:
            skipped["missing fields"] += 1
            continue
        if len(row) != len(header):
            raise BertkitError(
                f"{p}, line {number}: {len(row)} fields but {len(header)} columns ({', '.join(header)}); "
                f"is this a {layout.name} file? A tab inside a text splits it"
            )
        yield number, dict(zip(header, row))


def _standard(row: dict, layout: Layout, where: str, labelled: bool) -> dict:
    """A row's text, text_b, label and id under the names the tasks read."""

    def value(column: str | None, flag: str, needed: bool = True) -> str | None:
        if column is None:
            return None
        if column not in row:
            if not needed:
                return None
            raise BertkitError(
                f"{where}: no `{column}` (found: {', '.join(map(str, row))}); check --format, or name "
                f"the column with {flag}"
            )
        v = row[column]
        return " ".join(map(str, v)) if isinstance(v, list) else None if v is None else str(v)

    return {
        "text": value(layout.text, "--text-field"),
        "text_b": value(layout.text_b, "--text-b-field", needed=layout.name != "fields"),
        "label": value(layout.label, "--label-field", needed=labelled),
        "id": value(layout.id, "", needed=False),
    }


def _read_folders(p: Path, labelled: bool) -> list[tuple[int, dict]]:
    """IMDB's split folder: every `pos/*.txt` and `neg/*.txt` is one review (id: the file's stem)."""
    if not p.is_dir():
        raise BertkitError(f"{p} is not a folder: IMDB is read from aclImdb/train or aclImdb/test")
    records: list[tuple[int, dict]] = []
    for label in ("neg", "pos"):
        files = sorted((p / label).glob("*.txt"))
        for f in files:
            text = " ".join(line for _, line in read_lines(f)).replace("<br />", " ").strip()
            if not text:
                raise BertkitError(f"{f}: an empty review; remove the file")
            records.append((len(records) + 1, {"text": text, "text_b": None, "label": label, "id": f.stem}))
    if not records:
        raise BertkitError(f"{p}: no reviews in pos/*.txt or neg/*.txt; point at aclImdb/train or aclImdb/test")
    return records
