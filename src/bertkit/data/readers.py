"""Reading user text files with errors that name the file and the line.

Formats are chosen by extension: `.jsonl` (one JSON object a line), `.tsv` / `.csv` (a header row
naming the columns), anything else is plain text with one item a line.

TSV is split on tabs with no quoting, so a field may hold any text but a tab or a line break. CSV
follows RFC 4180: a quoted field may hold commas, doubled quotes and line breaks. A CSV field may be up
to FIELD_LIMIT characters (Python's csv module stops at 128 KiB by default); a longer one is reported
with its line, as it is most often a quote that is never closed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from bertkit.errors import BertkitError

FIELD_LIMIT = 64 * 1024 * 1024  # characters in one CSV field (a whole book is a few million)


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
                    "re-encode the file as UTF-8, e.g. `iconv -f GB18030 -t UTF-8`"
                ) from None
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


def json_records(
    path: str | Path, lines: Iterator[tuple[int, str]] | None = None, example: str = '{"text": "..."}'
) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON-lines file; `example` shows the user
    what a line should look like when one is not a JSON object."""
    for number, line in read_lines(path) if lines is None else lines:
        if not line.strip():
            continue
        record = parse_json(line, f"{path}, line {number}", f"write one object a line, such as {example}")
        if not isinstance(record, dict):
            raise BertkitError(
                f"{path}, line {number}: expected a JSON object such as {example}, got {type(record).__name__}"
            )
        yield number, record


def parse_json(text: str, where: str, fix: str, whole_file: bool = False):
    """The JSON value in `text`; every way it can fail is a BertkitError starting with `where`.

    Besides syntax errors, Python's json refuses integers over 4,300 digits (ValueError) and nesting
    deeper than the recursion limit (RecursionError), and it accepts `\\ud800`-style escapes that make
    strings no UTF-8 file or tokenizer can hold.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        at = f"line {e.lineno}, column {e.colno}" if whole_file else f"column {e.colno}"
        raise BertkitError(f"{where}: not valid JSON ({e.msg} at {at}); {fix}") from None
    except ValueError as e:  # an integer too long to convert
        raise BertkitError(f"{where}: {e}; {fix}") from None
    except RecursionError:
        raise BertkitError(f"{where}: JSON nested too deeply to read; {fix}") from None
    if "\\u" in text:  # only escapes can produce a lone surrogate
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise BertkitError(
                f"{where}: the escape for {e.object[e.start]!r} is half of a UTF-16 "
                "surrogate pair, not a character; write the character itself or both "
                "halves of the pair"
            ) from None
    return value


def _read_table(p: Path, lines: Iterator[tuple[int, str]], delimiter: str):
    """(line number, record) for the rows under the header; a CSV row's number is its first line."""
    numbered = list(lines)
    if not numbered:
        raise BertkitError(f"{p} is empty: expected a header row naming the columns (e.g. text, label)")
    tab = delimiter == "\t"
    rows = _tsv_rows(numbered) if tab else _csv_rows(p, numbered)
    _, header = next(rows)
    if not any(name.strip() for name in header):
        raise BertkitError(
            f"{p}, line 1: blank, but the first line must be a header row naming the columns "
            f"(e.g. {'text<TAB>label' if tab else 'text,label'})"
        )
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise BertkitError(
            f"{p}, line 1: the header names {', '.join(map(repr, twice))} more than once; "
            "give every column its own name"
        )
    stray = "tabs" if tab else "commas or quotes"
    for index, row in rows:
        if not "".join(row).strip():
            continue  # a blank line
        number = numbered[index][0]
        if len(row) != len(header):
            raise BertkitError(
                f"{p}, line {number}: {len(row)} fields but the header has {len(header)} "
                f"({', '.join(header)}); check for stray {stray} or missing columns"
            )
        yield number, dict(zip(header, row))


def _tsv_rows(numbered: list[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(index of the line, fields): one row a line, split on tabs, no quoting."""
    for index, (_, line) in enumerate(numbered):
        yield index, line.split("\t")


def _csv_rows(p: Path, numbered: list[tuple[int, str]]) -> Iterator[tuple[int, list[str]]]:
    """(index of the row's first line, fields); a quoted field may span lines."""
    if csv.field_size_limit() < FIELD_LIMIT:
        csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader((line + "\n" for _, line in numbered), strict=True)
    first = 0  # index of the first line of the next row
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise BertkitError(_csv_problem(p, numbered, first, reader.line_num - 1, str(e))) from None
        yield first, row
        first = reader.line_num


def _csv_problem(p: Path, numbered, first: int, current: int, message: str) -> str:
    """What a csv.Error means for the person who wrote the file, where, and the fix. `first` is the
    index of the row's first line (where an unclosed quote opened), `current` the line being read."""
    if "field limit" in message:
        return (
            f"{p}, line {numbered[first][0]}: a field longer than {FIELD_LIMIT:,} characters starts in "
            "this row, most likely a quote that is never closed; close it (a quote inside a quoted "
            'field is written twice: "")'
        )
    if "unexpected end of data" in message:
        return (
            f"{p}, line {numbered[first][0]}: a quoted field starts in this row and is never closed; "
            'add the closing quote (")'
        )
    where = f"{p}, line {numbered[current][0]}"
    if "new-line character" in message:
        return f"{where}: a carriage return (\\r) inside an unquoted field; quote the field or remove the \\r"
    return (
        f"{where}: not valid CSV ({message}); quote fields that hold commas or quotes, and write a "
        'quote inside a quoted field twice (""), as in RFC 4180'
    )


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
            raise BertkitError(
                f"{path}, line {number}: empty text; remove the line, or pass "
                "--allow-empty to encode it as an empty string"
            )
        texts.append(text)
    if not texts:
        raise BertkitError(f"{path} holds no texts")
    return texts
