"""Training a WordPiece vocab.txt from raw text, for pretraining a BERT from scratch.

The `tokenizers` library's WordPieceTrainer learns the pieces; the text is cut into words first by the
very normalizer and pre-tokenizer `bertkit.tokenizer` uses (BertNormalizer, BertPreTokenizer), so the
vocab is learned on the words it will later be applied to. The five special tokens come first, at
ids 0..4 ([PAD] [UNK] [CLS] [SEP] [MASK]); every character seen in the text is in the vocab (the trainer
keeps the whole alphabet), so nothing in the training text becomes [UNK].

Chinese (`chinese_chars`): BERT cuts CJK text into single characters, so the trainer only ever sees a
CJK character as a whole word and never learns its `##` form. bert-base-chinese has both (的 and ##的):
the `##` form is what a CJK character becomes inside a run the normalizer did not space out, and what
Chinese whole-word masking recipes mark continuations with. So every CJK character of the corpus is
added in both forms, and the learned part is made that much smaller to keep the requested size.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import WordPiece

from bertkit.data.corpus import BadLines
from bertkit.errors import BertkitError
from bertkit.outputs import atomic_write_text
from bertkit.tokenizer import SPECIAL_TOKENS, BertTokenizer

log = logging.getLogger("bertkit")

# The code points BERT's tokenizer treats as CJK characters (google-research's _is_chinese_char).
CJK = re.compile(
    "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df\U0002a700-\U0002ceaf\U0002f800-\U0002fa1f]"
)


def read_corpus(paths: Iterable[str | Path], bad: BadLines) -> Iterator[str]:
    """The non-blank lines of the files; a line that is not UTF-8 is skipped and counted in `bad`."""
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise BertkitError(f"corpus file {p} not found")
        with p.open("rb") as f:
            for number, raw in enumerate(f, start=1):
                line = bad.decode(raw, p, number)
                if line is not None and line.strip():
                    yield line


def train_vocab(
    paths: Sequence[str | Path], size: int, lowercase: bool = True, chinese_chars: bool = False, min_frequency: int = 2
) -> list[str]:
    """The tokens of a new vocab, in id order: the specials, the learned pieces, (the CJK `##` chars).

    `size` is a target: the vocab is larger when the corpus has more distinct characters than that."""
    if size <= len(SPECIAL_TOKENS):
        raise BertkitError(
            f"vocab size {size} leaves no room beside the {len(SPECIAL_TOKENS)} special tokens; "
            "BERT uses 30522 (English) or 21128 (Chinese)"
        )
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    bad = BadLines()
    cjk: list[str] = []
    if chinese_chars:  # a first pass: which CJK characters, as the normalizer leaves them
        raw = {c for line in read_corpus(paths, BadLines()) for c in CJK.findall(line)}
        cjk = sorted({normalizer.normalize_str(c).strip() for c in raw} - {""})
    tk = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tk.normalizer = normalizer
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=max(size - len(cjk), len(SPECIAL_TOKENS) + 1),
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tk.train_from_iterator(read_corpus(paths, bad), trainer)
    if bad.count:
        log.warning("skipped %d lines that are not UTF-8, e.g.\n  %s", bad.count, "\n  ".join(bad.examples))
    vocab = tk.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS), tokens[:8]
    if len(tokens) <= len(SPECIAL_TOKENS):
        raise BertkitError(f"no text in {', '.join(map(str, paths))}: the corpus files hold no UTF-8 lines")
    have = set(tokens)
    tokens += [t for c in cjk for t in (c, "##" + c) if t not in have]
    if len(tokens) > size:
        log.warning(
            "the vocab has %d tokens, more than --size %d: the corpus has that many distinct characters "
            "(%d CJK, kept with their ## forms), and every character gets a token",
            len(tokens),
            size,
            len(cjk),
        )
    return tokens


def write_vocab(tokens: list[str], path: str | Path, lowercase: bool) -> Path:
    """vocab.txt at `path`; when the file is called vocab.txt, tokenizer_config.json (do_lower_case)
    beside it too, so the directory loads as a tokenizer in bertkit and in transformers. Under another
    name the casing is inferred from the vocab when it is loaded (an uncased vocab has no capitals)."""
    path = Path(path)
    if path.is_dir():
        path = path / "vocab.txt"
    tokenizer = BertTokenizer({t: i for i, t in enumerate(tokens)}, lowercase)
    if path.name == "vocab.txt":
        tokenizer.save(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(t + "\n" for t in tokens))
    return path
