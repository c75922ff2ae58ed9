"""The speed table (`make bench`): bertkit and transformers side by side, each measurement in its own
process, on the same real MR sentences and the same weights; a Markdown table of ratios.

    .venv/bin/python bench/speed.py [--n 2000] [--rounds 3] [--out bench/results.md]

Rows: sentence encoding with MiniLM (bertkit fp32 / ONNX fp32 / ONNX int8, each against transformers
fp32), the peers CTranslate2 and optimum's ONNX Runtime models (optimum from .venv-optimum, `make
optimum-env`) at fp32 and int8 with a head-to-head comparison in alternating rounds, and encoding
with a BERT-base-shaped random model; one fine-tuning step (classification, AdamW) and
one pretraining step (MLM + NSP, bench/pretrain.py); peak memory growth of each. Then the achieved
GFLOP/s of BERT-base inference (batch 32 x 128 tokens, bertkit fp32) against a GEMM measured in
the same run on the same machine (torch.mm of BERT-base's feed-forward shape), and what int8 gains
over fp32 for one GEMM in onnxruntime on this CPU (the bound on what int8 can give the encoder).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode import PeakRSS, best_seconds, load_sentences, transformers_encode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)


def base_model_dir(tmp: Path) -> Path:
    """A BERT-base-shaped model with random weights and MiniLM's vocab (speed does not need training)."""
    from bertkit.checkpoint import save_model
    from bertkit.fetch import resolve_model
    from bertkit.model import BertConfig, BertModel
    from bertkit.tokenizer import BertTokenizer

    d = tmp / "base"
    if not (d / "model.safetensors").is_file():
        tokenizer = BertTokenizer.from_dir(resolve_model("minilm"))
        torch.manual_seed(0)
        save_model(BertModel(BertConfig(vocab_size=tokenizer.vocab_size, **BASE)).eval(), d, tokenizer)
    return d


def onnx_dir() -> Path:
    from bertkit.fetch import resolve_model

    d = ROOT / "runs" / "minilm-onnx"
    report = d / "export.json"
    if not (d / "model.int8.onnx").is_file() or "held_out" not in report.read_text():  # an older export
        from bertkit.export import export_dir

        export_dir(resolve_model("minilm"), d, quantize="int8")
    return d


def versus(precision: str, ours_side: str, ours_dir: str, peers: list[tuple[str, str]], model_dir: str, n: int,
           rounds: int, tmp: Path) -> list[str]:
    """Bullet lines: bertkit's `ours_side` against each peer side, measured in alternating rounds."""
    reference = tmp / "h2h-reference.npy"
    run("encode", "transformers", model_dir, str(n), str(reference))
    rates: dict[str, list[float]] = {}
    worst: dict[str, float] = {}
    for _ in range(rounds):
        for side, directory in [(ours_side, ours_dir)] + [(side, model_dir) for _, side in peers]:
            out = tmp / f"h2h-{side}.npy"
            rates.setdefault(side, []).append(run("encode", side, directory, str(n), str(out))["rate"])
            worst[side] = float((np.load(reference) * np.load(out)).sum(1).min())
    lines = []
    worst = {side: round(w, 4) for side, w in worst.items()}  # as printed: equal there is level
    for name, side in peers:
        ratio = float(np.median([a / b for a, b in zip(rates[ours_side], rates[side])]))
        lines.append(f"- {precision}, against {name}: **{ratio:.2f}x its speed** ({'ahead' if ratio > 1 else 'behind'}; "
                     f"rounds {', '.join(f'{a:.0f}/{b:.0f}' for a, b in zip(rates[ours_side], rates[side]))} "
                     f"sentences/s); worst cosine {worst[ours_side]:.4f} vs {worst[side]:.4f} "
                     f"({'ahead' if worst[ours_side] > worst[side] else 'level' if worst[ours_side] == worst[side] else 'behind'})")
        print(lines[-1], file=sys.stderr)
    return lines


# ---- workers: one measurement each, in a fresh process ----

def ct2_dir(model_dir: str, quantization: str) -> Path:
    """MiniLM converted by CTranslate2's own converter (`ct2-transformers-converter`), once, into runs/."""
    d = ROOT / "runs" / f"minilm-ct2-{quantization}"
    if not (d / "model.bin").is_file():
        subprocess.run([str(Path(sys.executable).parent / "ct2-transformers-converter"), "--model", model_dir,
                        "--output_dir", str(d), "--quantization", quantization, "--force"], check=True,
                       capture_output=True)
    return d


