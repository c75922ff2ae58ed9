"""A linear-chain CRF over BERT token logits, for NER (Lafferty et al. 2001; Lample et al. 2016).

A softmax head tags every token on its own, so it can emit `O I-PER`, which no BIO tagging allows.
The CRF adds a score for every (previous label, label) pair and normalises over whole label
sequences: the loss is the negative log-likelihood of the gold sequence, and decoding (Viterbi)
returns the best whole sequence. Transitions the tagging scheme forbids are pinned to a large
negative score, so they are never learned and never decoded.

Shapes in comments use:
    B = batch size      T = sequence length (words, after compaction)      L = number of labels

The mask must be left-aligned: row b covers positions 0 .. n_b - 1 and nothing after. The NER task
tags words, not word pieces, so it gathers each word's first-piece logits to the left of the row
(dropping [CLS], [SEP], later pieces and padding) before calling the CRF; a mask with holes in it
would chain transitions across the holes, so it is refused rather than silently misread.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.errors import BertkitError, suggest

# Not -inf: the forward algorithm differentiates through these entries, and -inf turns into NaN
# gradients as soon as a whole row of a logsumexp is forbidden. exp(-10000) is 0 in float32 anyway.
FORBIDDEN = -10000.0

SCHEMES = {"BIO": "BI", "BIOES": "BIES"}


def _split(label: str, scheme: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if label == "O":
        return "O", ""
    prefix, dash, kind = label.partition("-")
    if not dash or not kind or prefix not in SCHEMES[scheme]:
        raise BertkitError(
            f"label `{label}` is not a {scheme} label: expected `O` or one of "
            f"{', '.join(p + '-TYPE' for p in SCHEMES[scheme])}. Fix the label list, or pass "
            f'scheme="BIOES" if the data uses E-/S- tags (IOB1 data must be converted to BIO first)'
        )
    return prefix, kind


def allowed_transitions(labels: list[str], scheme: str = "BIO"):
    """(start_mask [L], transition_mask [L, L] indexed (from, to), end_mask [L]), all booleans.

    BIO: an `I-X` continues an entity, so it may only follow `B-X` or `I-X` and never start a
    sentence; everything else may go anywhere. BIOES also closes entities explicitly: after `B-X`
    or `I-X` only `I-X`/`E-X` may come, a sentence may not end inside an entity, and a new entity
    (`B-*`, `S-*`) or `O` may only come once the previous one is closed (after `E`, `S` or `O`).
    """
    if scheme not in SCHEMES:
        raise BertkitError(f"unknown tagging scheme `{scheme}`{suggest(scheme, SCHEMES)}; use one of {sorted(SCHEMES)}")
    parts = [_split(label, scheme) for label in labels]
    L = len(labels)
    start = torch.zeros(L, dtype=torch.bool)
    end = torch.zeros(L, dtype=torch.bool)
    trans = torch.zeros(L, L, dtype=torch.bool)
    for j, (p, kind) in enumerate(parts):
        start[j] = p in "BSO"
        end[j] = scheme == "BIO" or p in "ESO"
        for i, (q, prev_kind) in enumerate(parts):
            if scheme == "BIO":
                ok = p in "BO" or (q in "BI" and prev_kind == kind)
            elif p in "IE":  # BIOES: continue or close the open entity of the same type
                ok = q in "BI" and prev_kind == kind
            else:  # BIOES: B, S or O only once the previous entity is closed
                ok = q in "ESO"
            trans[i, j] = ok
    return start, trans, end


class CRF(nn.Module):
    """Linear-chain CRF: `forward` is the mean sequence NLL, `decode` the Viterbi paths."""

    def __init__(self, labels: list[str], scheme: str = "BIO"):
        super().__init__()
        self.labels = list(labels)
        self.scheme = scheme
        start_mask, transition_mask, end_mask = allowed_transitions(self.labels, scheme)
        L = len(self.labels)
        self.start = nn.Parameter(torch.empty(L).uniform_(-0.1, 0.1))  # [L] score of starting with j
        self.end = nn.Parameter(torch.empty(L).uniform_(-0.1, 0.1))  # [L] score of ending with j
        self.transitions = nn.Parameter(torch.empty(L, L).uniform_(-0.1, 0.1))  # [L, L] from i to j
        # Not persistent: they follow from (labels, scheme), which the task saves; checkpoints then
        # hold only what was learned.
        self.register_buffer("start_mask", start_mask, persistent=False)
        self.register_buffer("transition_mask", transition_mask, persistent=False)
        self.register_buffer("end_mask", end_mask, persistent=False)

    def scores(self, forbidden: float = FORBIDDEN):
        """(start [L], transitions [L, L], end [L]) with forbidden entries replaced by `forbidden`.

        `torch.where` (not an in-place fill) so the forbidden entries get zero gradient and the
        parameters behind them never move.
        """

        def pin(p, allowed):
            return torch.where(allowed, p, torch.full_like(p, forbidden))

        return (
            pin(self.start, self.start_mask),
            pin(self.transitions, self.transition_mask),
            pin(self.end, self.end_mask),
        )

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor | None = None):
        """Mean over the batch of -log p(tags | emissions); emissions [B, T, L], tags, mask [B, T].

        Gold tags must be valid under the scheme, or their score includes -10000 per bad step.
        Tags under mask False are ignored, so they may hold an ignore index such as -100.
        """
        # fp16/bf16 logits (autocast) are summed over whole sentences: do it in fp32 at least.
        emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
        mask = self._check(emissions, mask)
        start, trans, end = self.scores()
        B, T, L = emissions.shape
        rows = torch.arange(B, device=emissions.device)
        m = mask.float()
        tags = tags.masked_fill(~mask, 0)  # any valid index: these positions are multiplied by 0

        # Score of the gold path: start + emissions + transitions + end, padding contributing 0.
        gold = start[tags[:, 0]] + emissions[rows, 0, tags[:, 0]]  # [B]
        if T > 1:
            emit = emissions[:, 1:].gather(2, tags[:, 1:, None]).squeeze(2)  # [B, T-1]
            step = trans[tags[:, :-1], tags[:, 1:]]  # [B, T-1]
            gold = gold + ((emit + step) * m[:, 1:]).sum(1)
        last = tags[rows, mask.sum(1) - 1]  # [B] the tag at each row's last real position
        gold = gold + end[last]

        # log Z by the forward algorithm: alpha[b, j] = log-sum of all prefixes ending in label j.
        alpha = start + emissions[:, 0]  # [B, L]
        for t in range(1, T):
            # [B, L, 1] + [L, L] + [B, 1, L] -> sum out the previous label -> [B, L]
            nxt = torch.logsumexp(alpha[:, :, None] + trans + emissions[:, t, None, :], dim=1)
            alpha = torch.where(mask[:, t, None], nxt, alpha)  # finished rows keep their alpha
        log_z = torch.logsumexp(alpha + end, dim=1)  # [B]
        return (log_z - gold).mean()

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor | None = None) -> list[list[int]]:
        """The best label-id path of every row (Viterbi), `mask[b].sum()` ids each.

        Decoding needs no gradient, so forbidden moves are -inf here: whatever the emissions, the
        path is valid under the scheme whenever any valid path of that length exists.
        """
        emissions = emissions.to(torch.promote_types(emissions.dtype, torch.float32))
        mask = self._check(emissions, mask)
        start, trans, end = self.scores(float("-inf"))
        B, T, L = emissions.shape
        score = start + emissions[:, 0]  # [B, L] best prefix ending in each label
        history = []  # T-1 tensors [B, L]: the best previous label for each label at step t
        for t in range(1, T):
            best, prev = (score[:, :, None] + trans).max(dim=1)  # [B, L, L] -> [B, L]
            score = torch.where(mask[:, t, None], best + emissions[:, t], score)
            history.append(prev)
        last = (score + end).argmax(dim=1).tolist()  # [B]
        history = torch.stack(history).tolist() if history else []  # [T-1][B][L]
        paths = []
        for b, n in enumerate(mask.sum(1).tolist()):
            path = [last[b]]
            for t in range(n - 1, 0, -1):  # history[t-1] holds the choice made at step t
                path.append(history[t - 1][b][path[-1]])
            paths.append(path[::-1])
        return paths

    def _check(self, emissions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The mask as bool [B, T] (all True when None), refused unless every row is a prefix."""
        B, T, L = emissions.shape
        if L != len(self.labels):
            raise BertkitError(
                f"emissions have {L} labels but the CRF was built for {len(self.labels)} "
                f"({self.labels}); build the head and the CRF from one label list"
            )
        if mask is None:
            return torch.ones(B, T, dtype=torch.bool, device=emissions.device)
        mask = mask.bool()
        if T == 0 or not bool(mask[:, 0].all()) or bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise BertkitError(
                "CRF mask must be left-aligned with the first position on in every row "
                "(1 1 1 0 0); gather the word positions to the left before calling the CRF"
            )
        return mask
