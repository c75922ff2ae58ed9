"""Data-parallel training over processes and nodes: torch.distributed, launched by `torchrun`.

One node, 4 GPUs (or 4 CPU processes: gloo is used when there is no GPU):

    torchrun --nproc_per_node 4 -m bertkit.cli.main pretrain --config configs/pretrain/zh-small.yaml

Two nodes of 8 GPUs; run on each node, with its own --node_rank (0 on HOST, 1 on the other):

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --rdzv_backend c10d \
        --rdzv_endpoint HOST:29500 --rdzv_id bert1 \
        -m bertkit.cli.main pretrain --config configs/pretrain/zh-small.yaml --output /shared/runs/zh

(the output directory, which holds the resumable checkpoint, must be on a file system every node
sees: rank 0 writes it, every rank reads it on `--resume`).

What the training loop does with it (`bertkit.train.loop`):
- `--train.batch-size` is the *global* batch: every process takes its slice (`batch[rank::world]`) of
  every global batch the seeded sampler draws, so the data order, the steps and the checkpoints'
  positions (epoch, batch, step) are the same for any number of processes, and a checkpoint resumes
  with a different world size.
- The loss is summed and divided by the global count of what it averages over (masked tokens,
  examples: one all_reduce of the counts before the backward pass), then multiplied by the world size
  because DistributedDataParallel averages the gradients. Every process therefore computes the
  gradient of the mean loss over the whole global batch: 2 processes with 16 examples each take the
  same step as 1 process with 32, up to float rounding (tests/test_distributed.py).
- Only rank 0 writes: logs, metrics.jsonl, plots, checkpoints and the saved model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bertkit.errors import BertkitError
from bertkit.inference import resolve_device

log = logging.getLogger("bertkit")


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """Join the process group that `torchrun` describes in RANK / WORLD_SIZE / LOCAL_RANK; without
    them (a plain `bertkit pretrain`) nothing happens. NCCL when training on CUDA, else gloo."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist()
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise BertkitError(
                f"WORLD_SIZE is set but {key} is not: start distributed runs with "
                "`torchrun --nproc_per_node N -m bertkit.cli.main ...`"
            )
    info = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    cuda = resolve_device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if info.is_main:
        log.info("distributed: %d processes (%s)", info.world_size, "nccl" if cuda else "gloo")
    else:  # one log: rank 0's (warnings and errors still come from every process)
        log.setLevel(logging.WARNING)
    return info


def current() -> Dist:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Dist()
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def device_for(name: str | None, info: Dist) -> torch.device:
    """The device this process trains on: `name` as given, else its own GPU (cuda:LOCAL_RANK) or the CPU."""
    device = resolve_device(name)
    if device == torch.device("cuda") and info.world_size > 1:
        return torch.device(f"cuda:{info.local_rank}")
    return device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all processes (the values themselves when not distributed)."""
    if current().world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's `flag` on every process (decisions such as early stopping must agree)."""
    if current().world_size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order (on every process)."""
    if current().world_size == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _Loss(torch.nn.Module):
    """A task's loss as a module: `forward(loss_fn, *args)` is `loss_fn(model, *args)`, so what DDP wraps
    is the whole loss computation and it sees every parameter the loss uses, a CRF's included."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, loss_fn, *args):
        return loss_fn(self.model, *args)


def wrap(model: torch.nn.Module, device: torch.device, unused_parameters: bool = False) -> torch.nn.Module:
    """What the training loop computes losses through: `wrapped(task.loss, batch, ...)` is
    `task.loss(model, batch, ...)`, inside DistributedDataParallel when distributed.

    `unused_parameters`: some trainable parameters get no gradient in some steps (a multi-task model
    trains one head per batch). Otherwise every trainable parameter must get one in every step, and
    those that should not train (e.g. the NSP head without NSP data) must have requires_grad False."""
    if current().world_size == 1:
        return _Loss(model)
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(_Loss(model), device_ids=ids, find_unused_parameters=unused_parameters)


@contextmanager
def launched(device: str | None = None) -> Iterator[Dist]:
    """`with launched(cfg.device) as info:` a job's processes joined (under torchrun) for its duration."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        shutdown()


def barrier() -> None:
    """Wait for every process (a no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
