"""BERT, as in Devlin et al. (2018), in one file: config, encoder, pooler and the task heads.

Shapes in comments use:
    B = batch size          T = sequence length     H = hidden size
    N = attention heads     D = head size (H / N)   I = intermediate (feed-forward) size
    V = vocabulary size     P = masked positions per sequence    L = number of labels
    S = positions already encoded (cached keys and values, incremental decoding)

The encoder is the paper's post-LN Transformer: every sub-layer is `LayerNorm(x + Dropout(f(x)))`.
Parameter names are our own (one fused query/key/value projection, short names); the key table in
`bertkit/convert/hf.py` maps them to and from Hugging Face's names, so checkpoints move both ways.
Heads return logits only: losses belong to the tasks (`bertkit/tasks`), not to the model.

The same encoder generates text (UniLM, Dong et al. 2019): `seq2seq_mask` lets a target segment see
the source and its own past only, and `BertModel.extend` runs new positions against the cached keys
and values of the earlier ones, so a decoder step costs one position, not the whole sequence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from bertkit.errors import BertkitError, suggest

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),  # exact erf GELU, as google-research/bert's later releases and HF
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # the tanh approximation of the original TF code
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}

# Keys Hugging Face writes into config.json that carry no architecture we need. They are accepted
# (so any BERT config.json loads) and not written back; anything else unknown is a typo.
IGNORED_HF_KEYS = {
    "_name_or_path",
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "gradient_checkpointing",
    "use_cache",
    "classifier_dropout",
    "id2label",
    "label2id",
    "problem_type",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "output_past",
    "directionality",
    "pooler_fc_size",
    "pooler_num_attention_heads",
    "pooler_num_fc_layers",
    "pooler_size_per_head",
    "pooler_type",
    "tie_word_embeddings",
    "is_decoder",
    "add_cross_attention",
    "chunk_size_feed_forward",
    "finetuning_task",
    "tokenizer_class",
    "return_dict",
    "output_hidden_states",
    "output_attentions",
    "position_embedding_type",
    "embedding_size",
}


@dataclass
class BertConfig:
    """The model's shape. Field names are exactly the keys of Hugging Face's `config.json`."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise BertkitError(
                f"hidden_act `{self.hidden_act}` is not supported{suggest(self.hidden_act, ACTIVATIONS)}; "
                f"use one of: {', '.join(ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise BertkitError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                f"{self.num_attention_heads}: choose heads so that hidden_size / heads is whole (usually 64)"
            )

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> BertConfig:
        """Build from a config.json dict; unknown keys are an error naming the closest valid key."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise BertkitError(
                f"{source}: position_embedding_type `{d['position_embedding_type']}` is not BERT's; "
                "bertkit supports only learned absolute positions (`absolute`)"
            )
        for key in ("is_decoder", "add_cross_attention"):
            if d.get(key):
                raise BertkitError(f"{source}: `{key}: true` describes a decoder; bertkit's BERT is an encoder")
        unknown = [k for k in d if k not in fields and k not in IGNORED_HF_KEYS]
        if unknown:
            k = unknown[0]
            raise BertkitError(
                f"{source}: unknown config key `{k}`{suggest(k, fields)}; valid keys: {', '.join(sorted(fields))}"
            )
        return cls(**{k: v for k, v in d.items() if k in fields})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def preset(cls, name: str, **overrides) -> BertConfig:
        """A named size: tiny/mini/small/medium (Turc et al., 2019), base/large (the paper)."""
        if name not in PRESETS:
            raise BertkitError(f"unknown model size `{name}`{suggest(name, PRESETS)}; use one of: {', '.join(PRESETS)}")
        layers, hidden = PRESETS[name]
        shape = dict(
            num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64, intermediate_size=4 * hidden
        )
        return cls(**{**shape, **overrides})


# name -> (layers, hidden); heads = hidden / 64 and intermediate = 4 * hidden for all of them.
PRESETS = {
    "tiny": (2, 128),
    "mini": (4, 256),
    "small": (4, 512),
    "medium": (8, 512),
    "base": (12, 768),
    "large": (24, 1024),
}


class BertOutput(NamedTuple):
    last_hidden_state: torch.Tensor  # [B, T, H]
    pooler_output: torch.Tensor | None  # [B, H], tanh(W h_[CLS] + b); None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None  # embeddings + every layer, each [B, T, H]


class Embeddings(nn.Module):
    """Sum of token, learned position and segment embeddings, then LayerNorm and dropout."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.word = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """`start`: the position of the first token (incremental decoding continues a sequence)."""
        T = input_ids.shape[1]
        positions = torch.arange(start, start + T, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))  # [B, T, H]


class KV(NamedTuple):
    """One layer's keys and values for the positions encoded so far (incremental decoding)."""

    key: torch.Tensor  # [B, N, S, D]
    value: torch.Tensor  # [B, N, S, D]


