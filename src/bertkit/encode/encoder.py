"""Sentence, token and word vectors from a BERT: batched, length-sorted, pooled (bert-as-service's job).

Texts are tokenized in one parallel call, sorted by length so that each batch pads only a few
tokens, run without autograd, pooled, optionally L2-normalised, and put back in input order.
Shapes: B = batch, T = tokens, H = hidden size, L = layers read, P = model inputs (texts or windows).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from bertkit import sentence_files
from bertkit.data.collate import pad, sorted_batches
from bertkit.encode.tokens import TokenVectors, words_of
from bertkit.errors import BertkitError
from bertkit.fetch import resolve_model
from bertkit.inference import check_backend, load_encoder
from bertkit.model import config_of
from bertkit.tasks import windows
from bertkit.tokenizer import BertTokenizer

log = logging.getLogger("bertkit")

POOLINGS = ("cls", "mean", "max", "pooler")
LAYER_COMBINES = ("concat", "mean")
LONG_TEXTS = ("cut", "window")
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


def mean_numpy(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling as `pool` does it, in numpy's single-threaded loop, for the ONNX backends.

    onnxruntime's threads keep spinning for a while after each run; torch's own thread pool then
    waits on them, and the same reduction in torch took 18% of an int8 encode (2 cores).
    """
    m = mask.numpy().astype(np.float32)  # [B, T]
    summed = np.einsum("bth,bt->bh", hidden.numpy(), m)  # no BLAS call, so no threads
    return torch.from_numpy(summed / np.maximum(m.sum(1, keepdims=True), 1.0))


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


def as_layers(layer: int | Sequence[int]) -> tuple[int, ...]:
    """`-1` or `[-4, -3, -2, -1]` -> a tuple of layer numbers."""
    return tuple(int(x) for x in layer) if isinstance(layer, Sequence) else (int(layer),)


def hidden_layers(out, layers: tuple[int, ...], combine: str) -> torch.Tensor:
    """`Encoder.run`'s hidden states of `layers`, joined as bert-as-service's pooling_layer joins them:
    [B, T, H] for one layer or `mean`, [B, T, L * H] for `concat` (in the given order)."""
    states = [out.last_hidden_state if layer == -1 else out.hidden_states[layer] for layer in layers]
    if len(states) == 1:
        return states[0]
    if combine == "concat":
        return torch.cat(states, dim=-1)
    return torch.stack(states).mean(0)


def join_windows(
    vectors: torch.Tensor, text_of: list[int], weights: list[int], n_texts: int, pooling: str
) -> torch.Tensor:
    """[P, D] vectors of the texts' windows (window p belongs to text text_of[p]) -> [N, D], one per text.

    max: the elementwise max over a text's windows, so the max over every token read. mean: the mean
    of the windows' vectors weighted by their tokens, i.e. the mean over every token read (a token in
    two windows counts twice, once in each context). cls and pooler: the same token-weighted mean of the
    windows' [CLS] vectors: each summarises its own window only, and the first window's alone would be
    the cut vector.
    """
    if len(text_of) == n_texts:  # one input per text: nothing to join
        return vectors
    index = torch.tensor(text_of)
    if pooling == "max":
        out = vectors.new_full((n_texts, vectors.shape[1]), float("-inf"))
        return out.scatter_reduce_(0, index.unsqueeze(1).expand_as(vectors), vectors, reduce="amax")
    w = torch.tensor(weights, dtype=vectors.dtype).unsqueeze(1)  # [P, 1]
    total = vectors.new_zeros(n_texts, 1).index_add_(0, index, w)
    return vectors.new_zeros(n_texts, vectors.shape[1]).index_add_(0, index, vectors * w) / total


class Piece(NamedTuple):
    """One model input: text number `text`, [CLS] + its tokens from `start` (counted after its own
    [CLS]) + [SEP]."""

    text: int
    start: int
    ids: list[int]


