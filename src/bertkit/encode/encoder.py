"""Sentence vectors from a BERT: batched, length-sorted, pooled (bert-as-service's job).

Texts are tokenized in one parallel call, sorted by length so that each batch pads only a few
tokens, run without autograd, pooled, optionally L2-normalised, and put back in input order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bertkit import sentence_files
from bertkit.data.collate import pad, sorted_batches
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.inference import check_backend, load_encoder
from bertkit.model import config_of
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger("bertkit")

POOLINGS = ("cls", "mean", "max", "pooler")
MAX_PADDING = 0.25  # a batch is cut where padding would add more than a quarter of its real tokens


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str, pooled: torch.Tensor | None = None) -> torch.Tensor:
    """hidden [B, T, H], mask [B, T] (1 = token) -> [B, H].

    cls: the [CLS] vector; mean / max: over real tokens only (padding never counts); pooler: the
    tanh-dense [CLS] vector trained by NSP (the last layer only).
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "pooler":
        if pooled is None:
            raise BertkitError("pooling `pooler` needs the model's pooler and the last layer (--layer -1)")
        return pooled
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    if pooling == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if pooling == "max":
        return hidden.masked_fill(m == 0, float("-inf")).max(1).values
    raise BertkitError(f"unknown pooling `{pooling}`: use one of {', '.join(POOLINGS)}")


def model_pooling_defaults(model_dir: Path) -> tuple[str, bool, int | None]:
    """(pooling, normalize, max tokens) a model was trained for, from sentence-transformers files.

    all-MiniLM-L6-v2 asks for mean pooling (`1_Pooling/config.json`), a Normalize module in
    `modules.json` and 256 tokens; `bertkit.sentence_files` reads both layouts of these files. A plain
    BERT directory has none of them and gets the [CLS] vector, unnormalised, up to
    max_position_embeddings tokens.
    """
    for kind in sentence_files.unsupported_modules(model_dir):
        log.warning(
            "%s/modules.json lists %s, which bertkit does not apply: its vectors differ from "
            "sentence-transformers' for this model",
            model_dir,
            kind,
        )
    pooling = sentence_files.pooling_mode(model_dir) or "cls"
    return pooling, sentence_files.normalizes(model_dir), sentence_files.token_limit(model_dir)


class Encoder:
    """`Encoder("minilm").encode(["a sentence", ...])` -> float32 array [N, H].

    `model` is a model directory or a fetched name; `pooling` / `normalize` default to what the
    model was trained for; `layer` picks a hidden layer (-1 the last, 0 the embeddings); `max_length`
    defaults to the model's own limit. `backend="onnx"` runs the graph `bertkit export` wrote (CPU,
    last layer only); "onnx-int8" its int8 version.
    """

    def __init__(
        self,
        model: str | Path,
        pooling: str | None = None,
        layer: int = -1,
        normalize: bool | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        backend: str = "torch",
    ):
        model_dir = resolve_model(str(model))
        default_pooling, default_normalize, default_length = model_pooling_defaults(model_dir)
        self.pooling = pooling or default_pooling
        self.normalize = default_normalize if normalize is None else normalize
        if self.pooling not in POOLINGS:
            raise BertkitError(f"unknown pooling `{self.pooling}`: use one of {', '.join(POOLINGS)}")
        check_backend(backend)
        if backend != "torch" and layer != -1:
            raise BertkitError(f"--layer {layer} needs --backend torch: the ONNX graph returns the last layer only")
        self.model, self.device = load_encoder(model_dir, backend, device)
        self.tokenizer = BertTokenizer.from_dir(model_dir)
        config = self.config = config_of(self.model)
        self.tokenizer.check_vocab_size(config.vocab_size, where=str(model_dir))
        n_layers = config.num_hidden_layers
        if not -(n_layers + 1) <= layer <= n_layers:
            raise BertkitError(
                f"--layer {layer} does not exist: the model has layers 0 (embeddings) "
                f"to {n_layers}, or -1 to -{n_layers + 1} counted from the top"
            )
        self.layer = layer
        self.backend = backend
        max_length = max_length or default_length or config.max_position_embeddings
        if max_length > config.max_position_embeddings:
            raise BertkitError(
                f"--max-length {max_length} exceeds the model's max_position_embeddings "
                f"({config.max_position_embeddings})"
            )
        self.max_length = max_length
        self.batch_size = batch_size
        # a Dense projection in the pipeline (e.g. a distilled student's, to its teacher's width)
        self.dense = sentence_files.dense(model_dir)
        if self.dense is not None:
            self.dense.to(self.device)
        linears = [m for m in self.dense or () if isinstance(m, torch.nn.Linear)]
        self.dim: int = linears[-1].out_features if linears else config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, cut to max_length with a warning that says how many were cut."""
        encodings = self.tokenizer.encode_batch(texts, max_length=None, truncation="do_not_truncate")
        ids, cut = [], 0
        for enc in encodings:
            seq = enc.ids
            if len(seq) > self.max_length:
                seq = seq[: self.max_length - 1] + [self.tokenizer.sep_id]
                cut += 1
            ids.append(seq)
        if cut:
            log.warning(
                "%d of %d texts are longer than max_length=%d tokens; their vectors cover the "
                "first %d tokens only (raise --max-length up to %d)",
                cut,
                len(texts),
                self.max_length,
                self.max_length,
                self.config.max_position_embeddings,
            )
        return ids

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        ids = self.tokenize(list(texts))
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        batches = sorted_batches([len(s) for s in ids], self.batch_size, max_padding=MAX_PADDING)
        for batch in tqdm(batches, desc="encode", unit="batch", disable=not progress):
            out[batch] = self._encode_batch([ids[i] for i in batch]).cpu().numpy()
        return out

    def run(self, batch: list[list[int]], hidden_states: bool = False):
        """Pad one batch of token ids and run the model: (its output, the attention mask [B, T])."""
        input_ids, mask = pad(batch, self.tokenizer.pad_id)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return self.model(input_ids, mask, output_hidden_states=hidden_states), mask

    def vectors(
        self, out, mask: torch.Tensor, pooling: str, layer: int, normalize: bool, rows: list[int] | None = None
    ) -> torch.Tensor:
        """Pooled, projected (the pipeline's Dense modules, if any) and optionally L2-normalised float32
        vectors [B, dim] of `run`'s output, or of its `rows`."""
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        pooled = out.pooler_output if layer == -1 else None
        if rows is not None:
            hidden, mask = hidden[rows], mask[rows]
            pooled = pooled[rows] if pooled is not None else None
        vectors = pool(hidden, mask, pooling, pooled)
        if self.dense is not None:
            vectors = self.dense(vectors.float())
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors.float()

    def _encode_batch(self, batch: list[list[int]]) -> torch.Tensor:
        out, mask = self.run(batch, hidden_states=self.layer != -1)
        return self.vectors(out, mask, self.pooling, self.layer, self.normalize)
