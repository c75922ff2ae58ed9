"""The CRF against brute-force enumeration, plus worked examples of the BIO and BIOES rules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bertkit.errors import BertkitError
from bertkit.tasks.crf import CRF, FORBIDDEN, allowed_transitions

BIO5 = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES5 = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]


def random_crf(labels, scheme, seed):
    """A CRF whose start/transition/end scores are N(0, 1), far from the +-0.1 initialisation."""
    torch.manual_seed(seed)
    crf = CRF(labels, scheme)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def path_score(crf, emissions, path):
    """Score of one label path (float64, plain Python), forbidden moves counted as -10000."""
    start, trans, end = (x.double().tolist() for x in crf.scores())
    s = start[path[0]] + end[path[-1]]
    s += sum(float(emissions[t, j]) for t, j in enumerate(path))
    s += sum(trans[i][j] for i, j in zip(path, path[1:]))
    return s


def brute_force(crf, emissions, n):
    """(log Z, best path, best score, marginals [n][L]) over all L**n paths of the first n positions."""
    L = len(crf.labels)
    paths = list(itertools.product(range(L), repeat=n))
    scores = [path_score(crf, emissions, p) for p in paths]
    top = max(scores)
    log_z = top + math.log(sum(math.exp(s - top) for s in scores))
    marginals = [[0.0] * L for _ in range(n)]
    for p, s in zip(paths, scores):
        for t, j in enumerate(p):
            marginals[t][j] += math.exp(s - log_z)
    best = max(range(len(paths)), key=scores.__getitem__)
    return log_z, list(paths[best]), scores[best], marginals


def is_valid(tags: list[str], scheme: str) -> bool:
    """The scheme's rules written out on label strings, independently of `allowed_transitions`."""
    prev = "O"
    for tag in tags:
        p, kind = (tag[0], tag[2:]) if tag != "O" else ("O", "")
        inside = prev != "O" and prev[0] in "BI"  # an entity of type prev[2:] is open
        if p in "IE" and not (inside and prev[2:] == kind):
            return False
        if scheme == "BIOES" and p in "BSO" and inside:
            return False
        prev = tag
    return not (scheme == "BIOES" and prev != "O" and prev[0] in "BI")


@pytest.mark.parametrize(
    "labels,scheme",
    [
        (["O", "B-PER", "I-PER"], "BIO"),
        (["O", "B-A", "I-A", "B-B"], "BIO"),
        (BIO5, "BIO"),
        (["O", "B-X", "E-X", "S-X"], "BIOES"),
        (BIOES5, "BIOES"),
    ],
)
def test_loss_and_viterbi_match_brute_force(labels, scheme):
    crf = random_crf(labels, scheme, seed=len(labels))
    lengths = [4, 1, 3, 2]  # varying lengths in one batch
    B, T, L = len(lengths), max(lengths), len(labels)
    g = torch.Generator().manual_seed(1)
    emissions = (2 * torch.randn(B, T, L, generator=g)).requires_grad_()
    valid = {
        n: [p for p in itertools.product(range(L), repeat=n) if is_valid([labels[j] for j in p], scheme)]
        for n in set(lengths)
    }
    tags = torch.zeros(B, T, dtype=torch.long)  # a random valid gold path per row, 0 on padding
    for b, n in enumerate(lengths):
        tags[b, :n] = torch.tensor(valid[n][torch.randint(len(valid[n]), (), generator=g)])
    mask = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # [B, T]
    tags[~mask] = -100  # the NER task's ignore index on padding: must not be read
    loss = crf(emissions, tags, mask)
    loss.backward()
    paths = crf.decode(emissions, mask)

    nll = []
    for b, n in enumerate(lengths):
        e = emissions[b].detach()
        log_z, best, best_score, marginals = brute_force(crf, e, n)
        nll.append(log_z - path_score(crf, e, tags[b, :n].tolist()))
        assert paths[b] == best
        assert abs(path_score(crf, e, paths[b]) - best_score) <= 1e-5
        assert is_valid([labels[j] for j in paths[b]], scheme)
        # d(mean NLL)/d emissions = (marginal - one-hot(gold)) / B, and 0 on padding.
        expected = torch.tensor(marginals) - torch.nn.functional.one_hot(tags[b, :n], L)
        assert torch.allclose(emissions.grad[b, :n], expected.float() / B, atol=1e-5)
        assert (emissions.grad[b, n:] == 0).all()
    assert abs(loss.item() - sum(nll) / B) <= 1e-5


def test_invalid_gold_costs_10000_per_forbidden_step():
    crf = random_crf(BIO5, "BIO", seed=0).double()  # float64 so 1e4 + small is exact enough
    e = torch.randn(1, 3, 5, dtype=torch.float64)
    valid = crf(e, torch.tensor([[1, 2, 0]]))  # B-PER I-PER O
    invalid = crf(e, torch.tensor([[2, 4, 0]]))  # I-PER at the start, then I-LOC after I-PER
    log_z = valid.item() + path_score(crf, e[0], [1, 2, 0])
    assert abs(invalid.item() - (log_z - path_score(crf, e[0], [2, 4, 0]))) <= 1e-6
    assert invalid.item() > 2 * -FORBIDDEN