def ctranslate2_encode(model_dir: str, compute_type: str, batch_size: int = 32):
    """CTranslate2's Encoder as its users run it for sentence vectors (mean pooling, L2-normalised), with
    the same length sorting as bertkit, so the two int8 engines meet on equal terms."""
    import ctranslate2

    from bertkit.tokenizer import BertTokenizer

    tokenizer = BertTokenizer.from_dir(model_dir)
    encoder = ctranslate2.Encoder(str(ct2_dir(model_dir, compute_type)), device="cpu",
                                  compute_type=compute_type, intra_threads=torch.get_num_threads())

    def run(texts):
        pieces = [tokenizer.convert_ids_to_tokens(e.ids) for e in tokenizer.encode_batch(texts, max_length=256)]
        order = sorted(range(len(pieces)), key=lambda i: len(pieces[i]))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            hidden = np.array(encoder.forward_batch([pieces[r] for r in rows]).last_hidden_state)
            lengths = np.array([len(pieces[r]) for r in rows])
            mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None])[..., None]
            v = (hidden * mask).sum(1) / lengths[:, None]
            out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    return run


def work_encode(side: str, model_dir: str, n: int, out: str) -> dict:
    texts = load_sentences(n)
    if side == "transformers":
        run = transformers_encode(model_dir, 32)
    elif side.startswith("ctranslate2-"):
        run = ctranslate2_encode(model_dir, side.removeprefix("ctranslate2-"))
    else:
        from bertkit import Encoder

        backend = side.removeprefix("bertkit-")
        run = Encoder(model_dir, pooling="mean", normalize=True, batch_size=32,
                      backend="torch" if backend == "bertkit" else backend).encode
    run(texts[:128])  # warm up
    with PeakRSS() as mem:
        start = time.perf_counter()
        vectors = run(texts)
        seconds = time.perf_counter() - start
    np.save(out, vectors)
    return {"rate": len(texts) / seconds, "unit": "sentences/s", "mib": mem.mib}