class SelfAttention(nn.Module):
    """Multi-head self-attention. Query, key and value come from one [3H, H] matmul instead of three."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size)
        self.out = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = self.project(x)
        return self.attend(q, k, v, mask)

    def extend(self, x: torch.Tensor, mask: torch.Tensor | None, past: KV | None) -> tuple[torch.Tensor, KV]:
        """Attention for new positions x [B, T, H] over the cached keys and values and their own;
        -> (output [B, T, H], the keys and values of all S + T positions)."""
        q, k, v = self.project(x)
        if past is not None:
            k, v = torch.cat([past.key, k], 2), torch.cat([past.value, v], 2)  # [B, N, S + T, D]
        return self.attend(q, k, v, mask), KV(k, v)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        B, T, H = x.shape
        # [B, T, 3H] -> [3, B, N, T, D]
        return self.qkv(x).view(B, T, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)

    def attend(self, q, k, v, mask: torch.Tensor | None) -> torch.Tensor:
        # softmax(q k^T / sqrt(D)) v, with masked keys left out; [B, N, T, D]
        p = self.dropout_p if self.training else 0.0
        if p > 0.0 and q.device.type == "cpu":  # GPUs have fused SDPA kernels with dropout
            ctx = cpu_attention_with_dropout(q, k, v, mask, p)
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        B, N, T, D = ctx.shape
        return self.out(ctx.transpose(1, 2).reshape(B, T, N * D))


def cpu_attention_with_dropout(q, k, v, mask: torch.Tensor | None, p: float) -> torch.Tensor:
    """Training-time attention with dropout on the attention weights, written out. SDPA has no fused CPU
    kernel with dropout, so it runs this same math path, plus a guard for rows with every key masked
    (impossible here: [CLS] is never padding). The keep-mask comes from rand_like >= p, which on the CPU
    is faster than the bernoulli_ behind F.dropout on these [B, N, T, T] tensors (bench/pretrain.py)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # [B, N, T, T]
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min) if mask.dtype == torch.bool else scores + mask
    probs = scores.softmax(-1)
    probs = torch.where(torch.rand_like(probs) >= p, probs * (1.0 / (1.0 - p)), 0.0)
    return probs @ v  # [B, N, T, D]


