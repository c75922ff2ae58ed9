"""`bertkit convert`: Google's TensorFlow BERT checkpoints <-> bertkit / Hugging Face model directories.

TF -> HF: read the tensor bundle (no TensorFlow needed), rename through `convert.tf`'s key table,
write config.json (from bert_config.json), model.safetensors and vocab.txt. HF -> TF: the reverse,
writing bert_model.ckpt.{index,data-00000-of-00001}, bert_config.json and vocab.txt, the layout
google-research/bert's scripts take as --init_checkpoint. Each direction ends with a parity check:
the TF-named tensors run through `convert.tf.reference_forward` (modeling.py's maths in TF's layout)
against bertkit's model loaded from the HF side, on real sentences.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from bertkit.checkpoint import atomic_write_text, load_config, load_model, read_state_dict
from bertkit.convert.bundle import bundle_names, read_bundle, resolve_prefix, write_bundle
from bertkit.convert.tf import TF_TRAINING_STATE, from_tf, reference_forward, to_tf
from bertkit.data.collate import collate
from bertkit.data.samples import BUILT_IN
from bertkit.errors import BertkitError
from bertkit.model import BertConfig, BertModel
from bertkit.outputs import atomic_path
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger("bertkit")

TF_CHECKPOINT = "bert_model.ckpt"
PARITY_TOLERANCE = 1e-4  # fp32 model against a float64 reference


def is_tf_checkpoint(path: str | Path) -> bool:
    p = Path(path)
    return (
        p.name.endswith(".index") or p.with_name(p.name + ".index").is_file() or (p.is_dir() and any(p.glob("*.index")))
    )


def tf_to_hf(
    checkpoint: str | Path,
    output: str | Path,
    config_file: str | Path | None = None,
    vocab_file: str | Path | None = None,
) -> dict:
    """A TF checkpoint (prefix, .index file or its directory) -> a Hugging Face model directory."""
    prefix = resolve_prefix(checkpoint)
    config_file = Path(config_file) if config_file else _beside(prefix, "bert_config.json", "config.json")
    vocab_file = Path(vocab_file) if vocab_file else _beside(prefix, "vocab.txt")
    try:
        config_data = json.loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{config_file} is not valid JSON ({e}): restore it from the original checkpoint") from e
    config = BertConfig.from_dict(config_data, source=str(config_file))
    skipped = [name for name in bundle_names(prefix) if TF_TRAINING_STATE.search(name)]
    tf_state = read_bundle(prefix, skip=lambda name: bool(TF_TRAINING_STATE.search(name)))  # Adam slots: never read
    hf_state, _, unknown = from_tf(tf_state)
    if unknown:
        log.warning(
            "%s: %d variable(s) with no place in BERT, not converted: %s", prefix, len(unknown), ", ".join(unknown[:6])
        )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, object] = {"model_type": "bert", "architectures": [_architecture(hf_state)]}
    if "classifier.weight" in hf_state:
        meta["id2label"] = {str(i): f"LABEL_{i}" for i in range(hf_state["classifier.weight"].shape[0])}
    atomic_write_text(out / "config.json", json.dumps({**config.to_dict(), **meta}, indent=2) + "\n")
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(
            {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in hf_state.items()},
            str(tmp),
            metadata={"format": "pt"},
        )
    shutil.copyfile(vocab_file, out / "vocab.txt")
    report = {
        "from": str(prefix),
        "to": str(out),
        "tensors": len(hf_state),
        "skipped_training_state": len(skipped),
        "not_converted": unknown,
    }
    report["parity"] = _parity(tf_state, out, config)
    return report


def hf_to_tf(model_dir: str | Path, output: str | Path) -> dict:
    """A Hugging Face / bertkit model directory -> Google's layout (bert_model.ckpt + bert_config.json)."""
    model_dir = Path(model_dir)
    config = load_config(model_dir)
    hf_state = {k: v.float().numpy() for k, v in read_state_dict(model_dir).items()}
    tf_state, unknown = to_tf(hf_state)
    if unknown:
        log.warning(
            "%s: %d tensor(s) have no place in Google's layout and are not written: %s",
            model_dir,
            len(unknown),
            ", ".join(unknown[:6]),
        )
    out = Path(output)
    prefix = write_bundle(tf_state, out / TF_CHECKPOINT)
    atomic_write_text(out / "bert_config.json", json.dumps(config.to_dict(), indent=2) + "\n")
    if (model_dir / "vocab.txt").is_file():
        shutil.copyfile(model_dir / "vocab.txt", out / "vocab.txt")
    report = {"from": str(model_dir), "to": str(prefix), "tensors": len(tf_state), "not_converted": unknown}
    report["parity"] = _parity(read_bundle(prefix), model_dir, config)  # read back what was written
    return report


def _beside(prefix: Path, *names: str) -> Path:
    for name in names:
        if (prefix.parent / name).is_file():
            return prefix.parent / name
    raise BertkitError(
        f"{prefix.parent} has no {' or '.join(names)}: pass --config and --vocab "
        "(Google's checkpoints ship bert_config.json and vocab.txt beside bert_model.ckpt.*)"
    )


def _architecture(hf_state: dict) -> str:
    if "cls.predictions.bias" in hf_state:
        return "BertForPreTraining" if "cls.seq_relationship.weight" in hf_state else "BertForMaskedLM"
    if "qa_outputs.weight" in hf_state:
        return "BertForQuestionAnswering"
    return "BertForSequenceClassification" if "classifier.weight" in hf_state else "BertModel"


def _parity(tf_state: dict[str, np.ndarray], hf_dir: Path, config: BertConfig) -> dict:
    """bertkit's model from `hf_dir` against the float64 reference on the TF tensors, real sentences."""
    model = load_model(hf_dir, BertModel)
    if (hf_dir / "vocab.txt").is_file():
        encodings = BertTokenizer.from_dir(hf_dir).encode_batch(
            BUILT_IN, max_length=min(64, config.max_position_embeddings)
        )
        batch = collate([{"input_ids": e.ids, "token_type_ids": e.type_ids} for e in encodings])
        ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    else:  # no vocabulary: random ids, half the batch padded
        ids = torch.randint(0, config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
        mask, types = torch.ones_like(ids), torch.zeros_like(ids)
        mask[2:, 10:] = 0
    with torch.no_grad():
        ours = model(ids, mask, types)
    seq_ref, pooled_ref = reference_forward(tf_state, config, ids, types, mask)
    keep = mask.bool()
    result = {
        "inputs": int(ids.shape[0]),
        "sequence_max_abs_diff": float((ours.last_hidden_state.double() - seq_ref)[keep].abs().max()),
    }
    if pooled_ref is not None:
        result["pooled_max_abs_diff"] = float((ours.pooler_output.double() - pooled_ref).abs().max())
    worst = max(v for k, v in result.items() if k.endswith("diff"))
    if worst > PARITY_TOLERANCE:
        raise BertkitError(
            f"conversion parity check failed: outputs differ by {worst:.2e} (> {PARITY_TOLERANCE}) "
            "between the TensorFlow tensors and the converted model; the checkpoint's "
            "bert_config.json probably does not describe it (hidden_act, layer_norm_eps)"
        )
    return result
