"""Torch datasets and collate functions: LM blocks per domain, classification and multiple-choice examples.

- ``LMBlockDataset``: a domain's documents packed into one token stream with ``<eos>`` between documents
  (nanoGPT style), cut into non-overlapping blocks of ``context_len``; item = ``input_ids`` (T,) and
  ``targets`` (T,) shifted by one, plus ``domain_id``. The document order is shuffled by the seed.
- ``ClassificationDataset``: ``<bos> text <eos>`` truncated to ``max_len``; ``collate_classification``
  right-pads to the longest item: ``input_ids`` (B, L), ``attention_mask`` (B, L), ``labels`` (B,),
  ``task_ids`` (B,), ``domain_ids`` (B,), ``lengths`` (B,).
- ``MultipleChoiceDataset``: ``<bos> prompt`` + each choice continuation; ``collate_multiple_choice``
  flattens the (example, choice) pairs into N rows: ``input_ids`` (N, L), ``attention_mask`` (N, L),
  ``score_mask`` (N, L) (True where the next token is a continuation token: sum the log-probabilities of
  ``input_ids[:, 1:]`` under ``score_mask[:, :-1]``), ``example_index`` (N,), ``labels`` (B,), ``n_choices`` (B,).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from gem.data.adapters import SPLITS, Example
from gem.data.tokenizer import GemTokenizer


class LMBlockDataset(Dataset):
    """Packed LM blocks of one domain (documents joined by ``<eos>``)."""

    def __init__(
        self,
        docs: Sequence[Sequence[int]],
        context_len: int,
        eos_id: int,
        domain_id: int = 0,
        seed: int | None = 0,
    ):
        order = np.arange(len(docs)) if seed is None else np.random.default_rng(seed).permutation(len(docs))
        stream = [t for i in order for t in [*docs[i], eos_id]]
        self.stream = torch.tensor(stream, dtype=torch.long)  # (n_tokens,)
        self.context_len, self.domain_id = context_len, domain_id
        self.n_blocks = max(0, (len(stream) - 1) // context_len)

    def __len__(self) -> int:
        return self.n_blocks

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n_blocks:
            raise IndexError(i)
        a = i * self.context_len
        chunk = self.stream[a : a + self.context_len + 1]  # (T + 1,)
        return {"input_ids": chunk[:-1], "targets": chunk[1:], "domain_id": torch.tensor(self.domain_id)}


def collate_lm(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}  # (B, T), (B, T), (B,)


class ClassificationDataset(Dataset):
    """Tokenized examples of one classification task."""

    def __init__(
        self,
        examples: Sequence[Example],
        tokenizer: GemTokenizer,
        max_len: int,
        task_id: int = 0,
        domain_id: int = 0,
    ):
        body = tokenizer.encode_batch([e.text for e in examples])
        self.ids = [[tokenizer.bos_id, *b[: max_len - 2], tokenizer.eos_id] for b in body]
        self.labels = [e.label for e in examples]
        self.task_id, self.domain_id = task_id, domain_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.ids[i],
            "label": self.labels[i],
            "task_id": self.task_id,
            "domain_id": self.domain_id,
        }


def collate_classification(batch: list[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(b["input_ids"]) for b in batch])
    ids = torch.full((len(batch), int(lengths.max())), pad_id, dtype=torch.long)  # (B, L)
    for r, b in enumerate(batch):
        ids[r, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
    return {
        "input_ids": ids,
        "attention_mask": torch.arange(ids.shape[1])[None, :] < lengths[:, None],  # (B, L) bool
        "labels": torch.tensor([b["label"] for b in batch]),
        "task_ids": torch.tensor([b["task_id"] for b in batch]),
        "domain_ids": torch.tensor([b["domain_id"] for b in batch]),
        "lengths": lengths,
    }


class MultipleChoiceDataset(Dataset):
    """Tokenized multiple-choice examples: a prompt and its choice continuations."""

    def __init__(
        self, examples: Sequence[Example], tokenizer: GemTokenizer, max_len: int, domain_id: int = 0
    ):
        self.items = []
        for e in examples:
            prompt = [tokenizer.bos_id, *tokenizer.encode(e.text)]
            choices = [tokenizer.encode(c)[: max_len - 1] for c in e.choices]
            keep = max_len - max(len(c) for c in choices)
            # keep the end of a long prompt: the question sits right before the answer
            self.items.append(
                {"prompt": prompt[-keep:], "choices": choices, "label": e.label, "domain_id": domain_id}
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def collate_multiple_choice(batch: list[dict[str, Any]], pad_id: int = 0) -> dict[str, torch.Tensor]:
    rows, starts, owner = [], [], []
    for b_i, b in enumerate(batch):
        for c in b["choices"]:
            rows.append(b["prompt"] + c)
            starts.append(len(b["prompt"]))
            owner.append(b_i)
    lengths = torch.tensor([len(r) for r in rows])
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)  # (N, L)
    score = torch.zeros_like(ids, dtype=torch.bool)  # (N, L): position t scores token t + 1
    for r, (row, s) in enumerate(zip(rows, starts)):
        ids[r, : len(row)] = torch.tensor(row)
        score[r, s - 1 : len(row) - 1] = True
    return {
        "input_ids": ids,
        "attention_mask": torch.arange(ids.shape[1])[None, :] < lengths[:, None],
        "score_mask": score,
        "example_index": torch.tensor(owner),
        "labels": torch.tensor([b["label"] for b in batch]),
        "n_choices": torch.tensor([len(b["choices"]) for b in batch]),
        "domain_ids": torch.tensor([b["domain_id"] for b in batch]),
    }


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    collate_fn: Callable[[list[Any]], Any],
    drop_last: bool = False,
) -> DataLoader:
    """A single-process DataLoader whose shuffle order depends only on ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        collate_fn=collate_fn,
        drop_last=drop_last,
    )


