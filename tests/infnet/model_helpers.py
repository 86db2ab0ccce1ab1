"""A tiny feature spec and a random batch generator in the data <-> model interface format (model tests)."""

from __future__ import annotations

import torch

from infnet.data import FeatureSpec, FieldSpec


def tiny_spec(n_tasks: int = 2) -> FeatureSpec:
    return FeatureSpec(
        categorical=[FieldSpec("user_id", 30), FieldSpec("item_id", 40), FieldSpec("age", 7)],
        sequences=[FieldSpec("hist_items", 40, 12), FieldSpec("hist_genres", 19, 6)],
        tasks=["click", "like", "long_view"][:n_tasks],
        group_field="user_id",
    )


def random_batch(spec: FeatureSpec, batch_size: int = 8, seed: int = 0, empty_rows: int = 1) -> dict:
    """Random ids, random history lengths (the first ``empty_rows`` rows have no history at all)."""
    g = torch.Generator().manual_seed(seed)
    cat = torch.stack(
        [torch.randint(0, f.vocab_size, (batch_size,), generator=g) for f in spec.categorical], 1
    )
    seq = []
    for f in spec.sequences:
        ids = torch.randint(1, f.vocab_size, (batch_size, f.max_len), generator=g)
        lengths = torch.randint(0, f.max_len + 1, (batch_size,), generator=g)
        lengths[:empty_rows] = 0
        ids[torch.arange(f.max_len)[None] >= lengths[:, None]] = 0
        seq.append(ids)
    labels = torch.randint(0, 2, (batch_size, len(spec.tasks)), generator=g).float()
    return {
        "cat": cat,
        "seq": seq,
        "labels": labels,
        "group": cat[:, 0].clone(),
        "index": torch.arange(batch_size),
    }


def pad_more(batch: dict, extra: int = 5) -> dict:
    """The same batch with ``extra`` more padding columns on every sequence."""
    out = dict(batch)
    out["seq"] = [torch.cat([s, torch.zeros(s.shape[0], extra, dtype=s.dtype)], dim=1) for s in batch["seq"]]
    return out
