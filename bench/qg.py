"""Answer-aware question generation on SQuAD v1.1 with UniLM sequence to sequence (`--task seq2seq`).

The source is the context sentence that holds the answer, the answer marked with asterisks
("... the * denver broncos * defeated ..."); the target is the question. Three rows, the same data:
- MiniLM-initialised: `bertkit finetune --task seq2seq --model minilm`;
- random-initialised: the same shape and vocab, `--init random`;
- a copy baseline: the source sentence itself (unmarked) as the question.
Both models train the same steps, batch, learning rate and lengths; each is scored on a seeded sample
of dev questions by corpus BLEU-4 and ROUGE-L (`bertkit.generation_metrics`) of its greedy output
(`bertkit generate`). The checkpoint is the last one (dev selection would need generating a dev set
at every evaluation).

    .venv/bin/python bench/qg.py --train 20000 --steps 3000 --dev 2000      (writes runs/qg/)

Sentences are split as in bench/embed.py; questions whose answer crosses a sentence boundary are left out.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed import ROOT, sentences  # noqa: E402  (bench/embed.py, beside this file)

from bertkit.fetch import resolve_data, resolve_model  # noqa: E402
from bertkit.generate import detokenize  # noqa: E402
from bertkit.generation_metrics import generation_report  # noqa: E402
from bertkit.tokenizer import BertTokenizer  # noqa: E402


def examples(path: Path) -> list[dict]:
    """{source: the answer sentence with the answer marked, sentence, target: the question}."""
    out = []
    for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
        for paragraph in article["paragraphs"]:
            spans = sentences(paragraph["context"])
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                a, b = answer["answer_start"], answer["answer_start"] + len(answer["text"])
                for start, end, sentence in spans:
                    if start <= a and b <= end:
                        i, j = a - start, b - start
                        marked = f"{sentence[:i]}* {sentence[i:j]} *{sentence[j:]}"
                        out.append({"source": marked, "sentence": sentence, "target": qa["question"].strip()})
                        break
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps({k: r[k] for k in ("source", "target")}) + "\n" for r in rows))


def train(arm: str, out: Path, data: Path, steps: int, lr: float, seed: int) -> float:
    args = [str(ROOT / ".venv/bin/bertkit"), "finetune", "--task", "seq2seq", "--model", "minilm"]
    args += ["--train", str(data / "train.jsonl"), "--dev", str(data / "select.jsonl"), "--output", str(out)]
    args += ["--overwrite", "--max-length", "128", "--train.batch-size=32", f"--train.lr={lr}"]
    args += [f"--train.max-steps={steps}", f"--train.eval-every={steps}", f"--train.seed={seed}"]
    args += ["--init", "random"] if arm == "random" else []
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    (out.parent / f"{arm}.log").write_text(done.stderr)
    if done.returncode:
        raise SystemExit(f"{arm}: finetune failed, see {out.parent / f'{arm}.log'}")
    return time.perf_counter() - start


def generate(model: Path, data: Path, out: Path) -> list[str]:
    args = [str(ROOT / ".venv/bin/bertkit"), "generate", "--model", str(model), "--input", str(data / "dev.jsonl")]
    args += ["--output", str(out), "--overwrite", "--generation.max-new-tokens=32"]
    subprocess.run(args, check=True, capture_output=True)
    return [json.loads(line)["generated"] for line in out.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=20000, help="training questions (a seeded sample)")
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps of 32 examples, each arm")
    ap.add_argument("--dev", type=int, default=2000, help="dev questions scored (a seeded sample)")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="runs/qg")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    train_rows = rng.sample(examples(resolve_data("squad11:train")), args.train)
    dev_rows = rng.sample(examples(resolve_data("squad11:dev")), args.dev)
    write(out / "train.jsonl", train_rows)
    write(out / "dev.jsonl", dev_rows)
    write(out / "select.jsonl", dev_rows[:50])  # the loop's end-of-training report
    # references and the copy baseline as the tokenizer gives text back (lower-cased, as the models write)
    tokenizer = BertTokenizer.from_dir(resolve_model("minilm"))

    def plain(text: str) -> str:
        return detokenize(tokenizer, tokenizer.encode(text, add_special_tokens=False).ids)

    references = [plain(r["target"]) for r in dev_rows]
    print(
        f"SQuAD v1.1 question generation: {len(train_rows)} train questions, {args.steps} steps of 32, lr {args.lr}, "
        f"{len(dev_rows)} dev questions (seeded), greedy; torch, 2 threads, {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    rows = [("copy the answer sentence", generation_report([plain(r["sentence"]) for r in dev_rows], references), None)]
    for arm in ("minilm", "random"):
        seconds = train(arm, out / arm, out, args.steps, args.lr, args.seed)
        generated = generate(out / arm, out, out / f"{arm}-generated.jsonl")
        rows.append((f"{arm}-initialised", generation_report(generated, references), seconds))
    print()
    print("| source of the question | BLEU-4 | ROUGE-L | training |")
    print("|---|---:|---:|---:|")
    for name, report, seconds in rows:
        timing = "" if seconds is None else f"{seconds / 60:.0f} min"
        print(f"| {name} | {report['bleu']:.2f} | {report['rouge_l']:.2f} | {timing} |")


if __name__ == "__main__":
    main()