class FeedForward(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.up = nn.Linear(c.hidden_size, c.intermediate_size)  # [H] -> [I]
        self.down = nn.Linear(c.intermediate_size, c.hidden_size)  # [I] -> [H]
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Layer(nn.Module):
    """One post-LN Transformer layer: x = LN(x + attn(x)); x = LN(x + ffn(x))."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attn = SelfAttention(c)
        self.attn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.ffn = FeedForward(c)
        self.ffn_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attn(x, mask)))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))

    def extend(self, x: torch.Tensor, mask: torch.Tensor | None, past: KV | None) -> tuple[torch.Tensor, KV]:
        """`forward` for new positions given the cached keys and values of the earlier ones."""
        attended, cache = self.attn.extend(x, mask, past)
        x = self.attn_norm(x + self.dropout(attended))
        return self.ffn_norm(x + self.dropout(self.ffn(x))), cache


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): the sentence vector the paper trains with NSP."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def attention_bias(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, T] 1/0 mask -> [B, 1, 1, T] boolean mask for SDPA (True = attend); None when nothing is padded.
    A [B, T, T] mask (query i may see key j, e.g. `seq2seq_mask`) -> [B, 1, T, T].

    Skipping the mask when there is no padding lets SDPA take its fastest kernel; length-sorted
    batches (see `bertkit.encode`) are often unpadded.
    """
    if attention_mask is None:
        return None
    # [B, T] -> [B, 1, 1, T]: one row for every query; [B, T, T] -> [B, 1, T, T]
    bias = attention_mask[:, None, None, :] if attention_mask.dim() == 2 else attention_mask[:, None]
    # ONNX export: an additive mask (one Add a layer, no Where / IsNaN guards in the graph)
    if torch.jit.is_tracing():
        return (1.0 - bias.float()) * torch.finfo(torch.float32).min
    if bool(attention_mask.all()):
        return None
    return bias.bool()


def seq2seq_mask(attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
    """UniLM's sequence-to-sequence mask: [B, T] padding mask and segments -> [B, T, T], True where
    query i may see key j.

    The source is segment A ([CLS] source [SEP], type 0), the target segment B (type 1) after it. A
    source token sees the whole source (both ways) and never the target; a target token sees the
    source and the target up to itself (left to right), so the target can be generated one token at
    a time. Padding is seen by no one.
    """
    T = attention_mask.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()  # [T, T], j <= i
    source = (token_type_ids == 0) & attention_mask.bool()  # [B, T]
    # j is visible from i when it is source, or when it is at or before i (a target, or source too)
    visible = source[:, None, :] | causal[None]  # [B, T, T]
    return visible & attention_mask.bool()[:, None, :]


class BertModel(nn.Module):
    """Embeddings, the encoder stack and (optionally) the pooler."""

    def __init__(self, config: BertConfig, add_pooler: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config) if add_pooler else None
        self.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BertOutput:
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise BertkitError(
                f"sequence of {input_ids.shape[1]} tokens is longer than the model's "
                f"max_position_embeddings ({self.config.max_position_embeddings}): lower max_length"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = attention_bias(attention_mask)
        x = self.embeddings(input_ids, token_type_ids)
        hidden = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, mask)
            if hidden is not None:
                hidden.append(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertOutput(x, pooled, tuple(hidden) if hidden is not None else None)

    def extend(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, past: list[KV] | None = None
    ) -> tuple[torch.Tensor, list[KV]]:
        """Encode input_ids [B, T] as the continuation of the S positions in `past` (one KV a layer, or
        None for a fresh start): the new positions see every cached one and, among themselves, only
        those at or before them. -> (hidden [B, T, H], the cache of all S + T positions).

        For generation: the source with `past=None` (T source tokens see one another: its keys and
        values are computed once), then one target token a step. Equal to `forward` with
        `seq2seq_mask` over the whole sequence, at the cost of the new positions only."""
        S = past[0].key.shape[2] if past else 0
        T = input_ids.shape[1]
        if S + T > self.config.max_position_embeddings:
            raise BertkitError(
                f"sequence of {S + T} tokens is longer than the model's max_position_embeddings "
                f"({self.config.max_position_embeddings}): generate fewer tokens or shorten the source"
            )
        mask = None
        if past and T > 1:  # several new target positions: causal among themselves
            mask = torch.ones(T, S + T, dtype=torch.bool, device=input_ids.device).tril(S)  # [T, S + T]
        x = self.embeddings(input_ids, token_type_ids, start=S)
        cache = []
        for i, layer in enumerate(self.layers):
            x, kv = cast(Layer, layer).extend(x, mask, past[i] if past else None)
            cache.append(kv)
        return x, cache


def init_weights(module: nn.Module, std: float) -> None:
    """The paper's initialisation: normal(0, 0.02) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ---------------------------------------------------------------------------------------------
# Heads. Each wraps a `bert` encoder and returns logits; parameter names outside `bert.` are the
# head's, and `bertkit.checkpoint` reports a head it did not find in a checkpoint as newly initialised.


class MaskedLMHead(nn.Module):
    """transform (dense, act, LN), then a projection to the vocabulary tied to the word embeddings."""

    def __init__(self, c: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.word_embeddings = [word_embeddings]  # a list hides the tied weight from state_dict()
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.apply(lambda m: init_weights(m, c.initializer_range))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(self.dense(hidden)))
        return F.linear(h, self.word_embeddings[0].weight, self.bias)  # [..., V]


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """hidden [B, T, H] at positions [B, P] -> [B, P, H]. The MLM head then projects only P << T
    vectors onto the vocabulary, which is where most of a small model's pretraining time goes."""
    index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
    return hidden.gather(1, index)


class BertForPreTraining(nn.Module):
    """Masked LM + next sentence prediction, the paper's pretraining objective."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)
        self.nsp = nn.Linear(config.hidden_size, 2)
        init_weights(self.nsp, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None):
        """-> (mlm logits [B, T, V] or [B, P, V] at `masked_positions`, nsp logits [B, 2])."""
        out = self.bert(input_ids, attention_mask, token_type_ids)
        hidden = out.last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.mlm(hidden), self.nsp(out.pooler_output)


class BertForMaskedLM(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooler=False)
        self.mlm = MaskedLMHead(config, self.bert.embeddings.word)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None):
        """-> logits [B, T, V], or [B, P, V] at `masked_positions`."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        if masked_positions is not None:
            hidden = gather_positions(hidden, masked_positions)
        return self.mlm(hidden)


class BertForSequenceClassification(nn.Module):
    """Dropout + linear on the pooled [CLS] vector. `num_labels=1` is regression."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> logits [B, L]."""
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        return self.classifier(self.dropout(pooled))


class BertForTokenClassification(nn.Module):
    """Dropout + linear on every token's vector (softmax tagging; a CRF can sit on these logits)."""

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.bert = BertModel(config, add_pooler=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> logits [B, T, L]."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        return self.classifier(self.dropout(hidden))


class BertForQuestionAnswering(nn.Module):
    """A linear layer giving every token a start and an end score (extractive QA, SQuAD)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.bert = BertModel(config, add_pooler=False)
        self.qa = nn.Linear(config.hidden_size, 2)
        init_weights(self.qa, config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> (start logits [B, T], end logits [B, T])."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids).last_hidden_state
        start, end = self.qa(hidden).unbind(-1)
        return start, end


def config_of(model) -> BertConfig:
    """The BertConfig of a BertModel, of a head (its `.bert`), or of an exported graph (its `.config`)."""
    config = model.bert.config if hasattr(model, "bert") else model.config
    if not isinstance(config, BertConfig):
        raise TypeError(f"{type(model).__name__} carries no BertConfig")
    return config


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
