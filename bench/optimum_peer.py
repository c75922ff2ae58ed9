"""The optimum peer for bench/speed.py: MiniLM sentence vectors through Hugging Face optimum's ONNX
Runtime model, fp32 or int8, as optimum's documentation shows them. Runs in its own environment
(`make optimum-env`: optimum-onnx pins transformers < 4.58, older than bertkit's test dependency), so it
imports nothing from bertkit; bench/speed.py hands it the sentences and reads back the vectors.

    .venv-optimum/bin/python bench/optimum_peer.py --model DIR --texts T.json --quantize int8 --out V.npy

Prints one JSON line: {"rate": sentences/s, "unit": "sentences/s", "mib": peak RSS growth}.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from encode import PeakRSS  # bench/encode.py (torch and numpy only)

ROOT = Path(__file__).resolve().parents[1]


def exported(model_dir: str, quantize: str) -> Path:
    """optimum's export of the model (`from_pretrained(export=True)`), and for int8 its ORTQuantizer with
    the dynamic, per-channel AVX-512 VNNI configuration, both once into runs/."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer

    fp32 = ROOT / "runs" / "minilm-optimum-fp32"
    if not (fp32 / "model.onnx").is_file():
        ORTModelForFeatureExtraction.from_pretrained(model_dir, export=True).save_pretrained(fp32)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(fp32)
    if quantize == "none":
        return fp32
    int8 = ROOT / "runs" / "minilm-optimum-int8"
    if not any(int8.glob("*.onnx")):
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        ORTQuantizer.from_pretrained(fp32).quantize(save_dir=int8, quantization_config=config)
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(int8)
    return int8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--texts", required=True, help="a JSON list of sentences")
    ap.add_argument("--quantize", choices=("none", "int8"), default="none")
    ap.add_argument("--out", required=True, help="where to save the L2-normalised vectors (.npy)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    d = exported(args.model, args.quantize)
    name = next(p.name for p in d.glob("*.onnx"))
    model = ORTModelForFeatureExtraction.from_pretrained(d, file_name=name)
    tokenizer = AutoTokenizer.from_pretrained(d)
    texts = json.loads(Path(args.texts).read_text())

    def run(texts: list[str]) -> np.ndarray:
        # sorted by length, as bertkit and the CTranslate2 row batch them
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
        for i in range(0, len(order), args.batch_size):
            rows = order[i : i + args.batch_size]
            batch = tokenizer([texts[r] for r in rows], padding=True, truncation=True, max_length=256,
                              return_tensors="np")
            hidden = model(**batch).last_hidden_state  # [B, T, H]
            mask = batch["attention_mask"][..., None].astype(np.float32)
            v = (hidden * mask).sum(1) / mask.sum(1)
            out[rows] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out

    run(texts[:128])  # warm up
    with PeakRSS() as mem:
        start = time.perf_counter()
        vectors = run(texts)
        seconds = time.perf_counter() - start
    np.save(args.out, vectors)
    print(json.dumps({"rate": len(texts) / seconds, "unit": "sentences/s", "mib": mem.mib}))


if __name__ == "__main__":
    main()
