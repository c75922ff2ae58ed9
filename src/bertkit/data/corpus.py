"""Raw text for pretraining: telling a file's layout, cutting it into chunks, reading a chunk tolerantly
and splitting paragraphs into sentences.

Two layouts are understood:
  sentences   one sentence a line, a blank line between documents: google-research/bert's
              sample_text.txt, and what its create_pretraining_data.py reads.
  paragraphs  every non-blank line is one document (a paragraph, a news item, a review), split into
              sentences at end punctuation; blank lines are ignored. corpus-en and corpus-zh look so.
`auto` decides per file from its first 4 MB: `sentences` when there is at least one blank line and at
least half of the blank-separated blocks hold two or more lines, else `paragraphs`. (A file of
paragraphs separated by blank lines has one-line blocks, so it stays `paragraphs`; a hard-wrapped text
with multi-line paragraphs would be taken for `sentences`: pass --format paragraphs for it.)

Big corpora are built by several processes, so a file is cut into chunks of about `chunk_bytes`,
always at a document boundary, by one cheap scan of its bytes. Chunks depend only on the files and
the chunk size, never on the number of workers, which is what makes the output identical for any
worker count. Reading is tolerant: a line that is not UTF-8 is skipped and reported as `file:line`
(a crawl always has a few), where `read_lines` would stop the whole build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bertkit.errors import BertkitError

FORMATS = ("auto", "sentences", "paragraphs")
_DETECT_BYTES = 4 << 20
MAX_EXAMPLES = 5  # how many bad lines / long sentences are named by file:line in the statistics

# An English end mark must be followed by white space ("3.5", "e.g.x" stay whole); the Chinese ones
# need nothing after them. Closing quotes and brackets stay with the sentence they close.
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s)|[。！？；]+[”’」』）\"']*")


@dataclass
class Chunk:
    """Lines [first_line, ...] of `path` between byte offsets [start, end): whole documents only."""

    index: int  # position in the whole build; the chunk's random stream is derived from (seed, index)
    path: str
    layout: str  # "sentences" or "paragraphs"
    start: int
    end: int
    first_line: int  # 1-based number of the line at byte `start`


@dataclass
class BadLines:
    """Lines skipped for not being UTF-8: how many, and the first few as `file:line: why`."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def decode(self, raw: bytes, path, number: int) -> str | None:
        """The line as text, or None (counted) when it is not UTF-8."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.count += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(
                    f"{path}:{number}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); line skipped"
                )
            return None


@dataclass
class ChunkText:
    """The documents of a chunk: each a list of (line number, sentence text), plus what was skipped."""

    documents: list[list[tuple[int, str]]] = field(default_factory=list)
    bad: BadLines = field(default_factory=BadLines)


def detect_layout(path: str | Path) -> str:
    """`sentences` or `paragraphs` by the rule in the module docstring."""
    blocks, current, seen_blank, size = [], 0, False, 0
    with open(path, "rb") as f:
        for raw in f:
            size += len(raw)
            if raw.strip():
                current += 1
            else:
                seen_blank = True
                if current:
                    blocks.append(current)
                current = 0
            if size >= _DETECT_BYTES:
                break
    if current:
        blocks.append(current)
    multi_line = sum(n >= 2 for n in blocks)
    return "sentences" if seen_blank and blocks and multi_line * 2 >= len(blocks) else "paragraphs"


def plan_chunks(paths: list[Path], layout: str, chunk_bytes: int) -> list[Chunk]:
    """Cut every file into chunks of about `chunk_bytes`, ending each at a document boundary."""
    if layout not in FORMATS:
        raise BertkitError(f"unknown format {layout!r}; choose one of {', '.join(FORMATS)}")
    chunks: list[Chunk] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise BertkitError(f"input {p} not found; give text files (or data names such as corpus-en)")
        file_layout = detect_layout(p) if layout == "auto" else layout
        start, first_line, offset, number = 0, 1, 0, 0
        with p.open("rb") as f:
            for raw in f:
                number += 1
                offset += len(raw)
                # In `paragraphs` every line ends a document; in `sentences` only a blank line does.
                boundary = file_layout == "paragraphs" or not raw.strip()
                if boundary and offset - start >= chunk_bytes:
                    chunks.append(Chunk(len(chunks), str(p), file_layout, start, offset, first_line))
                    start, first_line = offset, number + 1
        if offset > start:
            chunks.append(Chunk(len(chunks), str(p), file_layout, start, offset, first_line))
    return chunks


def read_chunk(chunk: Chunk) -> ChunkText:
    """The chunk's documents as lists of (line number, sentence); bad UTF-8 lines skipped and counted."""
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        data = f.read(chunk.end - chunk.start)
    out = ChunkText()
    document: list[tuple[int, str]] = []
    for number, raw in enumerate(data.split(b"\n"), start=chunk.first_line):
        line = out.bad.decode(raw, chunk.path, number)
        if line is None:
            continue
        if number == 1:
            line = line.lstrip("\ufeff")  # a byte-order mark is not text
        line = line.strip()
        if chunk.layout == "paragraphs":
            if line:
                out.documents.append([(number, s) for s in split_sentences(line)])
        elif line:
            document.append((number, line))
        elif document:
            out.documents.append(document)
            document = []
    if document:
        out.documents.append(document)
    return out


def split_sentences(text: str) -> list[str]:
    """Sentences of a paragraph, cut after `.!?` + space and after `。！？；` (closing quotes kept).

    An English cut is skipped when the next word starts in lower case ("e.g. the", "approx. two"): a
    cheap guard against abbreviations. "U.S. Army" is still cut; a wrong cut only shortens an NSP
    segment, it loses no text.
    """
    sentences, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        rest = text[m.end() :].lstrip()
        if not rest or (rest[0].islower() and m.group()[0] in ".!?"):
            continue
        sentences.append(text[start : m.end()].strip())
        start = m.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]
