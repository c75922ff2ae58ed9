"""GPU rows: bertkit against transformers on the same CUDA device, the same MR sentences and weights.

    python bench/gpu.py [--device cuda] [--n 20000] [--steps 20]      (bench/gpu.sh runs it)

Rows: sentence encoding (MiniLM and a BERT-base-shaped model; fp32 and fp16 weights), fine-tuning steps
(classification, batch 32 MR sentences, AdamW; fp32, bf16 and fp16 autocast) for both libraries.
Pretraining tokens/s comes from bench/pretrain.py --device cuda. Prints a Markdown table headed by the
GPU's name and the date; on a CPU (`--device cpu --n 200 --steps 2`) it checks that the script runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import load_sentences  # noqa: E402
from speed import base_model_dir  # noqa: E402

from bertkit.fetch import resolve_model  # noqa: E402


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def encode_rate(side: str, model_dir: str, texts: list[str], device: str, half: bool) -> float:
    if side == "bertkit":
        from bertkit import Encoder

        enc = Encoder(model_dir, device=device, batch_size=128, pooling="mean")
        if half:
            enc.model.half()
        run = enc.encode
    else:
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(model_dir)
        model = transformers.AutoModel.from_pretrained(model_dir).to(device).eval()
        if half:
            model.half()

        @torch.inference_mode()
        def run(batch_texts):
            for i in range(0, len(batch_texts), 128):
                b = tok(batch_texts[i:i + 128], padding=True, truncation=True, max_length=128,
                        return_tensors="pt").to(device)
                h = model(**b).last_hidden_state
                m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
                ((h * m).sum(1) / m.sum(1)).float().cpu()
    run(texts[:256])
    sync(device)
    start = time.perf_counter()
    run(texts)
    sync(device)
    return len(texts) / (time.perf_counter() - start)


def finetune_rate(side: str, model_dir: str, texts: list[str], device: str, precision: str, steps: int) -> float:
    from bertkit.data.collate import pad
    from bertkit.tokenizer import BertTokenizer
    from bertkit.train.loop import autocast

    tok = BertTokenizer.from_dir(model_dir)
    ids, mask = pad([e.ids for e in tok.encode_batch(texts[:32 * (steps + 1)], max_length=128)], tok.pad_id)
    ids, mask = ids.to(device), mask.to(device)
    labels = torch.arange(ids.shape[0], device=device) % 2
    if side == "bertkit":
        from bertkit.checkpoint import load_model
        from bertkit.model import BertForSequenceClassification

        model = load_model(model_dir, BertForSequenceClassification, num_labels=2).to(device).train()

        def loss_of(i, m, y):
            return torch.nn.functional.cross_entropy(model(i, m), y)
    else:
        import transformers

        model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).to(device)
        model.train()

        def loss_of(i, m, y):
            return model(input_ids=i, attention_mask=m, labels=y).loss
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.startswith("cuda"))
    scaler = torch.amp.GradScaler(enabled=precision == "fp16")

    def step(k):
        sl = slice(32 * k, 32 * (k + 1))
        with autocast(precision, torch.device(device)):
            loss = loss_of(ids[sl], mask[sl], labels[sl])
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    step(0)
    sync(device)
    start = time.perf_counter()
    for k in range(steps):
        step(k)
    sync(device)
    return 32 * steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=20000, help="MR sentences encoded per row")
    ap.add_argument("--steps", type=int, default=20, help="timed fine-tuning steps per row")
    args = ap.parse_args()
    texts = load_sentences(args.n)
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n")
    print("| row | bertkit | transformers | ratio |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"MiniLM": str(resolve_model("minilm")), "BERT-base shape": str(base_model_dir(Path(tmp)))}
        for label, model_dir in models.items():
            for half in (False, True):
                if half and not args.device.startswith("cuda"):
                    continue
                ours, theirs = (encode_rate(s, model_dir, texts, args.device, half)
                                for s in ("bertkit", "transformers"))
                print(f"| encode, {label} {'fp16' if half else 'fp32'} | {ours:,.0f} sentences/s | {theirs:,.0f} | "
                      f"**{ours / theirs:.2f}x** |", flush=True)
            for precision in ("fp32", "bf16", "fp16"):
                if precision == "fp16" and not args.device.startswith("cuda"):
                    continue
                ours, theirs = (finetune_rate(s, model_dir, texts, args.device, precision, args.steps)
                                for s in ("bertkit", "transformers"))
                print(f"| fine-tune step, {label} {precision} | {ours:,.0f} examples/s | {theirs:,.0f} | "
                      f"**{ours / theirs:.2f}x** |", flush=True)


if __name__ == "__main__":
    main()