class Encoder:
    """`Encoder("minilm").encode(["a sentence", ...])` -> float32 array [N, dim];
    `.encode_tokens(texts, words=False)` -> per text its tokens (or words), their character spans and
    vectors.

    `model` is a model directory or a fetched name; `pooling` / `normalize` default to what the
    model was trained for; `layer` picks a hidden layer (-1 the last, 0 the embeddings) or several,
    joined by `layer_combine` ("concat": width H x layers, in the given order; "mean"); `max_length`
    defaults to the model's own limit, and a longer text is cut there (`long="cut"`) or read in
    overlapping windows whose vectors are joined (`long="window"`, see `join_windows`).
    `backend="onnx"` runs the graph `bertkit export` wrote (CPU, last layer only); "onnx-int8" its int8
    version.
    """

    def __init__(
        self,
        model: str | Path,
        pooling: str | None = None,
        layer: int | Sequence[int] = -1,
        normalize: bool | None = None,
        max_length: int | None = None,
        batch_size: int = 32,
        device: str | None = None,
        backend: str = "torch",
        layer_combine: str = "concat",
        long: str = "cut",
    ):
        model_dir = resolve_model(str(model))
        default_pooling, default_normalize, default_length = model_pooling_defaults(model_dir)
        self.pooling = pooling or default_pooling
        self.normalize = default_normalize if normalize is None else normalize
        if self.pooling not in POOLINGS:
            raise BertkitError(f"unknown pooling `{self.pooling}`: use one of {', '.join(POOLINGS)}")
        check_choice("--layer-combine", layer_combine, LAYER_COMBINES)
        check_choice("--long", long, LONG_TEXTS)
        check_backend(backend)
        self.backend = backend
        _check_backend_layers(as_layers(layer), backend)
        self.model, self.device = load_encoder(model_dir, backend, device)
        self.tokenizer = BertTokenizer.from_dir(model_dir)
        config = self.config = config_of(self.model)
        self.tokenizer.check_vocab_size(config.vocab_size, where=str(model_dir))
        self.layer, self.layers = layer, self.check_layers(layer)
        if self.pooling == "pooler" and self.layers != (-1,):
            raise BertkitError("pooling `pooler` needs the last layer alone (--layer -1): use cls, mean or max")
        self.layer_combine, self.long = layer_combine, long
        max_length = max_length or default_length or config.max_position_embeddings
        if max_length > config.max_position_embeddings:
            raise BertkitError(
                f"--max-length {max_length} exceeds the model's max_position_embeddings "
                f"({config.max_position_embeddings})"
            )
        if long == "window" and max_length < 3:
            raise BertkitError("--long window needs --max-length 3 or more: [CLS], a token and [SEP] per window")
        self.max_length = max_length
        self.batch_size = batch_size
        # a Dense projection in the pipeline (e.g. a distilled student's, to its teacher's width)
        self.dense = sentence_files.dense(model_dir)
        if self.dense is not None:
            self.dense.to(self.device)
        linears = [m for m in self.dense or () if isinstance(m, torch.nn.Linear)]
        self.dense_width: int | None = linears[0].in_features if linears else None
        self.token_dim = self.width(self.layers, layer_combine)  # of token vectors
        self.dim: int = linears[-1].out_features if linears else self.token_dim

    def check_layers(self, layer: int | Sequence[int]) -> tuple[int, ...]:
        """`layer` as a tuple of layer numbers that exist in this model and this backend."""
        layers = as_layers(layer)
        _check_backend_layers(layers, self.backend)
        n_layers = self.config.num_hidden_layers
        for one in layers:
            if not -(n_layers + 1) <= one <= n_layers:
                raise BertkitError(
                    f"--layer {one} does not exist: the model has layers 0 (embeddings) "
                    f"to {n_layers}, or -1 to -{n_layers + 1} counted from the top"
                )
        return layers

    def width(self, layers: tuple[int, ...], combine: str) -> int:
        """Width of the joined hidden states of `layers` (before any Dense projection)."""
        return self.config.hidden_size * (len(layers) if combine == "concat" else 1)

    def _encodings(self, texts: list[str]):
        return self.tokenizer.encode_batch(texts, max_length=None, truncation="do_not_truncate")

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, cut to max_length with a warning that says how many were cut."""
        return self._cut([e.ids for e in self._encodings(texts)])

    def _cut(self, ids: list[list[int]]) -> list[list[int]]:
        out, cut = [], 0
        for seq in ids:
            if len(seq) > self.max_length:
                seq = seq[: self.max_length - 1] + [self.tokenizer.sep_id]
                cut += 1
            out.append(seq)
        if cut:
            log.warning(
                "%d of %d texts are longer than max_length=%d tokens; their vectors cover the "
                "first %d tokens only (raise --max-length up to %d; `bertkit encode --long window` reads them whole)",
                cut,
                len(ids),
                self.max_length,
                self.max_length,
                self.config.max_position_embeddings,
            )
        return out

    def _pieces(self, ids: list[list[int]]) -> list[Piece]:
        """The model inputs for texts' whole token ids: each text cut to max_length (long="cut"), or
        the windows over its tokens, half a window apart, each between [CLS] and [SEP] (long="window")."""
        if self.long == "cut":
            return [Piece(i, 0, seq) for i, seq in enumerate(self._cut(ids))]
        size = self.max_length - 2
        cls, sep = self.tokenizer.cls_id, self.tokenizer.sep_id
        return [
            Piece(i, start, [cls, *seq[1 + start : 1 + end], sep])
            for i, seq in enumerate(ids)
            for start, end in windows(len(seq) - 2, size, max(1, size // 2))
        ]

    def _forward(
        self, pieces: list[Piece], layers: tuple[int, ...], progress: bool
    ) -> Iterator[tuple[list[int], Any, torch.Tensor]]:
        """(indices into `pieces`, model output, mask [B, T]) per length-sorted batch."""
        batches = sorted_batches([len(p.ids) for p in pieces], self.batch_size, max_padding=MAX_PADDING)
        for batch in tqdm(batches, desc="encode", unit="batch", disable=not progress):
            out, mask = self.run([pieces[i].ids for i in batch], hidden_states=layers != (-1,))
            yield batch, out, mask

    @torch.inference_mode()
    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        texts = list(texts)
        pieces = self._pieces([e.ids for e in self._encodings(texts)])
        # [P, D], before any Dense and normalisation; numpy, as in mean_numpy, so no torch threads wake
        pooled = np.zeros((len(pieces), self.token_dim), dtype=np.float32)
        for batch, out, mask in self._forward(pieces, self.layers, progress):
            pooled[batch] = self.pooled(out, mask, self.pooling, self.layers, self.layer_combine).float().cpu().numpy()
        text_of, weights = [p.text for p in pieces], [len(p.ids) for p in pieces]
        joined = join_windows(torch.from_numpy(pooled), text_of, weights, len(texts), self.pooling)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i in range(0, len(texts), self.batch_size):
            part = joined[i : i + self.batch_size].to(self.device)
            vectors[i : i + self.batch_size] = self.finish(part, self.normalize).cpu().numpy()
        return vectors

    @torch.inference_mode()
    def encode_tokens(
        self,
        texts: list[str],
        words: bool = False,
        specials: bool = False,
        layer: int | Sequence[int] | None = None,
        layer_combine: str | None = None,
        progress: bool = False,
    ) -> list[TokenVectors]:
        """Per text: its word pieces, their [start, end) character spans in the original text, and their
        vectors float32 [n, D]: the hidden states of the layers, joined as for sentence vectors, with
        no Dense projection and no normalisation (a Dense module is trained on pooled vectors).

        [CLS] and [SEP] are left out unless `specials` (their span is (0, 0)). `words=True` gives one
        vector per whitespace-separated word and per Chinese character instead, the mean of its pieces'
        (`bertkit.encode.tokens.words_of`). With long="cut" the tokens past max_length have no vector;
        with long="window" a token read in several windows gets the mean of its vectors there.
        `layer` / `layer_combine` default to the encoder's own.
        """
        if words and specials:
            raise BertkitError("words are the text's own: [CLS] and [SEP] are not among them; drop specials")
        texts = list(texts)
        layers = self.layers if layer is None else self.check_layers(layer)
        combine = check_choice("--layer-combine", layer_combine or self.layer_combine, LAYER_COMBINES)
        encodings = self._encodings(texts)
        pieces = self._pieces([e.ids for e in encodings])
        # per text: the sum of each token's vectors over the inputs that read it [n, D], and their count
        sums = [torch.zeros(len(e), self.width(layers, combine)) for e in encodings]
        counts = [torch.zeros(len(e)) for e in encodings]
        for batch, out, _ in self._forward(pieces, layers, progress):
            hidden = hidden_layers(out, layers, combine).float().cpu()  # [B, T, D]
            for row, i in enumerate(batch):
                t, start, ids = pieces[i]
                # input position k is token 0 ([CLS]), start + k, or the text's last token ([SEP])
                at = torch.tensor([0, *range(start + 1, start + len(ids) - 1), len(encodings[t]) - 1])
                sums[t].index_add_(0, at, hidden[row, : len(ids)])
                counts[t].index_add_(0, at, torch.ones(len(ids)))
        records = []
        for text, enc, total, count in zip(texts, encodings, sums, counts):
            keep = [k for k in range(len(enc)) if count[k] > 0 and (specials or enc.sequence_ids[k] is not None)]
            index = torch.tensor(keep, dtype=torch.long)
            vectors = (total[index] / count[index].unsqueeze(1)).numpy()
            record = TokenVectors([enc.tokens[k] for k in keep], [tuple(enc.offsets[k]) for k in keep], vectors)
            records.append(words_of(record, text) if words else record)
        return records

    def run(self, batch: list[list[int]], hidden_states: bool = False):
        """Pad one batch of token ids and run the model: (its output, the attention mask [B, T])."""
        input_ids, mask = pad(batch, self.tokenizer.pad_id)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        return self.model(input_ids, mask, output_hidden_states=hidden_states), mask

    def pooled(
        self,
        out,
        mask: torch.Tensor,
        pooling: str,
        layers: tuple[int, ...],
        combine: str,
        rows: list[int] | None = None,
    ) -> torch.Tensor:
        """[B, D] pooled vectors of `run`'s output, or of its `rows`, before any Dense and normalisation."""
        hidden = hidden_layers(out, layers, combine)
        pooled = out.pooler_output if layers == (-1,) else None
        if rows is not None:
            hidden, mask = hidden[rows], mask[rows]
            pooled = pooled[rows] if pooled is not None else None
        if self.backend != "torch" and pooling == "mean":
            return mean_numpy(hidden, mask)
        return pool(hidden, mask, pooling, pooled)

    def finish(self, vectors: torch.Tensor, normalize: bool) -> torch.Tensor:
        """The pipeline's Dense modules (if any), then optional L2 normalisation: float32 [B, dim]."""
        if self.dense is not None:
            if vectors.shape[-1] != self.dense_width:
                raise BertkitError(
                    f"this model's Dense projection reads {self.dense_width}-wide vectors, and the layers "
                    f"joined by concat give {vectors.shape[-1]}: use --layer-combine mean, or one layer"
                )
            vectors = self.dense(vectors.float())
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=-1)
        return vectors.float()

    def vectors(
        self,
        out,
        mask: torch.Tensor,
        pooling: str,
        layer: int | Sequence[int],
        normalize: bool,
        rows: list[int] | None = None,
        layer_combine: str = "concat",
    ) -> torch.Tensor:
        """Pooled, projected (the pipeline's Dense modules, if any) and optionally L2-normalised float32
        vectors [B, dim] of `run`'s output, or of its `rows` (one input per text: no windows)."""
        return self.finish(self.pooled(out, mask, pooling, as_layers(layer), layer_combine, rows), normalize)


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BertkitError(f"{option} {value!r}: use one of {', '.join(choices)}")
    return value


def _check_backend_layers(layers: tuple[int, ...], backend: str) -> None:
    if not layers:
        raise BertkitError("--layer is empty: give a layer, or several joined by --layer-combine (-4,-3,-2,-1)")
    if backend != "torch" and layers != (-1,):
        raise BertkitError(
            f"--layer {','.join(map(str, layers))} needs --backend torch: the ONNX graph returns the last layer only"
        )
