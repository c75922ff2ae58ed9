"""The sentence-transformers files of a model directory: what they ask for, and carrying them along.

all-MiniLM-L6-v2 is a sentence-transformers pipeline: `modules.json` lists Transformer -> Pooling ->
Normalize, and each module's settings sit in its folder. Two layouts are in use:

                        sentence-transformers 2 to 5                sentence-transformers 6
    pooling             1_Pooling/config.json:                      1_Pooling/config.json:
                        `pooling_mode_mean_tokens: true`            `pooling_mode: "mean"`
    token limit         sentence_bert_config.json: `max_seq_length` tokenizer_config.json: `model_max_length`
    normalisation       a Normalize entry in modules.json           the same (and a 2_Normalize folder)
    projection          a Dense entry (after Pooling): config.json (in_features, out_features, bias,
                        activation_function) and the layer's weights (`linear.weight`, `linear.bias`)

Both are read. A directory bertkit writes from such a model (fine-tuned, further pretrained,
exported) holds the same encoder, so it carries these files and stays the same pipeline for
sentence-transformers and for `bertkit encode`.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit.errors import BertkitError
from bertkit.outputs import atomic_path

log = logging.getLogger("bertkit")

# Top-level files of the pipeline (the module folders are named in modules.json).
FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
# Old layout: one boolean per mode -> the mode's name in the new layout.
OLD_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Module types whose work bertkit does itself: the encoder, pooling, a dense projection, L2 normalisation.
KNOWN_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
# A Dense module's activation_function -> the module bertkit applies.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON ({e}); restore it from the original model") from None


def modules(model_dir: Path) -> list[dict]:
    """modules.json's entries ({"idx", "name", "path", "type"}), [] for a plain BERT directory."""
    path = model_dir / "modules.json"
    if not path.is_file():
        return []
    entries = _read_json(path)
    if not isinstance(entries, list) or not all(isinstance(m, dict) for m in entries):
        raise BertkitError(f"{path} must be a list of modules ({{'path': ..., 'type': ...}}); restore it")
    return entries


def _kind(entry: dict) -> str:
    """'...modules.pooling.Pooling' -> 'Pooling'."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def pooling_mode(model_dir: Path) -> str | None:
    """The Pooling module's mode ("mean", "cls", "max", ...; modes joined by "+" when it concatenates
    several), None when the directory has no Pooling module."""
    folder = next((m.get("path") for m in modules(model_dir) if _kind(m) == "Pooling"), None) or "1_Pooling"
    path = model_dir / folder / "config.json"
    if not path.is_file():
        return None
    config = _read_json(path)
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [name for key, name in OLD_POOLING_KEYS.items() if config.get(key)]
    names = [mode] if isinstance(mode, str) else list(mode)
    if not names:
        raise BertkitError(f'{path} sets no pooling mode; set `pooling_mode`, e.g. "mean"')
    return "+".join(names)


def normalizes(model_dir: Path) -> bool:
    """True when the pipeline L2-normalises the sentence vectors (a Normalize module)."""
    return any(_kind(m) == "Normalize" for m in modules(model_dir))


def token_limit(model_dir: Path) -> int | None:
    """The pipeline's token limit: max_seq_length (old layout), else, in a sentence-transformers
    directory, the tokenizer's model_max_length (new layout); None when there is no pipeline."""
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        limit = _read_json(st_config).get("max_seq_length")
        if limit is not None:
            return int(limit)
    tokenizer_config = model_dir / "tokenizer_config.json"
    if modules(model_dir) and tokenizer_config.is_file():
        limit = _read_json(tokenizer_config).get("model_max_length")
        if isinstance(limit, int) and limit < 10**9:  # transformers writes 1e30 for "no limit"
            return limit
    return None


def unsupported_modules(model_dir: Path) -> list[str]:
    """Types in modules.json that bertkit does not apply (e.g. a Dense projection after pooling)."""
    return [str(m.get("type")) for m in modules(model_dir) if _kind(m) not in KNOWN_MODULES]


