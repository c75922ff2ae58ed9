"""Text generation with a sequence-to-sequence BERT (UniLM; trained by `bertkit finetune --task seq2seq`).

The source is encoded once, as segment A ([CLS] source [SEP]); its keys and values stay cached for
the whole decode (`BertModel.extend`). Each step then runs one new target token (segment B) against
the cache: the hidden state of the last position, through the masked-LM head tied to the word
embeddings, scores the next token. Decoding stops at [SEP] or after `max_new_tokens` tokens.

Strategies: `greedy` (the most likely token each step), `beam` (the `num_beams` best partial
targets by summed log-probability; a finished target is scored by that sum / length^`length_penalty`;
the search stops once `num_beams` targets have ended in [SEP]), `sample` (from the distribution
divided by `temperature`, cut to the `top_k` most likely tokens and to the smallest set holding
`top_p` of the probability, drawn with a `torch.Generator` seeded by `seed`). Every strategy can
forbid repeating an n-gram (`no_repeat_ngram`).

    from bertkit import generate, inference
    run = inference.load_task("runs/copy")
    generate.generate_texts(run, ["a b c"], generate.GenerateOptions(strategy="beam"))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from bertkit.config import option
from bertkit.errors import BertkitError
from bertkit.model import KV, BertModel, MaskedLMHead, config_of

log = logging.getLogger("bertkit")

STRATEGIES = ("greedy", "beam", "sample")


@dataclass
class GenerateOptions:
    strategy: str = option("greedy", "greedy, beam (beam search) or sample", choices=STRATEGIES)
    max_new_tokens: int = option(64, "target tokens at most ([SEP] not counted)", at_least=1)
    num_beams: int = option(4, "beam: hypotheses kept each step", at_least=1)
    length_penalty: float = option(1.0, "beam: a finished target scores log-prob / length^this (0: no norm)")
    no_repeat_ngram: int = option(0, "never repeat an n-gram of this size in the target (0: allowed)", at_least=0)
    temperature: float = option(1.0, "sample: divide the logits by this (below 1: more conservative)", above=0)
    top_k: int = option(0, "sample: draw from the k most likely tokens only (0: all)", at_least=0)
    top_p: float = option(1.0, "sample: draw from the fewest tokens holding this much probability", above=0, at_most=1)
    seed: int = option(0, "sample: the random seed", at_least=0)


@dataclass
class Generated:
    ids: list[int]  # the target's token ids, [SEP] not included
    stopped: str  # "sep": the model ended the target; "length": max_new_tokens was reached


class Decoder:
    """One model's decoding steps: the source once, then one token a step over the cached keys and values.

    `model` is a BertForMaskedLM (`.bert` the encoder, `.mlm` the tied head); ids it must never
    produce ([PAD], [CLS], [MASK], [UNK]) get probability zero."""

    def __init__(self, model: nn.Module, tokenizer):
        bert, head = getattr(model, "bert", None), getattr(model, "mlm", None)
        if not isinstance(bert, BertModel) or not isinstance(head, MaskedLMHead):
            raise BertkitError(
                f"{type(model).__name__} has no masked-LM head to generate with: use a model fine-tuned by "
                "`bertkit finetune --task seq2seq` (PyTorch backend)"
            )
        self.bert, self.head = bert, head
        self.sep_id = tokenizer.sep_id
        self.banned = [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id, tokenizer.unk_id]
        self.positions = config_of(model).max_position_embeddings
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def start(self, source_ids: list[int]) -> tuple[torch.Tensor, list[KV]]:
        """[CLS] source [SEP] -> (log-probabilities of the first target token [1, V], the source's cache)."""
        ids = torch.tensor([source_ids], device=self.device)
        hidden, cache = self.bert.extend(ids, torch.zeros_like(ids))
        return self.scores(hidden), cache

    @torch.no_grad()
    def step(self, tokens: torch.Tensor, cache: list[KV]) -> tuple[torch.Tensor, list[KV]]:
        """tokens [B] (each row's newest target token) -> (next-token log-probabilities [B, V], cache)."""
        ids = tokens[:, None]
        hidden, cache = self.bert.extend(ids, torch.ones_like(ids), cache)
        return self.scores(hidden), cache

    def scores(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden[:, -1]).float()  # [B, V]
        logits[:, self.banned] = float("-inf")
        return logits


def source_ids(tokenizer, text: str, max_new_tokens: int, positions: int) -> list[int]:
    """[CLS] source [SEP], the source cut so that it and the longest target fit the model's positions."""
    ids = tokenizer.encode(text, max_length=None, add_special_tokens=False).ids
    room = positions - max_new_tokens - 3  # [CLS], [SEP], and the target's [SEP]
    if room < 1:
        raise BertkitError(
            f"max_new_tokens {max_new_tokens} leaves no room for a source in the model's {positions} "
            f"positions: pass --max-new-tokens {positions - 4} or less"
        )
    if len(ids) > room:
        log.warning("a source of %d tokens was cut to %d to leave room for the target", len(ids), room)
        ids = ids[:room]
    return [tokenizer.cls_id, *ids, tokenizer.sep_id]


def repeated_ngram_bans(tokens: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already in `tokens` (so none repeats)."""
    if n <= 0 or len(tokens) < n - 1:
        return []
    prefix = tuple(tokens[len(tokens) - n + 1 :]) if n > 1 else ()
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tuple(tokens[i : i + n - 1]) == prefix]


def ban_repeats(logits: torch.Tensor, rows: list[list[int]], n: int) -> torch.Tensor:
    for r, tokens in enumerate(rows):
        banned = repeated_ngram_bans(tokens, n)
        if banned:
            logits[r, banned] = float("-inf")
    return logits


@torch.no_grad()
def one_at_a_time(decoder: Decoder, source: list[int], opts: GenerateOptions, choose) -> Generated:
    """Greedy and sampling: one target, each next token picked by `choose(logits [V]) -> id` until
    [SEP] or max_new_tokens."""
    logits, cache = decoder.start(source)
    tokens: list[int] = []
    while True:
        token = choose(ban_repeats(logits, [tokens], opts.no_repeat_ngram)[0])
        if token == decoder.sep_id:
            return Generated(tokens, "sep")
        tokens.append(token)
        if len(tokens) == opts.max_new_tokens:
            return Generated(tokens, "length")
        logits, cache = decoder.step(torch.tensor([token], device=decoder.device), cache)


def greedy(decoder: Decoder, source: list[int], opts: GenerateOptions) -> Generated:
    return one_at_a_time(decoder, source, opts, lambda logits: int(logits.argmax()))


def sample(decoder: Decoder, source: list[int], opts: GenerateOptions) -> Generated:
    generator = torch.Generator(device=decoder.device).manual_seed(opts.seed)

    def choose(logits: torch.Tensor) -> int:
        logits = logits / opts.temperature
        if opts.top_k:
            kth = logits.topk(min(opts.top_k, logits.shape[0])).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if opts.top_p < 1.0:
            probs, order = logits.softmax(-1).sort(descending=True)
            # keep a token when the tokens more likely than it hold less than top_p (the first always)
            drop = probs.cumsum(-1) - probs >= opts.top_p
            logits = logits.index_fill(0, order[drop], float("-inf"))
        return int(torch.multinomial(logits.softmax(-1), 1, generator=generator))

    return one_at_a_time(decoder, source, opts, choose)


@torch.no_grad()
def beam_search(decoder: Decoder, source: list[int], opts: GenerateOptions) -> Generated:
    """The best of `num_beams` hypotheses; every step expands each live one by its 2 * num_beams best
    tokens (so enough stay live when some end), and a hypothesis ending in [SEP] is finished."""
    k = opts.num_beams
    logits, cache = decoder.start(source)
    beams: list[list[int]] = [[]]  # live hypotheses; row b of `cache` and `scores` is beams[b]
    scores = torch.zeros(1, device=decoder.device)  # summed log-probabilities [b]
    finished: list[tuple[float, Generated]] = []
    while True:
        logp = ban_repeats(logits.log_softmax(-1), beams, opts.no_repeat_ngram) + scores[:, None]  # [b, V]
        V = logp.shape[1]
        top, index = logp.flatten().topk(min(2 * k, logp.numel()))
        rows: list[int] = []
        tokens: list[int] = []
        keep: list[float] = []
        for score, i in zip(top.tolist(), index.tolist()):
            if score == float("-inf"):
                break
            row, token = divmod(i, V)
            if token == decoder.sep_id:
                length = len(beams[row]) + 1
                finished.append((score / length**opts.length_penalty, Generated(beams[row], "sep")))
                if len(finished) == k:
                    break
            elif len(rows) < k:
                rows.append(row)
                tokens.append(token)
                keep.append(score)
        if len(finished) >= k or not rows:
            break
        beams = [beams[r] + [t] for r, t in zip(rows, tokens)]
        scores = torch.tensor(keep, device=decoder.device)
        if len(beams[0]) == opts.max_new_tokens:
            finished += [(s / len(b) ** opts.length_penalty, Generated(b, "length")) for s, b in zip(keep, beams)]
            break
        index_t = torch.tensor(rows, device=decoder.device)
        cache = [KV(kv.key.index_select(0, index_t), kv.value.index_select(0, index_t)) for kv in cache]
        logits, cache = decoder.step(torch.tensor(tokens, device=decoder.device), cache)
    return max(finished, key=lambda f: f[0])[1]


def generate_ids(decoder: Decoder, source: list[int], opts: GenerateOptions) -> Generated:
    """The target for one source ([CLS] source [SEP] ids) by `opts.strategy`."""
    if opts.strategy == "greedy" or (opts.strategy == "beam" and opts.num_beams == 1):
        return greedy(decoder, source, opts)
    if opts.strategy == "beam":
        return beam_search(decoder, source, opts)
    if opts.strategy == "sample":
        return sample(decoder, source, opts)
    raise BertkitError(f"unknown strategy `{opts.strategy}`: use one of {', '.join(STRATEGIES)}")


def detokenize(tokenizer, ids: list[int]) -> str:
    """Text from target ids: WordPieces glued, and no spaces between CJK characters ("北 京" -> "北京")."""
    text = tokenizer.decode(ids)
    out = []
    for i, ch in enumerate(text):
        if ch == " " and 0 < i < len(text) - 1 and _is_cjk(text[i - 1]) and _is_cjk(text[i + 1]):
            continue
        out.append(ch)
    return "".join(out)


def _is_cjk(ch: str) -> bool:
    """CJK ideographs and punctuation: the characters BERT's tokenizer splits one a token."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x3000 <= cp <= 0x303F
        or 0xFF00 <= cp <= 0xFFEF
    )


def generate_texts(run, texts: list[str], opts: GenerateOptions) -> list[dict]:
    """`run`: a loaded seq2seq model (`inference.load_task`). One record per source text: the target
    `text`, its `tokens` count and why it `stopped` (sep or length)."""
    decoder = Decoder(run.model, run.tokenizer)
    out = []
    for text in texts:
        g = generate_ids(decoder, source_ids(run.tokenizer, text, opts.max_new_tokens, decoder.positions), opts)
        out.append({"generated": detokenize(run.tokenizer, g.ids), "tokens": len(g.ids), "stopped": g.stopped})
    return out
