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


class RandomRecDataset(torch.utils.data.Dataset):
    """An in-memory dataset in the interface format with a learnable signal (for train/evaluate tests)."""

    def __init__(self, spec: FeatureSpec, n: int, seed: int):
        self.spec = spec
        b = random_batch(spec, n, seed=seed, empty_rows=0)
        # click: parity of the item id; like: a long history
        b["labels"][:, 0] = (b["cat"][:, 1] % 2 == 0).float()
        if len(spec.tasks) > 1:
            b["labels"][:, 1] = ((b["seq"][0] != 0).sum(1) > spec.sequences[0].max_len // 2).float()
        self.data = b

    def __len__(self) -> int:
        return self.data["cat"].shape[0]

    def __getitem__(self, idx) -> dict:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
        d = self.data
        return {
            "cat": d["cat"][idx],
            "seq": [s[idx] for s in d["seq"]],
            "labels": d["labels"][idx],
            "group": d["group"][idx],
            "index": idx,
        }


def random_load_dataset(cfg) -> tuple:
    """Stands in for ``infnet.data.load_dataset``: ``cfg.max_rows`` train rows (default 600)."""
    spec = tiny_spec()
    n = cfg.max_rows or 600
    return (
        spec,
        RandomRecDataset(spec, n, 1),
        RandomRecDataset(spec, n // 3, 2),
        RandomRecDataset(spec, n // 3, 3),
    )
