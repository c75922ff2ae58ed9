"""Model directories in Hugging Face's layout: config.json, model.safetensors (or the old
pytorch_model.bin), vocab.txt (or tokenizer.json). Loading reports every missing and unused tensor by
name; saving writes files atomically, in Hugging Face's parameter names, so `transformers` loads our
directories too: tokenizer_config.json says the token limit (`model_max_length`), a CRF head comes
with its own modeling code (`bertkit.hf_remote`), and a model derived from a sentence-transformers
pipeline keeps that pipeline's files (`bertkit.sentence_files`).
"""

from __future__ import annotations

import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bertkit import hf_remote, sentence_files
from bertkit.convert.hf import from_hf, split_prefix, to_hf
from bertkit.errors import BertkitError
from bertkit.model import BertConfig, BertModel, config_of
from bertkit.outputs import atomic_path, atomic_write_text
from bertkit.tokenizer import BertTokenizer

__all__ = ["atomic_write_text", "load_config", "load_model", "load_weights", "read_state_dict", "save_model"]

log = logging.getLogger("bertkit")

ENCODER_PARTS = ("embeddings.", "layers.", "pooler.")


def load_config(model_dir: str | Path) -> BertConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise BertkitError(
            f"{path} not found: a model directory needs config.json, vocab.txt and "
            "model.safetensors (fetch a real one with `bertkit fetch minilm`)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BertkitError(f"{path} is not valid JSON ({e}): restore it from the original model") from e
    for key in hf_remote.CONFIG_KEYS:  # for transformers only (a CRF head's modeling code)
        data.pop(key, None)
    return BertConfig.from_dict(data, source=str(path))


def read_state_dict(model_dir: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a model directory, under the names they were saved with (no unpickling)."""
    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.is_file():  # sharded: {"weight_map": {name: file}}
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for f in files for k, v in _read_safetensors(d / f).items()}
    if (d / "model.safetensors").is_file():
        return _read_safetensors(d / "model.safetensors")
    if (d / "pytorch_model.bin").is_file():
        return _read_torch_bin(d / "pytorch_model.bin")
    raise BertkitError(
        f"no weights in {d}: expected model.safetensors or pytorch_model.bin "
        "(fetch a real model with `bertkit fetch minilm`)"
    )


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise BertkitError(
            f"{path} is not a readable safetensors file ({e}): it may be truncated or corrupt; fetch or copy it again"
        ) from e


def _read_torch_bin(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise BertkitError(
            f"{path} could not be loaded as plain tensors ({str(e).splitlines()[0]}). bertkit never "
            "unpickles arbitrary objects; re-save the weights with safetensors, or check the file "
            "is not truncated"
        ) from e
    if not isinstance(state, dict):
        raise BertkitError(f"{path} holds a {type(state).__name__}, not a dict of tensors")
    return state


@dataclass
class LoadReport:
    """What a load did not match: new heads are normal when fine-tuning; missing encoder weights are not."""

    newly_initialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def load_weights(model: nn.Module, hf_state: dict[str, torch.Tensor], source: str = "checkpoint") -> LoadReport:
    """Copy Hugging Face-named tensors into `model` (a BertModel or a head wrapping `.bert`)."""
    state, unknown = from_hf({k: v for k, v in hf_state.items() if k not in hf_remote.TENSORS})
    wants_prefix = hasattr(model, "bert")
    aligned = {}
    for name, tensor in state.items():
        bare = split_prefix(name)[1]
        if bare.startswith(ENCODER_PARTS):
            name = ("bert." + bare) if wants_prefix else bare
        aligned[name] = tensor
    expected = model.state_dict()
    missing = [k for k in expected if k not in aligned]
    encoder_missing = [k for k in missing if ".pooler." not in f".{k}" and _is_encoder(k)]
    if encoder_missing:
        raise BertkitError(
            f"{source} lacks {len(encoder_missing)} encoder weight(s), e.g. {', '.join(encoder_missing[:3])}: "
            "it is not a BERT checkpoint of this shape (check num_hidden_layers in config.json)"
        )
    for name, tensor in aligned.items():
        if name in expected and tensor.shape != expected[name].shape:
            raise BertkitError(
                f"{source}: `{name}` has shape {list(tensor.shape)} but the config gives "
                f"{list(expected[name].shape)}; config.json and the weights disagree (vocab_size, "
                "hidden_size or number of labels)"
            )
    model.load_state_dict({k: v for k, v in aligned.items() if k in expected}, strict=False)
    report = LoadReport(newly_initialised=missing, unused=sorted(unknown + [k for k in aligned if k not in expected]))
    if report.newly_initialised:
        log.warning("%s: newly initialised (train them before use): %s", source, _summarise(report.newly_initialised))
    if report.unused:
        log.info("%s: tensors not used by %s: %s", source, type(model).__name__, _summarise(report.unused))
    return report


def _is_encoder(name: str) -> bool:
    return split_prefix(name)[1].startswith(ENCODER_PARTS)


def _summarise(names: list[str], limit: int = 6) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_model(model_dir: str | Path, head: type = BertModel, **head_args) -> nn.Module:
    """Build `head(config, **head_args)` from a model directory and load its weights (eval mode)."""
    config = load_config(model_dir)
    model = head(config, **head_args)
    load_weights(model, read_state_dict(model_dir), source=str(model_dir))
    return model.eval()


def save_model(
    model: nn.Module,
    directory: str | Path,
    tokenizer: BertTokenizer | None = None,
    extra_config: dict | None = None,
    pipeline_from: str | Path | None = None,
) -> Path:
    """Write config.json, model.safetensors (Hugging Face names) and vocab.txt, each atomically.

    `pipeline_from`: the model directory `model` was made from; its sentence-transformers files (if
    any) are copied, since `model`'s encoder is still that pipeline's first module. A model with a
    CRF head (`model.crf`) gets its own model_type and modeling code, see `bertkit.hf_remote`.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    config = config_of(model)
    source = Path(pipeline_from) if pipeline_from is not None else d
    limit = min(sentence_files.token_limit(source) or config.max_position_embeddings, config.max_position_embeddings)
    if pipeline_from is not None:
        sentence_files.copy_sentence_files(source, d)
    crf = getattr(model, "crf", None)
    meta: dict = {"architectures": [type(model).__name__], "model_type": "bert"}
    meta.update(hf_remote.crf_config() if crf is not None else {})
    meta.update(extra_config or {})
    num_labels = _num_labels(model)
    if num_labels is not None and "id2label" not in meta:
        meta["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    atomic_write_text(d / "config.json", json.dumps({**config.to_dict(), **meta}, indent=2) + "\n")
    tensors = {k: v.detach().cpu().contiguous() for k, v in to_hf(model.state_dict()).items()}
    if crf is not None:
        vocab = (tokenizer or BertTokenizer.from_dir(d)).vocab
        tensors.update(hf_remote.crf_tensors(crf, vocab))
        hf_remote.write_modeling_file(d)
    with atomic_path(d / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(d, model_max_length=limit)
    return d


def _num_labels(model: nn.Module) -> int | None:
    classifier = getattr(model, "classifier", None)
    return classifier.out_features if isinstance(classifier, nn.Linear) else None
