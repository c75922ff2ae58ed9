"""Readers for token-tagging data: CoNLL (`token ... tag` a line, a blank line between sentences) and
CLUENER JSON lines (`{"text": ..., "label": {type: {entity: [[start, end]]}}}`, end inclusive).

An example is a dict: `tokens`, `tags` (None for unlabelled input), `text` (the sentence; CoNLL tokens
are joined with single spaces, none between two CJK characters), `spans` (each token's character span
in `text`), `line`, `source` and `format`. Every problem names the file, the line and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path

from tokenizers.pre_tokenizers import BertPreTokenizer

from bertkit.data.readers import json_records, read_lines
from bertkit.errors import BertkitError

_FIELD = re.compile(r"[^ \t]+")  # CoNLL columns: split on spaces and tabs only, so a token may be "\u3000"
# BERT's CJK ideograph blocks (google-research `_is_chinese_char`), CJK punctuation, full-width forms.
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
    (0x3000, 0x303F),
    (0xFF00, 0xFFEF),
)
_CJK_CHAR = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK) + "]")
_PRE_TOKENIZER = BertPreTokenizer()  # BERT's split on whitespace and punctuation, with char offsets
_TAG_HELP = (
    "use O, B-TYPE and I-TYPE (BIO) or also E-TYPE and S-TYPE (BIOES); convert other schemes (IOB1, BILOU) to BIO first"
)


def _is_cjk(token: str) -> bool:
    """True for a single CJK character."""
    return _CJK_CHAR.fullmatch(token) is not None


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """(text, char span of each token): single spaces, none between two one-character CJK tokens."""
    parts, spans, pos = [], [], 0
    cjk = [_is_cjk(t) for t in tokens]
    for i, token in enumerate(tokens):
        if i and not (cjk[i] and cjk[i - 1]):
            parts.append(" ")
            pos += 1
        parts.append(token)
        spans.append((pos, pos + len(token)))
        pos += len(token)
    return "".join(parts), spans


def split_words(text: str) -> list[tuple[int, int]]:
    """Word spans as BERT's basic tokenizer cuts them: whitespace, punctuation, each CJK character."""
    spans = []
    for _, (start, end) in _PRE_TOKENIZER.pre_tokenize_str(text):
        run = start
        for i in range(start, end):
            if _is_cjk(text[i]):  # BERT's normalizer spaces these out before the pre-tokenizer runs
                if run < i:
                    spans.append((run, i))
                spans.append((i, i + 1))
                run = i + 1
        if run < end:
            spans.append((run, end))
    return spans


def make_example(tokens, tags, text, spans, number, path, fmt) -> dict:
    return {
        "tokens": tokens,
        "tags": tags,
        "text": text,
        "spans": spans,
        "line": number,
        "source": str(path),
        "format": fmt,
    }


def token_line(e: dict, i: int) -> int:
    """The line of token i: CoNLL has one token a line, JSON one sentence a line."""
    return e["line"] + i if e["format"] == "conll" else e["line"]


def read_conll(path, labelled: bool = True) -> list[dict]:
    """Sentences of `token ... tag` lines (tag = last column); `-DOCSTART-` lines end a sentence."""
    examples: list[dict] = []
    tokens: list[str] = []
    tags: list[str] = []
    first = 0

    def flush():
        if tokens:
            text, spans = join_tokens(tokens)
            examples.append(make_example(tokens[:], tags[:] if labelled else None, text, spans, first, path, "conll"))
            tokens.clear(), tags.clear()

    for number, line in read_lines(path):
        fields = _FIELD.findall(line)
        if not fields or fields[0] == "-DOCSTART-":
            flush()
            continue
        if labelled and len(fields) < 2:
            raise BertkitError(
                f"{path}, line {number}: {line.strip()!r} has no tag column; write `token tag` "
                "(e.g. `Paris B-LOC`), one token a line, a blank line between sentences"
            )
        tag = fields[-1]
        if labelled and tag != "O" and not (len(tag) > 2 and tag[0] in "BIES" and tag[1] == "-"):
            raise BertkitError(f"{path}, line {number}: {tag!r} is not a valid tag; {_TAG_HELP}")
        first = first if tokens else number
        tokens.append(fields[0])
        tags.append(tag)
    flush()
    if not examples:
        raise BertkitError(
            f"{path} holds no sentences: expected CoNLL `token tag` lines with a blank line "
            'between sentences, or CLUENER lines {"text": ..., "label": {...}}'
        )
    return examples