def work_finetune(side: str, model_dir: str, steps: int) -> dict:
    """Training steps of sentence classification on MR (batch 32, AdamW), dropout on."""
    texts = load_sentences(32 * (steps + 2))
    labels = torch.tensor([i % 2 for i in range(len(texts))])
    if side == "transformers":
        import transformers

        tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
        model = transformers.BertForSequenceClassification.from_pretrained(model_dir, num_labels=2).train()
        batches = [dict(tok(texts[i:i + 32], padding="longest", return_tensors="pt")) for i in range(0, len(texts), 32)]

        def loss_of(b, y):
            return model(**b, labels=y).loss
    else:
        from bertkit.checkpoint import load_model
        from bertkit.data.collate import collate
        from bertkit.model import BertForSequenceClassification
        from bertkit.tokenizer import BertTokenizer

        tok = BertTokenizer.from_dir(model_dir)
        model = load_model(model_dir, BertForSequenceClassification, num_labels=2).train()
        encs = tok.encode_batch(texts, max_length=512)
        batches = [collate([{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encs[i:i + 32]])
                   for i in range(0, len(texts), 32)]

        def loss_of(b, y):
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            return torch.nn.functional.cross_entropy(logits, y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=True)  # as Trainer and bertkit do
    with PeakRSS() as mem:
        for i, b in enumerate(batches):
            if i == 2:
                start = time.perf_counter()
            loss_of(b, labels[32 * i: 32 * i + 32]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
    return {"rate": 32 * steps / seconds, "unit": "examples/s", "mib": mem.mib}


def work_flops(model_dir: str) -> dict:
    """BERT-base inference, batch 32 x 128, bertkit fp32: achieved GFLOP/s against a measured GEMM."""
    from bertkit.checkpoint import load_model
    from bertkit.model import BertModel

    B, T, H, L, FF = 32, 128, BASE["hidden_size"], BASE["num_hidden_layers"], BASE["intermediate_size"]
    # Multiply-adds x 2: QKV + output projections 4 H^2, feed-forward 2 H FF per token; attention
    # scores and context 2 T H per token; the pooler's one H^2 per sequence.
    flops = 2 * L * B * T * (4 * H * H + 2 * H * FF + 2 * T * H) + 2 * B * H * H
    model = load_model(model_dir, BertModel)
    ids = torch.randint(1000, 20000, (B, T), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        model(ids, mask)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(ids, mask)
            times.append(time.perf_counter() - start)
        a, w = torch.randn(B * T, H), torch.randn(H, FF)
        torch.mm(a, w)
        gemm = []
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, w)
            gemm.append(time.perf_counter() - start)
    model_rate = flops / min(times) / 1e9
    gemm_rate = 2 * B * T * H * FF / min(gemm) / 1e9
    return {"model_gflops": model_rate, "gemm_gflops": gemm_rate, "share": model_rate / gemm_rate,
            "seconds": min(times)}


def work_int8_gemm(tmp: str) -> dict:
    """What int8 buys on this CPU at the GEMM level: one MatMul of MiniLM's feed-forward shape
    ([800 x 384] x [384 x 1536], 32 sentences of 25 tokens) in onnxruntime, fp32 against the same
    graph after bertkit's dynamic int8 quantisation, with the sessions bertkit uses (best of 20)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bertkit.onnx_model import OnnxModel
    from bertkit.export.quantize import quantize_int8

    M, K, N = 800, 384, 1536
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((K, N)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", N])], [w])
    fp32 = Path(tmp) / "gemm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
    int8 = quantize_int8(fp32, Path(tmp) / "gemm.int8.onnx")
    x = {"x": np.random.default_rng(1).standard_normal((M, K)).astype(np.float32)}
    rates = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        session = OnnxModel(path).session
        rates[name] = 2 * M * K * N / best_seconds(lambda: session.run(None, x), 20) / 1e9
    flags = open("/proc/cpuinfo").read()
    vnni = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags.split()]
    return {**rates, "speedup": rates["int8"] / rates["fp32"], "vnni": ", ".join(vnni) or "none (AVX2 only)"}


def worker(args: list[str]) -> dict:
    kind, *rest = args
    if kind == "encode":
        return work_encode(rest[0], rest[1], int(rest[2]), rest[3])
    if kind == "finetune":
        return work_finetune(rest[0], rest[1], int(rest[2]))
    if kind == "int8-gemm":
        return work_int8_gemm(rest[0])
    return work_flops(rest[0])


OPTIMUM_PY = ROOT / ".venv-optimum" / "bin" / "python"


def run(*args: str) -> dict:
    if args[0] == "encode" and args[1].startswith("optimum-"):  # its own environment: bench/optimum_peer.py
        texts = Path(args[4]).with_suffix(".json")
        texts.write_text(json.dumps(load_sentences(int(args[3]))))
        command = [str(OPTIMUM_PY), str(ROOT / "bench" / "optimum_peer.py"), "--model", args[2], "--texts",
                   str(texts), "--quantize", args[1].removeprefix("optimum-"), "--out", args[4]]
    else:
        command = [sys.executable, __file__, "--worker", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="MR sentences per encoding row (BERT-base: a quarter)")
    ap.add_argument("--steps", type=int, default=8, help="timed fine-tuning steps")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of the head-to-head comparisons")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return
    from bertkit.fetch import resolve_model

    minilm = str(resolve_model("minilm"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        base, onnx = str(base_model_dir(tmp)), str(onnx_dir())

        def encode_row(label, side, model_dir, reference_dir, n):
            theirs = run("encode", "transformers", reference_dir, str(n), str(tmp / "t.npy"))
            ours = run("encode", side, model_dir, str(n), str(tmp / "o.npy"))
            cos = (np.load(tmp / "t.npy") * np.load(tmp / "o.npy")).sum(1)  # both L2-normalised
            ours["cosine"] = cos
            rows.append((label, ours, theirs, f"cosine to transformers fp32: mean {cos.mean():.4f}, "
                                              f"1st percentile {np.percentile(cos, 1):.4f}, worst {cos.min():.4f}"))
            print(f"{label}: {ours['rate']:.1f} vs {theirs['rate']:.1f} {ours['unit']}", file=sys.stderr)

        encode_row("encode, MiniLM fp32", "bertkit", minilm, minilm, args.n)
        encode_row("encode, MiniLM ONNX fp32", "bertkit-onnx", onnx, minilm, args.n)
        encode_row("encode, MiniLM ONNX int8", "bertkit-onnx-int8", onnx, minilm, args.n)
        encode_row("peer: CTranslate2 fp32, MiniLM", "ctranslate2-float32", minilm, minilm, args.n)
        encode_row("peer: CTranslate2 int8, MiniLM", "ctranslate2-int8", minilm, minilm, args.n)
        if OPTIMUM_PY.is_file():
            encode_row("peer: optimum ONNX Runtime fp32, MiniLM", "optimum-none", minilm, minilm, args.n)
            encode_row("peer: optimum ONNX Runtime int8, MiniLM", "optimum-int8", minilm, minilm, args.n)
        else:
            print(f"no {OPTIMUM_PY}: `make optimum-env` adds optimum's rows", file=sys.stderr)
        head_to_head = []
        for precision, ours_side, peers in (
            ("fp32", "bertkit-onnx", [("CTranslate2", "ctranslate2-float32"), ("optimum", "optimum-none")]),
            ("int8", "bertkit-onnx-int8", [("CTranslate2", "ctranslate2-int8"), ("optimum", "optimum-int8")]),
        ):
            peers = [(name, side) for name, side in peers if OPTIMUM_PY.is_file() or name != "optimum"]
            head_to_head += versus(precision, ours_side, onnx, peers, minilm, args.n, args.rounds, tmp)
        encode_row("encode, BERT-base shape fp32", "bertkit", base, base, args.n // 4)
        for label, model_dir in (("fine-tune step, MiniLM", minilm), ("fine-tune step, BERT-base shape", base)):
            ours, theirs = run("finetune", "bertkit", model_dir, str(args.steps)), \
                run("finetune", "transformers", model_dir, str(args.steps))
            rows.append((label, ours, theirs, "classification, batch 32 MR sentences, AdamW"))
            print(f"{label}: {ours['rate']:.1f} vs {theirs['rate']:.1f}", file=sys.stderr)
        flops = run("flops", base)
        gemm8 = run("int8-gemm", str(tmp))
    pretrain = subprocess.run([sys.executable, str(ROOT / "bench" / "pretrain.py"), "--sizes", "minilm"],
                              capture_output=True, text=True)
    table = [line for line in pretrain.stdout.splitlines() if line.startswith("| minilm")]
    if table:
        cells = [c.strip() for c in table[0].strip("|").split("|")]
        rate = lambda c: float(c.replace(",", ""))  # noqa: E731
        mib = lambda c: float(c.split()[0].replace(",", ""))  # noqa: E731
        rows.append(("pretrain step, MiniLM shape", {"rate": rate(cells[1]), "unit": "tokens/s", "mib": mib(cells[4])},
                     {"rate": rate(cells[2]), "mib": mib(cells[5])}, "MLM + NSP, batch 32 x 128, AdamW (bench/pretrain.py)"))

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    lines = [f"Machine: {cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{time.strftime('%Y-%m-%d')}.", "",
             "| row | bertkit | transformers | ratio | peak RSS growth (bertkit / transformers) | notes |",
             "|---|---:|---:|---:|---:|---|"]
    for label, ours, theirs, note in rows:
        lines.append(f"| {label} | {ours['rate']:,.1f} {ours['unit']} | {theirs['rate']:,.1f} | "
                     f"**{ours['rate'] / theirs['rate']:.2f}x** | {ours['mib']:,.0f} / {theirs['mib']:,.0f} MiB | {note} |")
    lines += ["", f"BERT-base inference (batch 32 x 128, fp32, bertkit): {flops['model_gflops']:.1f} GFLOP/s "
                  f"({flops['seconds']:.2f} s a batch); GEMM of the feed-forward shape ([4096 x 768] x [768 x 3072]) "
                  f"on the same machine: {flops['gemm_gflops']:.1f} GFLOP/s; "
                  f"**{100 * flops['share']:.0f}% of the GEMM rate**.",
              "", f"int8 against fp32 at the GEMM level (onnxruntime, MiniLM's feed-forward shape [800 x 384] x "
                  f"[384 x 1536]): {gemm8['int8']:.1f} vs {gemm8['fp32']:.1f} GFLOP/s, **{gemm8['speedup']:.2f}x**; "
                  f"int8 dot-product instructions on this CPU: {gemm8['vnni']}."]
    lines += ["", "Peer rows: the peer's speed in the bertkit column, transformers fp32 in its own.", "",
              f"Head to head, bertkit's ONNX graphs against the peers at the same precision, {args.rounds} "
              f"alternating rounds on the same {args.n} sentences (one process per measurement; speed as the median "
              "of the per-round ratios, since this machine's speed drifts between rounds; worst cosine to "
              "transformers fp32):", ""] + head_to_head
    text = "\n".join(lines) + "\n"
    write_section(Path(args.out), text)
    print(text)


BEGIN, END = "<!-- bench/speed.py writes from here -->", "<!-- to here -->"


def write_section(path: Path, text: str) -> None:
    """Replace only the block between BEGIN and END in results.md (the rest is other benchmarks' and prose);
    a file without the markers gets the block appended."""
    old = path.read_text() if path.is_file() else ""
    block = f"{BEGIN}\n{text}{END}"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + block + rest.split(END, 1)[1]
    else:
        new = old + ("\n" if old else "") + block + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(new)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