def dense(model_dir: Path) -> nn.Sequential | None:
    """The pipeline's Dense projections after pooling (Linear, activation), in order; None without any."""
    layers: list[nn.Module] = []
    for entry in modules(model_dir):
        if _kind(entry) != "Dense":
            continue
        folder = model_dir / str(entry.get("path", ""))
        config = _read_json(folder / "config.json")
        activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        if activation not in ACTIVATIONS:
            raise BertkitError(
                f"{folder}/config.json: activation_function {activation} is not one bertkit applies "
                f"({', '.join(ACTIVATIONS)})"
            )
        linear = nn.Linear(config["in_features"], config["out_features"], bias=config.get("bias", True))
        if (folder / "model.safetensors").is_file():
            weights = load_file(folder / "model.safetensors")
        elif (folder / "pytorch_model.bin").is_file():
            weights = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise BertkitError(f"{folder} has no weights (model.safetensors): restore it from the original model")
        linear.load_state_dict({k.removeprefix("linear."): v for k, v in weights.items()})
        layers += [linear, ACTIVATIONS[activation]()]
    return nn.Sequential(*layers).eval() if layers else None


def write_pipeline(model_dir: Path, pooling: str, dim: int, normalize: bool) -> None:
    """modules.json (Transformer -> Pooling (-> Normalize)) and 1_Pooling/config.json, for a directory
    whose encoder is trained to be used with `pooling` (cls, mean or max)."""
    (model_dir / "1_Pooling").mkdir(parents=True, exist_ok=True)
    with atomic_path(model_dir / "1_Pooling" / "config.json") as tmp:
        tmp.write_text(json.dumps({"word_embedding_dimension": dim, "pooling_mode": pooling}, indent=2))
    kinds = [("", "Transformer"), ("1_Pooling", "Pooling")] + ([("2_Normalize", "Normalize")] if normalize else [])
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (path, kind) in enumerate(kinds)
    ]
    with atomic_path(model_dir / "modules.json") as tmp:
        tmp.write_text(json.dumps(entries, indent=2))


def add_dense(model_dir: Path, linear: nn.Linear) -> None:
    """Append a Dense projection (no activation) after the Pooling module of `model_dir`'s pipeline,
    as sentence-transformers writes one: DIR/N_Dense/config.json and model.safetensors."""
    entries = modules(model_dir)
    at = next(i for i, m in enumerate(entries) if _kind(m) == "Pooling") + 1
    folder = model_dir / f"{at}_Dense"
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "in_features": linear.in_features,
        "out_features": linear.out_features,
        "bias": linear.bias is not None,
        "activation_function": "torch.nn.modules.linear.Identity",
    }
    with atomic_path(folder / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2))
    tensors = {f"linear.{k}": v.detach().cpu().contiguous() for k, v in linear.state_dict().items()}
    with atomic_path(folder / "model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    entry = {"idx": at, "name": str(at), "path": folder.name, "type": "sentence_transformers.models.Dense"}
    entries = [m for m in entries if _kind(m) != "Dense"]
    entries.insert(at, entry)
    for i, m in enumerate(entries):
        m["idx"], m["name"] = i, str(i)
    with atomic_path(model_dir / "modules.json") as tmp:
        tmp.write_text(json.dumps(entries, indent=2))


def copy_sentence_files(source: Path, target: Path) -> list[str]:
    """Copy the pipeline files of `source` (if any) into `target`; the names copied."""
    names = [name for name in FILES if (source / name).is_file()]
    names += [m["path"] for m in modules(source) if m.get("path") and (source / m["path"]).is_dir()]
    for name in names:
        files = [source / name] if (source / name).is_file() else sorted(p for p in (source / name).rglob("*"))
        for path in files:
            if path.is_dir():
                continue
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                shutil.copyfile(path, tmp)
    return names