def json_lines(path):
    """(line number, object) for every non-blank line of a CLUENER-style JSON-lines file."""
    for number, record in json_records(path, example='{"text": "...", "label": {"name": {"...": [[0, 2]]}}}'):
        if not isinstance(record.get("text"), str):
            raise BertkitError(f"{path}, line {number}: expected an object with a `text` string")
        yield number, record


def _entity_tags(kind: str, n: int, scheme: str) -> list[str]:
    """The tags of an n-token entity: B- I- I- (BIO); B- I- E-, or S- alone (BIOES)."""
    if scheme == "BIOES":
        return [f"S-{kind}"] if n == 1 else [f"B-{kind}"] + [f"I-{kind}"] * (n - 2) + [f"E-{kind}"]
    return [f"B-{kind}"] + [f"I-{kind}"] * (n - 1)


def _cluener_tags(label, text: str, scheme: str, where: str) -> list[str]:
    """One tag per character from {type: {entity: [[start, end], ...]}} (end inclusive)."""
    if not isinstance(label, dict) or not all(isinstance(v, dict) for v in label.values()):
        raise BertkitError(f"{where}: `label` must map type -> {{entity: [[start, end], ...]}}")
    tags = ["O"] * len(text)
    for kind, entities in label.items():
        if not kind.strip():
            raise BertkitError(
                f"{where}: `label` has an entity type named {kind!r}; name every type "
                '(e.g. "name", "org"), as the tags B-TYPE and I-TYPE carry it'
            )
        for entity, spans in entities.items():
            if not isinstance(spans, list):
                raise BertkitError(
                    f"{where}: {kind} {entity!r} has {spans!r} where a list of spans belongs; write [[start, end], ...]"
                )
            for span in spans:
                if not (isinstance(span, list) and len(span) == 2 and all(type(x) is int for x in span)):
                    raise BertkitError(f"{where}: {kind} {entity!r} has span {span!r}; write [start, end]")
                start, end = span
                if not 0 <= start <= end < len(text):
                    raise BertkitError(
                        f"{where}: {kind} span [{start}, {end}] of {entity!r} is outside the "
                        f"text ({len(text)} characters); spans are character indices, end inclusive"
                    )
                if text[start : end + 1] != entity:
                    raise BertkitError(
                        f"{where}: {kind} span [{start}, {end}] covers {text[start : end + 1]!r}, "
                        f"not {entity!r}; fix the span (text[start:end+1] must equal the entity)"
                    )
                if any(t != "O" for t in tags[start : end + 1]):
                    raise BertkitError(
                        f"{where}: {kind} {entity!r} [{start}, {end}] overlaps another entity; "
                        "BIO tags cannot nest entities: keep one of them"
                    )
                tags[start : end + 1] = _entity_tags(kind, end - start + 1, scheme)
    return tags


def read_cluener(path, scheme: str = "BIO") -> list[dict]:
    """One example a line; every character is a token, tagged from the entity spans."""
    examples = []
    for number, record in json_lines(path):
        text = record["text"]
        if "label" not in record:
            raise BertkitError(f'{path}, line {number}: no `label`; write "label": {{}} for a text without entities')
        tags = _cluener_tags(record["label"], text, scheme, f"{path}, line {number}")
        examples.append(
            make_example(list(text), tags, text, [(i, i + 1) for i in range(len(text))], number, path, "cluener")
        )
    if not examples:
        raise BertkitError(f"{path} holds no examples: expected one JSON object a line")
    return examples


def is_json_lines(path) -> bool:
    """By suffix, else by the first non-blank line looking like an object (`{ O` is CoNLL)."""
    if Path(path).suffix.lower() in (".json", ".jsonl"):
        return True
    first = next((line.strip() for _, line in read_lines(path) if line.strip()), "")
    return first.startswith("{") and first.endswith("}")