def test_allowed_transitions_bio_worked_example():
    start, trans, end = allowed_transitions(BIO5, "BIO")
    #            O  B-PER I-PER B-LOC I-LOC
    # start      1    1     0     1     0      an entity cannot begin with I-
    # from O     1    1     0     1     0
    # from B-PER 1    1     1     1     0      I-PER only after B-PER / I-PER
    # from I-PER 1    1     1     1     0
    # from B-LOC 1    1     0     1     1
    # from I-LOC 1    1     0     1     1
    # end        1    1     1     1     1      BIO may end anywhere
    assert start.tolist() == [True, True, False, True, False]
    assert trans.int().tolist() == [
        [1, 1, 0, 1, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 1, 1],
        [1, 1, 0, 1, 1],
    ]
    assert end.all()


def test_allowed_transitions_bioes_worked_example():
    start, trans, end = allowed_transitions(["O", "B-PER", "I-PER", "E-PER", "S-PER", "S-LOC"], "BIOES")
    #            O  B-PER I-PER E-PER S-PER S-LOC
    # start      1    1     0     0     1     1
    # from O     1    1     0     0     1     1
    # from B-PER 0    0     1     1     0     0    an open entity must continue or close
    # from I-PER 0    0     1     1     0     0
    # from E-PER 1    1     0     0     1     1
    # from S-PER 1    1     0     0     1     1
    # from S-LOC 1    1     0     0     1     1
    # end        1    0     0     1     1     1    a sentence cannot end inside an entity
    assert start.int().tolist() == [1, 1, 0, 0, 1, 1]
    assert trans.int().tolist() == [
        [1, 1, 0, 0, 1, 1],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [1, 1, 0, 0, 1, 1],
        [1, 1, 0, 0, 1, 1],
        [1, 1, 0, 0, 1, 1],
    ]
    assert end.int().tolist() == [1, 0, 0, 1, 1, 1]


@pytest.mark.parametrize(
    "label,scheme", [("X-PER", "BIO"), ("E-PER", "BIO"), ("PER", "BIO"), ("B-", "BIOES"), ("M-PER", "BIOES")]
)
def test_unknown_label_prefix_names_the_label(label, scheme):
    with pytest.raises(BertkitError, match=f"`{label}`"):
        CRF(["O", "B-PER", label], scheme)


def test_unknown_scheme_suggests():
    with pytest.raises(BertkitError, match="did you mean `BIOES`"):
        allowed_transitions(["O"], "BIOSE")


def test_mask_must_be_left_aligned():
    crf = CRF(BIO5)
    e, tags = torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long)
    for bad in ([[1, 0, 1], [1, 1, 1]], [[0, 1, 1], [1, 1, 1]]):
        with pytest.raises(BertkitError, match="left-aligned"):
            crf(e, tags, torch.tensor(bad, dtype=torch.bool))
        with pytest.raises(BertkitError, match="left-aligned"):
            crf.decode(e, torch.tensor(bad, dtype=torch.bool))


def test_viterbi_repairs_invalid_argmax_by_hand():
    crf = CRF(["O", "B-PER", "I-PER"])
    with torch.no_grad():
        for p in crf.parameters():
            p.zero_()  # only the scheme's rules and the emissions decide
    # Per-token argmax is (O, I-PER), which BIO forbids. Valid candidates and their scores:
    #   (O, B-PER) = 3 + 1 = 4   (O, O) = 3 + 0 = 3   (B-PER, I-PER) = 0 + 2 = 2
    e = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 1.0, 2.0]]])
    assert crf.decode(e) == [[0, 1]]  # (O, B-PER)
    # Same argmax, but now keeping I-PER and fixing the first token wins:
    #   (B-PER, I-PER) = 1 + 3 = 4   (O, B-PER) = 2 + 0.5 = 2.5   (O, O) = 2 + 0 = 2
    e = torch.tensor([[[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]]])
    assert crf.decode(e) == [[1, 2]]  # (B-PER, I-PER)


@pytest.mark.parametrize(
    "scheme,labels,boost", [("BIO", BIO5, 4.0), ("BIO", BIO5, 1e6), ("BIOES", BIOES5, 4.0), ("BIOES", BIOES5, 1e6)]
)
def test_viterbi_never_invalid_on_random_rows(scheme, labels, boost):
    crf = random_crf(labels, scheme, seed=3)
    B, T = 1000, 12
    g = torch.Generator().manual_seed(0)
    emissions = torch.randn(B, T, len(labels), generator=g)
    emissions[:, :, [j for j, x in enumerate(labels) if x[0] == "I"]] += boost  # push towards I-
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    paths = crf.decode(emissions, mask)
    assert [len(p) for p in paths] == lengths.tolist()
    bad = [p for p in paths if not is_valid([labels[j] for j in p], scheme)]
    assert bad == []
    # The argmax alone would be invalid for most rows, so the test does exercise the repair.
    argmax = emissions.argmax(-1).tolist()
    assert sum(not is_valid([labels[j] for j in row[:n]], scheme) for row, n in zip(argmax, lengths.tolist())) > 900


