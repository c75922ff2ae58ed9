"""Embedding fine-tuning on SQuAD v1.1 as retrieval: question -> the context sentence holding its answer.

The same recipe through bertkit (`bertkit finetune --task embed`) and through sentence-transformers
(SentenceTransformerTrainer), side by side in one run: MiniLM (all-MiniLM-L6-v2), a seeded subset of
SQuAD train questions paired with their answer sentences, in-batch negatives (MultipleNegativesRankingLoss,
scale 20), batch 32, lr 2e-5 with 10% warm-up, one epoch, 128 tokens, seed 1. Both trained models, and
MiniLM before training, are scored the same way: each of a seeded sample of dev questions retrieves from
every sentence of every dev context (recall@1, recall@10, MRR@10). Training time is each library's wall
time for its epoch (bertkit's without its end-of-epoch dev evaluation, which it logs apart).

    .venv/bin/python bench/embed.py --train 6000 --dev 1000      (writes runs/embed-squad/)

sentence-transformers' trainer needs `datasets` and `accelerate` (`pip install datasets accelerate`).

Sentences are split with a simple rule (after . ! or ? followed by a space and a capital, quote or
digit); a question whose answer crosses a sentence boundary is left out.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from bertkit.encode import Encoder
from bertkit.fetch import resolve_data, resolve_model
from bertkit.tasks.embed import retrieval_metrics

SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
ROOT = Path(__file__).resolve().parent.parent


def sentences(context: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each sentence of a context."""
    out, start = [], 0
    for m in SPLIT.finditer(context):
        out.append((start, m.start(), context[start : m.start()]))
        start = m.end()
    out.append((start, len(context), context[start:]))
    return out


def pairs(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(question, answer sentence) pairs, and every sentence, of a SQuAD file."""
    found, corpus = [], []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            spans = sentences(paragraph["context"])
            corpus += [s for _, _, s in spans]
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                a, b = answer["answer_start"], answer["answer_start"] + len(answer["text"])
                holding = [s for start, end, s in spans if start <= a and b <= end]
                if holding:
                    found.append((qa["question"].strip(), holding[0]))
    return found, list(dict.fromkeys(corpus))


def tsv(path: Path, rows: list[tuple[str, str]], corpus: list[str] = ()) -> None:
    clean = [(q.replace("\t", " ").replace("\n", " "), s.replace("\t", " ").replace("\n", " ")) for q, s in rows]
    lines = ["anchor\tpositive"] + [f"{q}\t{s}" for q, s in clean]
    lines += [f"\t{s.replace(chr(9), ' ').replace(chr(10), ' ')}" for s in corpus]  # corpus-only rows
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def score(model_dir: Path | str, questions: list[str], gold: list[int], corpus: list[str]) -> dict:
    encoder = Encoder(model_dir, device="cpu", max_length=128)
    return retrieval_metrics(encoder.encode(questions), encoder.encode(corpus), gold)


def train_bertkit(train: Path, dev: Path, out: Path, seed: int) -> float:
    args = [str(ROOT / ".venv/bin/bertkit"), "finetune", "--task", "embed", "--model", "minilm"]
    args += ["--train", str(train), "--dev", str(dev), "--output", str(out), "--overwrite", "--max-length", "128"]
    args += ["--train.epochs=1", "--train.batch-size=32", "--train.lr=2e-5", "--train.warmup=0.1"]
    args += [f"--train.seed={seed}", "--train.log-every=50"]
    start = time.perf_counter()
    log = subprocess.run(args, check=True, capture_output=True, text=True).stderr
    total = time.perf_counter() - start
    evaluation = sum(float(x) for x in re.findall(r": dev .*\(([0-9.]+) s\)", log))
    (out.parent / "bertkit.log").write_text(log)
    return total - evaluation


def train_sentence_transformers(train: list[tuple[str, str]], out: Path, seed: int) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    model = SentenceTransformer(str(resolve_model("minilm")), device="cpu")
    model.max_seq_length = 128
    data = Dataset.from_dict({"anchor": [q for q, _ in train], "positive": [s for _, s in train]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=2e-5,
        warmup_ratio=0.1,
        seed=seed,
        save_strategy="no",
        report_to=[],
        logging_steps=50,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=MultipleNegativesRankingLoss(model, scale=20.0)
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save(str(out / "model"))
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=6000, help="training questions (a seeded sample)")
    ap.add_argument("--dev", type=int, default=1000, help="dev questions scored (a seeded sample)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/embed-squad")
    ap.add_argument("--skip-st", action="store_true", help="bertkit only")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    train_all, _ = pairs(resolve_data("squad11:train"))
    dev_all, corpus = pairs(resolve_data("squad11:dev"))
    rng = random.Random(args.seed)
    train = rng.sample(train_all, args.train)
    dev = rng.sample(dev_all, args.dev)
    tsv(out / "train.tsv", train)
    dev_corpus = [s for s in corpus if s not in {p for _, p in dev}]
    tsv(out / "dev.tsv", dev, dev_corpus)
    questions = [q for q, _ in dev]
    gold = [corpus.index(s) for _, s in dev]
    torch.set_num_threads(torch.get_num_threads())
    print(
        f"SQuAD v1.1: {len(train)} of {len(train_all)} train pairs; {len(dev)} dev questions against "
        f"{len(corpus):,} dev sentences; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    rows = [("MiniLM (all-MiniLM-L6-v2), not fine-tuned", score("minilm", questions, gold, corpus), None)]
    seconds = train_bertkit(out / "train.tsv", out / "dev.tsv", out / "bertkit", args.seed)
    rows.append(("fine-tuned with bertkit", score(out / "bertkit", questions, gold, corpus), seconds))
    if not args.skip_st:
        seconds = train_sentence_transformers(train, out / "st", args.seed)
        trained = score(out / "st" / "model", questions, gold, corpus)
        rows.append(("fine-tuned with sentence-transformers", trained, seconds))
    print()
    print("| model | recall@1 | recall@10 | MRR@10 | training epoch |")
    print("|---|---:|---:|---:|---:|")
    base = rows[1][2]
    for name, m, sec in rows:
        timing = "" if sec is None else f"{sec:,.0f} s" + (f" ({sec / base:.2f}x bertkit's)" if sec != base else "")
        print(f"| {name} | {m['recall@1']:.4f} | {m['recall@10']:.4f} | {m['mrr@10']:.4f} | {timing} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
