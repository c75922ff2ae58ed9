"""Optimisers and the learning-rate schedule: AdamW as BERT is fine-tuned, LAMB as large-batch BERT is
pretrained, both without weight decay on biases and LayerNorm; linear warmup then linear decay."""

from __future__ import annotations

import torch
from torch import nn

from bertkit.errors import BertkitError

OPTIMIZERS = ("adamw", "lamb")


def param_groups(model: nn.Module, weight_decay: float, head_lr: float | None = None) -> list[dict]:
    """Decay weight matrices only: biases and LayerNorm parameters (1-D) are left alone as in the paper,
    and so are a CRF's transition scores (log-potentials learned from tag statistics, which decay
    would pull toward "no preference"). `adapt` marks the groups that get LAMB's layer-wise trust ratio
    (AdamW ignores it). With `head_lr`, the parameters outside the encoder (`bert.`: embeddings, layers,
    pooler), that is the task head that starts from scratch (classifier, tagger, CRF), get groups of
    their own at that learning rate."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            decayed = not (p.ndim < 2 or ".crf." in f".{name}")
            head = head_lr is not None and "bert" not in name.split(".")
            groups.setdefault((head, decayed), []).append(p)
    # the encoder's two groups always (so optimiser states line up), the head's where it has parameters
    keys = [(False, True), (False, False)] + [k for k in ((True, True), (True, False)) if k in groups]
    return [
        {
            "params": groups.get((head, decayed), []),
            "weight_decay": weight_decay if decayed else 0.0,
            "adapt": decayed,
            **({"lr": head_lr} if head else {}),
        }
        for head, decayed in keys
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, name: str = "adamw", head_lr: float | None = None
) -> torch.optim.Optimizer:
    """`head_lr`: the task head's learning rate, when it differs from the encoder's `lr` (see param_groups)."""
    if name not in OPTIMIZERS:
        raise BertkitError(f"unknown optimizer `{name}`; use one of: {', '.join(OPTIMIZERS)}")
    groups = param_groups(model, weight_decay, head_lr)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6)
    for g in groups:
        del g["adapt"]
    # torch's fused kernel: one pass over each tensor instead of a dozen (on 2 CPU cores, 25 ms instead
    # of 120 ms a step for MiniLM's 33M parameters); transformers' Trainer uses it by default too
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-6, fused=fused)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes").

    Adam's bias-corrected direction plus decoupled weight decay, u = m̂ / (sqrt(v̂) + eps) + wd * w, is
    rescaled per parameter tensor ("layer") by the trust ratio ||w|| / ||u||, so every layer moves by
    about lr times its own norm whatever the scale of its gradients; that is what keeps very large
    batches stable. The ratio is 1 when either norm is 0 (fresh zero-initialised tensors). As in the
    authors' TensorFlow code, groups with `adapt=False` (biases, LayerNorm) get neither the trust
    ratio nor weight decay: w -= lr * m̂ / (sqrt(v̂) + eps).
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        adapt: bool = True,
    ):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, adapt=adapt))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:  # unused this step (e.g. a frozen or idle head): no update, no decay
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0  # a plain number: the bias corrections below need no device sync
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["adapt"]:
                    if group["weight_decay"]:
                        update.add_(p, alpha=group["weight_decay"])
                    w_norm, u_norm = p.norm(), update.norm()
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                    update.mul_(trust)
                p.add_(update, alpha=-group["lr"])
        return loss


def linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int):
    """lr rises linearly from 0 over `warmup_steps`, then falls linearly to 0 at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