def test_adam_learns_toy_problem_and_never_learns_forbidden_moves():
    torch.manual_seed(0)
    crf = CRF(BIO5)
    head = torch.nn.Linear(8, 5)
    g = torch.Generator().manual_seed(0)
    features = torch.randn(3, 6, 8, generator=g)  # [B, T, D] fixed inputs
    gold = torch.tensor([[1, 2, 2, 0, 3, 4], [0, 3, 4, 4, 1, 0], [3, 0, 1, 2, 0, 0]])
    mask = torch.tensor([[1] * 6, [1] * 6, [1] * 4 + [0] * 2], dtype=torch.bool)
    forbidden_before = crf.transitions.detach()[~crf.transition_mask].clone()
    opt = torch.optim.Adam([*crf.parameters(), *head.parameters()], lr=0.1)
    first = None
    for _ in range(60):
        loss = crf(head(features), gold, mask)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in crf.parameters())
        assert (crf.transitions.grad[~crf.transition_mask] == 0).all()
        opt.step()
    assert loss.item() < 0.05 < first
    assert crf.decode(head(features), mask) == [gold[0].tolist(), gold[1].tolist(), gold[2, :4].tolist()]
    assert torch.equal(crf.transitions.detach()[~crf.transition_mask], forbidden_before)
    assert crf.scores()[1][~crf.transition_mask].eq(FORBIDDEN).all()


def test_init_and_state_dict():
    torch.manual_seed(0)
    crf = CRF(BIO5)
    params = torch.cat([crf.start, crf.end, crf.transitions.flatten()]).detach()
    assert params.abs().max() < 0.1 and params.std() > 0.04  # uniform(-0.1, 0.1): std 0.058
    # The masks follow from (labels, scheme), so checkpoints hold only the learned scores.
    assert sorted(crf.state_dict()) == ["end", "start", "transitions"]


def test_label_count_mismatch():
    with pytest.raises(BertkitError, match="emissions have 3 labels but the CRF was built for 5"):
        CRF(BIO5).decode(torch.zeros(1, 2, 3))


def _crf_models():
    """A tiny CRF tagging model, then a multi-task model with a classifier and a CRF tagger."""
    from bertkit.model import BertConfig
    from bertkit.tasks import get_task
    from bertkit.tasks.multitask import MultiTask

    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    for task in (get_task("ner", head="crf"), MultiTask({"a": get_task("classify"), "b": get_task("ner", head="crf")})):
        for sub in getattr(task, "tasks", {"": task}).values():
            sub.fit(
                [
                    {"tokens": ["x"], "tags": lab, "label": lab[0], "source": "t", "line": 1}
                    for lab in (["B-PER"], ["O"])
                ]
            )
        yield task.build_model(config)


def test_crf_scores_get_no_weight_decay():
    """Weight decay pulls transition scores toward 0 ("no preference"): only the encoder's and the
    emission layer's matrices are decayed, in a plain tagging model and inside a multi-task model."""
    from bertkit.train.optim import param_groups

    for model in _crf_models():
        decayed = {id(p) for p in param_groups(model, 0.01)[0]["params"]}
        names = {n for n, p in model.named_parameters() if id(p) in decayed}
        assert not any(".crf." in f".{n}" for n in names)
        assert {n.rsplit(".", 1)[1] for n in names} == {"weight"}
        assert any(n.endswith("classifier.weight") for n in names)


def test_head_lr_trains_the_head_at_its_own_rate():
    """--train.head-lr: the classifier and the CRF (fresh on a pretrained encoder) get their own groups at
    that rate, the encoder (embeddings, layers, pooler) keeps lr, in a plain and in a multi-task model;
    weight decay stays as without it. AdamW's first step moves every parameter by about its group's lr."""
    from bertkit.train.optim import build_optimizer, linear_schedule, param_groups

    for model in _crf_models():
        names = {id(p): n for n, p in model.named_parameters()}
        plain = param_groups(model, 0.01)
        groups = param_groups(model, 0.01, head_lr=1e-2)
        assert len(plain) == 2 and len(groups) == 4
        head = {names[id(p)] for g in groups if "lr" in g for p in g["params"]}
        assert any(n.endswith("classifier.weight") for n in head) and any(".crf." in f".{n}" for n in head)
        assert not any(n.startswith("bert.") or ".bert." in n for n in head)
        decayed = lambda gs: {id(p) for g in gs if g["weight_decay"] for p in g["params"]}  # noqa: E731
        assert decayed(groups) == decayed(plain)

        optimizer = build_optimizer(model, 1e-4, 0.0, head_lr=1e-2)
        scheduler = linear_schedule(optimizer, 0, 10)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
        for n, p in model.named_parameters():
            moved = (p.detach() - before[n]).abs().max().item()
            assert moved == pytest.approx(1e-2 if n in head else 1e-4, rel=1e-3), n
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([9e-5, 9e-5, 9e-3, 9e-3])
