"""Pretraining step throughput: bertkit against Hugging Face transformers' BertForPreTraining, one process.

    .venv/bin/python bench/pretrain.py [--sizes minilm,tiny] [--steps 4] [--warmup 2] [--threads N]

One training step = forward, MLM + NSP loss, backward, AdamW step, on a batch of 32 sequences of 128
tokens with 15% of the tokens masked (at most 20 per sequence), built from corpus-en by
`bertkit pretrain-data`. Both models have the same config and the same weights (copied through a
saved model directory) and see the same batches. transformers computes the vocabulary logits at every
position and ignores the unmasked ones through labels of -100, as its users do; bertkit gathers the
masked positions before the vocabulary projection. Both use torch's fused AdamW (eps 1e-6, no decay
on biases and LayerNorm), which bertkit's loop and transformers' Trainer (torch >= 2.8) use by default.

Each side runs in a subprocess of its own, so that its peak memory can be read: on the CPU the growth
of the peak resident set (getrusage max RSS) over the resident set before the first step, on a GPU
torch.cuda.max_memory_allocated. Prints a markdown table: tokens/s, the ratio, peak memory.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SIZES = {  # name -> (layers, hidden, heads, intermediate)
    "minilm": (6, 384, 12, 1536),
    "tiny": (2, 128, 2, 512),
    "base": (12, 768, 12, 3072),
}
BATCH, SEQ, MAX_PREDICTIONS = 32, 128, 20


def build_data(directory: Path) -> Path:
    """Sequences of 128 tokens from the first 400 SQuAD paragraphs of corpus-en, MiniLM's vocab."""
    from bertkit.data.build_pretraining import BuildSettings, build_pretraining_data
    from bertkit.fetch import resolve_data

    text = directory / "corpus.txt"
    lines = resolve_data("corpus-en").read_text(encoding="utf-8").splitlines()[:400]
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = BuildSettings(max_seq_length=SEQ, max_predictions=MAX_PREDICTIONS, dupe_factor=1,
                             short_seq_prob=0.0)
    build_pretraining_data([text], "minilm", directory / "data", settings)
    return directory / "data"


def batches(data_dir: Path, n: int) -> list[list[dict]]:
    """`n` batches of the first full-length sequences (every run sees the same ones)."""
    from bertkit.data.pretraining import PretrainingData

    data = PretrainingData(data_dir)
    full = [i for i in range(len(data)) if data.lengths[i] == SEQ][: n * BATCH]
    if len(full) < n * BATCH:
        raise SystemExit(f"only {len(full)} sequences of {SEQ} tokens; use fewer steps")
    return [[data.feature(i) for i in full[b * BATCH:(b + 1) * BATCH]] for b in range(n)]


def save_weights(size: str, directory: Path) -> Path:
    from bertkit.checkpoint import save_model
    from bertkit.model import BertConfig, BertForPreTraining
    from bertkit.tokenizer import BertTokenizer
    from bertkit.fetch import resolve_model

    layers, hidden, heads, intermediate = SIZES[size]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, num_hidden_layers=layers, hidden_size=hidden,
                        num_attention_heads=heads, intermediate_size=intermediate)
    return save_model(BertForPreTraining(config), directory / size, BertTokenizer.from_dir(resolve_model("minilm")))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _adamw(model) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=1e-4, eps=1e-6, fused=True)


def run_one(side: str, model_dir: Path, data_dir: Path, steps: int, warmup: int, device: str) -> dict:
    """Time `steps` training steps after `warmup` ones, in this process; tokens/s and peak memory."""
    from bertkit.data.collate import collate

    feats = batches(data_dir, warmup + steps)
    tensors = [{k: v.to(device) for k, v in collate(b).items()} for b in feats]
    if side == "bertkit":
        from bertkit.checkpoint import load_model
        from bertkit.model import BertForPreTraining
        from bertkit.tasks.pretrain import PretrainTask

        model = load_model(model_dir, BertForPreTraining).to(device).train()
        task = PretrainTask(nsp=True)

        def loss_of(batch):
            return task.loss(model, batch)
    else:
        import transformers

        model = transformers.BertForPreTraining.from_pretrained(model_dir).to(device).train()
        for batch in tensors:  # labels over all T positions, -100 except at the masked ones
            labels = torch.full_like(batch["input_ids"], -100)
            real = batch["masked_ids"] != -100
            rows = torch.arange(len(labels), device=device)[:, None].expand_as(real)
            labels[rows[real], batch["masked_positions"][real]] = batch["masked_ids"][real]
            batch["labels"] = labels

        def loss_of(batch):
            return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         token_type_ids=batch["token_type_ids"], labels=batch["labels"],
                         next_sentence_label=batch["nsp_label"]).loss
    optimizer = _adamw(model)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    losses = []
    for i, batch in enumerate(tensors):
        if i == warmup:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    tokens = sum(int(b["attention_mask"].sum()) for b in tensors[warmup:])
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss is in KiB
    return {"tokens_per_s": tokens / seconds, "step_s": seconds / steps, "peak_mib": peak / 2**20,
            "first_loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="minilm,tiny")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--worker", nargs=5, metavar=("SIDE", "MODEL", "DATA", "STEPS", "WARMUP"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        side, model_dir, data_dir, steps, warmup = args.worker
        print(json.dumps(run_one(side, Path(model_dir), Path(data_dir), int(steps), int(warmup), args.device)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data_dir = build_data(tmp)
        rows = []
        for size in args.sizes.split(","):
            model_dir = save_weights(size, tmp)
            result = {}
            for side in ("bertkit", "transformers"):
                cmd = [sys.executable, __file__, "--device", args.device, "--worker", side, str(model_dir),
                       str(data_dir), str(args.steps), str(args.warmup)]
                if args.threads:
                    cmd += ["--threads", str(args.threads)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode:
                    raise SystemExit(done.stderr)
                result[side] = json.loads(done.stdout.strip().splitlines()[-1])
            # Same weights, same first batch, dropout aside: the first losses should be close.
            rows.append((size, result["bertkit"], result["transformers"]))
            print(f"{size}: first-step loss bertkit {result['bertkit']['first_loss']:.4f}, "
                  f"transformers {result['transformers']['first_loss']:.4f}", file=sys.stderr)

    threads = args.threads or torch.get_num_threads()
    memory = "peak GPU memory" if args.device.startswith("cuda") else "peak RSS growth"
    print(f"\nPretraining step (MLM + NSP, AdamW), batch {BATCH} x {SEQ} tokens, 15% masked; {args.device}, "
          f"{threads} thread(s), {args.steps} timed steps after {args.warmup}\n")
    print(f"| model | bertkit tokens/s | transformers tokens/s | ratio | bertkit {memory} | "
          f"transformers {memory} |")
    print("|---|---:|---:|---:|---:|---:|")
    for size, ours, theirs in rows:
        layers, hidden, heads, _ = SIZES[size]
        print(f"| {size} (L{layers}/H{hidden}/A{heads}) | {ours['tokens_per_s']:,.0f} | {theirs['tokens_per_s']:,.0f} "
              f"| {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x | {ours['peak_mib']:,.0f} MiB "
              f"| {theirs['peak_mib']:,.0f} MiB |")


if __name__ == "__main__":
    main()
