"""Sentence encoding throughput: bertkit's Encoder against Hugging Face transformers, one process.

    .venv/bin/python bench/encode.py [--model minilm] [--n 5000] [--batch-size 32] [--repeats 2]

Both encode the same MR sentences with the same checkpoint into mean-pooled, L2-normalised vectors
(MiniLM's own sentence embedding). transformers runs the way its users usually batch: batches of 32
in file order, padded to the longest in the batch. bertkit sorts by length first. Prints sequences/s,
peak memory growth (resident set, sampled) and the ratio, and checks that the vectors agree.
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import torch


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 2 ms from /proc/self/statm."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (self.peak - self.base) / 2**20


def load_sentences(n: int) -> list[str]:
    from bertkit.data.readers import read_texts
    from bertkit.fetch import resolve_data

    texts = read_texts(resolve_data("mr:train")) + read_texts(resolve_data("mr:dev"))
    return texts[:n]


def transformers_encode(model_dir, batch_size, sort=False):
    """transformers as its users batch it; `sort=True` adds bertkit's length sorting, to show how much
    of the difference is the sorting and how much the model code."""
    import transformers

    tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
    model = transformers.BertModel.from_pretrained(model_dir).eval()

    @torch.inference_mode()
    def run(texts):
        order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else range(len(texts))
        ordered = [texts[i] for i in order]
        out = []
        for i in range(0, len(ordered), batch_size):
            enc = tok(ordered[i: i + batch_size], padding="longest", truncation=True, max_length=512,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(vec, dim=-1))
        vectors = torch.cat(out).numpy()
        restored = np.empty_like(vectors)
        restored[list(order)] = vectors
        return restored

    return run


def bertkit_encode(model_dir, batch_size):
    from bertkit import Encoder

    encoder = Encoder(model_dir, pooling="mean", normalize=True, batch_size=batch_size)
    return encoder.encode


def best_seconds(fn, repeats: int) -> float:
    """Wall time of `fn()`, best of `repeats` after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timed(run, texts, repeats):
    best, vectors, mib = float("inf"), None, 0.0
    for _ in range(repeats):
        with PeakRSS() as mem:
            start = time.perf_counter()
            vectors = run(texts)
            best = min(best, time.perf_counter() - start)
        mib = max(mib, mem.mib)
    return best, vectors, mib


def main():
    from bertkit.fetch import resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    model_dir = resolve_model(args.model)
    texts = load_sentences(args.n)
    runs = {"transformers": transformers_encode(model_dir, args.batch_size),
            "transformers, sorted by length": transformers_encode(model_dir, args.batch_size, sort=True),
            "bertkit": bertkit_encode(model_dir, args.batch_size)}
    for run in runs.values():  # warm up kernels and allocators
        run(texts[:256])
    results = {}
    for name, run in runs.items():
        seconds, vectors, mib = timed(run, texts, args.repeats)
        results[name] = (len(texts) / seconds, vectors, mib)
    ours, theirs = results["bertkit"], results["transformers"]
    diff = np.abs(ours[1] - theirs[1]).max()
    cosine = (ours[1] * theirs[1]).sum(1).min()
    print(f"\nencode {len(texts)} MR sentences, {args.model}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| | sequences/s | peak RSS growth (MiB) |\n|---|---|---|")
    for name, (rate, _, mib) in results.items():
        print(f"| {name} | {rate:.1f} | {mib:.0f} |")
    print(f"\nratio bertkit / transformers: {ours[0] / theirs[0]:.2f}x "
          f"(against transformers with length sorting: {ours[0] / results['transformers, sorted by length'][0]:.2f}x)")
    print(f"vectors: max abs diff {diff:.2e}, worst cosine {cosine:.6f}")


if __name__ == "__main__":
    main()
