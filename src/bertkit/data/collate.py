"""Batches: dynamic padding (to the longest in the batch) and length-grouped, seeded batch orders."""

from __future__ import annotations

import torch

IGNORE = -100  # label value the losses skip (padding, sub-word positions)


def pad(seqs: list[list[int]], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences of ids to the longest: (ids [B, T] long, attention mask [B, T], 1 = token)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def collate(features: list[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad `input_ids`/`token_type_ids` to the longest feature; numbers and lists become tensors.

    List-valued targets (per-token labels) are padded with IGNORE; `example` indices are kept.
    """
    ids, mask = pad([f["input_ids"] for f in features], pad_id)
    types, _ = pad([f["token_type_ids"] for f in features])
    batch: dict[str, torch.Tensor] = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    for key, value in features[0].items():
        if key in batch:
            continue
        if isinstance(value, list):
            batch[key] = pad([f[key] for f in features], IGNORE)[0]
        elif isinstance(value, (int, float)):
            dtype = torch.float if isinstance(value, float) else torch.long
            batch[key] = torch.tensor([f[key] for f in features], dtype=dtype)
    return batch


def length_grouped_batches(
    lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50
) -> list[list[int]]:
    """Shuffled batches of similar-length features: shuffle, sort within chunks of `group` batches by
    length, cut into batches, shuffle the batches. Little padding, still random; fully determined by
    `generator`, so a resumed run sees the same order."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * group
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def sorted_batches(
    lengths: list[int], batch_size: int, groups: list | None = None, max_padding: float | None = None
) -> list[list[int]]:
    """Evaluation order: longest first, no shuffling (predictions are put back by index). With
    `groups` (one key per feature, e.g. the task of a multi-task feature) no batch mixes two keys.
    With `max_padding` (e.g. 0.25), a batch is also cut where padding to its longest member would
    add more than that share of real tokens: a server's batch of one long text and nine short ones
    becomes two forward passes instead of ten rows padded to the long one."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    parts = [order] if groups is None else [[i for i in order if groups[i] == key] for key in dict.fromkeys(groups)]
    return [batch for part in parts for batch in _cut(part, lengths, batch_size, max_padding)]


SMALL_BATCH_TOKENS = 512  # below this many padded tokens a forward pass is cheap: never split for padding


def _cut(order: list[int], lengths: list[int], batch_size: int, max_padding: float | None) -> list[list[int]]:
    batches: list[list[int]] = []
    current: list[int] = []
    width, real = 0, 0
    for i in order:  # longest first: the first member sets the batch's width
        n = len(current)
        padded = (n + 1) * width
        wasteful = (
            max_padding is not None and padded > SMALL_BATCH_TOKENS and padded > (1 + max_padding) * (real + lengths[i])
        )
        if current and (n >= batch_size or wasteful):
            batches.append(current)
            current, real = [], 0
        if not current:
            width = lengths[i]
        current.append(i)
        real += lengths[i]
    return batches + ([current] if current else [])
