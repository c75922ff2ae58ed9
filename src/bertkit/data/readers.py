"""Reading user text files with errors that name the file and the line.

Formats are chosen by extension: `.jsonl` (one JSON object a line), `.tsv` / `.csv` (a header row
naming the columns), anything else is plain text with one item a line.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from bertkit.errors import BertkitError


def read_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line break); bad UTF-8 names the line."""
    p = Path(path)
    if not p.is_file():
        raise BertkitError(f"{p} not found")
    with p.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BertkitError(
                    f"{p}, line {number}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                    "re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8`") from None
            if number == 1:
                line = line.lstrip("\ufeff")  # a byte-order mark is not text
            yield number, line.rstrip("\r\n")


def read_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, record) from a JSONL, TSV or CSV file; plain text gives {"text": line}."""
    p = Path(path)
    suffix = p.suffix.lower()
    lines = read_lines(p)
    if suffix in (".tsv", ".csv"):
        yield from _read_table(p, lines, "\t" if suffix == ".tsv" else ",")
        return
    if suffix == ".jsonl":
        yield from json_records(p, lines)
        return
    for number, line in lines:
        yield number, {"text": line}


def json_records(path: str | Path, lines: Iterator[tuple[int, str]] | None = None,
                 example: str = '{"text": "..."}') -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file; `example` shows the user
    what a line should look like when one is not a JSON object."""
    for number, line in read_lines(path) if lines is None else lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BertkitError(f"{path}, line {number}: not valid JSON ({e.msg}); write one object a line, "
                               f"such as {example}") from None
        if not isinstance(record, dict):
            raise BertkitError(f"{path}, line {number}: expected a JSON object such as {example}, "
                               f"got {type(record).__name__}")
        yield number, record


def _read_table(p: Path, lines: Iterator[tuple[int, str]], delimiter: str):
    numbered = list(lines)
    if not numbered:
        raise BertkitError(f"{p} is empty: expected a header row naming the columns (e.g. text, label)")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    rows = csv.reader((line for _, line in numbered), delimiter=delimiter, quoting=quoting)
    header = next(rows)
    for (number, line), row in zip(numbered[1:], rows):
        if not line.strip():
            continue
        if len(row) != len(header):
            raise BertkitError(f"{p}, line {number}: {len(row)} fields but the header has {len(header)} "
                               f"({', '.join(header)}); check for stray tabs or missing columns")
        yield number, dict(zip(header, row))


def read_texts(path: str | Path, field: str = "text", allow_empty: bool = False) -> list[str]:
    """The `field` of every record; an empty text is an error unless `allow_empty`."""
    texts = []
    for number, record in read_records(path):
        if field not in record:
            raise BertkitError(f"{path}, line {number}: no `{field}` field (found: {', '.join(record)})")
        text = record[field]
        if not isinstance(text, str):
            raise BertkitError(f"{path}, line {number}: `{field}` must be a string, got {text!r}")
        if not text.strip() and not allow_empty:
            raise BertkitError(f"{path}, line {number}: empty text; remove the line, or pass "
                               "--allow-empty to encode it as an empty string")
        texts.append(text)
    if not texts:
        raise BertkitError(f"{path} holds no texts")
    return texts