def describe(suite: Any, tokenizer: GemTokenizer | None = None) -> list[dict[str, Any]]:
    """One row per domain (LM docs, characters and tokens per split) and per task (examples per split)."""
    rows: list[dict[str, Any]] = []
    for d in suite.domains:
        row: dict[str, Any] = {"kind": "lm", "name": d, "domain": d, "held_out": d == suite.held_out_domain}
        for s in SPLITS:
            texts = suite.lm_texts(d, s)
            row[s] = len(texts)
            row[f"{s}_chars"] = sum(map(len, texts))
            if tokenizer is not None:
                row[f"{s}_tokens"] = sum(len(x) for x in tokenizer.encode_batch(texts)) + len(
                    texts
                )  # + <eos>
        rows.append(row)
    for name in suite.task_names:
        t = suite.task(name)
        row = {"kind": t.kind, "name": name, "domain": t.domain, "held_out": t.domain == suite.held_out_domain,
               "labels": len(t.labels), **t.counts()}  # fmt: skip
        rows.append(row)
    return rows


def format_description(rows: list[dict[str, Any]]) -> str:
    """The table ``python -m gem.prepare`` prints."""
    out = [f"{'kind':<16} {'name':<24} {'domain':<16} {'train':>8} {'val':>7} {'test':>7}  notes"]
    for r in rows:
        if r["kind"] == "lm":
            tok = "train_tokens" in r
            cells = [f"{r[s + ('_tokens' if tok else '_chars')]:>{w}}" for s, w in zip(SPLITS, (8, 7, 7))]
            note = f"{'tokens' if tok else 'chars'}; docs {r['train']}/{r['val']}/{r['test']}"
        else:
            cells = [f"{r[s]:>{w}}" for s, w in zip(SPLITS, (8, 7, 7))]
            note = f"{r['labels']} labels" if r["kind"] == "classification" else ""
        note += " (held out)" if r["held_out"] else ""
        out.append(f"{r['kind']:<16} {r['name']:<24} {r['domain']:<16} {' '.join(cells)}  {note}")
    return "\n".join(out)
