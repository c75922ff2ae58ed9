"""`bertkit VERB ...`: one module per verb under bertkit/cli, each thin over library functions."""

from __future__ import annotations

import importlib
import logging
import sys

from bertkit.errors import BertkitError, suggest

VERBS = {
    "fetch": "download, verify and unpack a real model or data set into the cache",
    "vocab": "train a WordPiece vocab.txt from raw text",
    "pretrain-data": "raw text -> masked-LM (+NSP) training sequences, memory-mapped shards",
    "pretrain": "pretrain BERT (masked LM + NSP), from scratch or continued; torchrun for several processes",
    "finetune": "fine-tune for classify, regression, ner, qa or multitask",
    "distill": "train a compact student on a fine-tuned teacher's outputs (and labels, and unlabelled text)",
    "evaluate": "score a fine-tuned model on labelled data",
    "benchmark": "GLUE or CLUE as downloaded: fine-tune every task, a leaderboard row per model, submission files",
    "predict": "run a fine-tuned model over inputs (JSONL out)",
    "generate": "a sequence-to-sequence model (finetune --task seq2seq) writes a target per source",
    "encode": "sentence vectors for a file of texts (.npy)",
    "index": "build a search index of texts: their vectors memory-mapped, exact or approximate (faiss)",
    "search": "the texts of an index nearest to a query, or to each query of a file (JSONL)",
    "export": "a model directory -> ONNX (optionally int8), checked against PyTorch",
    "convert": "Google's TensorFlow checkpoints <-> Hugging Face directories, parity-checked",
    "serve": "HTTP server: /encode, /similarity, /search, /predict/TASK with dynamic batching",
}

USAGE = "usage: bertkit VERB [options]   (bertkit VERB --help for a verb's options)\n\nverbs:\n" + "\n".join(
    f"  {verb:<13} {text}" for verb, text in VERBS.items()
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="bertkit: %(message)s", stream=sys.stderr)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"bertkit: unknown verb `{verb}`{suggest(verb, VERBS)}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bertkit.cli.{verb.replace('-', '_')}")
    try:
        return module.main(rest) or 0
    except BertkitError as e:
        message = str(e).removeprefix(f"bertkit {verb}: ")  # config errors name the command already
        print(f"bertkit {verb}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
