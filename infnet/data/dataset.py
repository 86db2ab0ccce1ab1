"""The data <-> model interface: feature specs, an in-memory multi-task dataset and a fast batch loader.

The data <-> model interface (fixed):

- ``FeatureSpec``: M categorical fields, F behaviour sequences, T task names and the gAUC group field.
- ``RecDataset[idx]``: ``idx`` an int (one sample) or a 1-D LongTensor / list (a batch). A batch dict holds
  ``cat`` (B, M) long, ``seq`` list of F (B, n_a) long (0 = padding), ``labels`` (B, T) float in {0, 1},
  ``group`` (B,) long and ``index`` (B,) long (row index, for ``gather_in_order``).
- ``make_loader``: a ``DataLoader`` of whole batches (one tensor index per batch, no per-sample collate),
  shuffling seeded by (seed, epoch), ``DistributedSampler`` shards under DDP.
- ``load_dataset(DataConfig)`` -> (spec, train, val, test) lives in ``infnet/data/load.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

from shared.distributed import DistInfo, make_sampler
from shared.errors import DataError
from shared.seeding import make_generator


@dataclass
class DataConfig:
    """The data section of InfnetConfig.

    Attributes:
        dataset: movielens100k (the embedded default), kuairand_pure or tenrec_qb (the paper's data), or table
            (your own CSV / parquet files, named in the feature config's table section)
        root: data root; the dataset's files are in <root>/<dataset>/ (table: beside the feature config)
        feature_config: YAML feature config ("" = infnet/configs/features/<dataset>.yaml; required for table)
        max_rows: keep only the earliest max_rows interactions (0 = all); for quick runs
        max_train_rows: train on only the most recent max_train_rows rows of the train split (0 = all); val
            and test stay the same rows, so the scores stay comparable (the reproduction's HSTU-style run)
        cache: cache the encoded tensors in cache_dir (rebuilt when a file or the feature config changes)
        cache_dir: folder of the cache ("" = <root>/<dataset>/processed)
    """

    dataset: Literal["movielens100k", "kuairand_pure", "tenrec_qb", "table"] = "movielens100k"
    root: str = "data/infnet"
    feature_config: str = ""
    max_rows: int = 0
    max_train_rows: int = 0
    cache: bool = True
    cache_dir: str = ""


@dataclass
class FieldSpec:
    """One input field after preprocessing."""

    name: str
    vocab_size: int  # ids are in [0, vocab_size); id 0 is reserved for padding / unknown / OOV
    max_len: int = 1  # sequences: padded/truncated length n_a; categorical fields: 1


@dataclass
class FeatureSpec:
    categorical: list[FieldSpec]  # M categorical fields (ids, static attributes, bucketized numerics)
    sequences: list[FieldSpec]  # F behaviour sequences
    tasks: list[str]  # task (label) names, e.g. ["click", "like", "long_view"]
    group_field: str  # the categorical field used for gAUC (user id)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()  # a view, no copy


class DenseSequence:
    """A sequence field stored as a padded (N, L) tensor (e.g. the genres of the target item)."""

    def __init__(self, tokens: torch.Tensor):
        self.tokens = tokens  # (N, L) int32
        self._tokens = _np(tokens)

    @property
    def max_len(self) -> int:
        return int(self.tokens.shape[1])

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self._tokens[idx].astype(np.int64))  # (B, L)

    def subset(self, rows: np.ndarray) -> DenseSequence:
        return DenseSequence(torch.from_numpy(self._tokens[rows]))


class HistorySequence:
    """A behaviour history stored as pointers into one shared, user-then-time ordered event array.

    Row i's history is ``events[start[i]:end[i]]`` read backwards (most recent first), truncated to
    ``max_len``. ``end[i]`` excludes every event at or after row i's time, so there is no future leakage.
    Storing pointers instead of an (N, L) matrix keeps KuaiRand (1.4M rows x several histories) small;
    ``gather`` builds the (B, L) block for a batch with one vectorised index.
    """

    def __init__(self, events: torch.Tensor, start: torch.Tensor, end: torch.Tensor, max_len: int):
        self.events = events  # (E + 1,) int32, events[0] = 0 is a sentinel so empty histories index safely
        self.start = start  # (N,) int64, first event of the row's user
        self.end = end  # (N,) int64, one past the last event strictly before the row
        self._events, self._start, self._end = _np(events), _np(start), _np(end)
        self._max_len = int(max_len)
        self._offsets = np.arange(self._max_len)

    @property
    def max_len(self) -> int:
        return self._max_len

    def gather(self, idx: np.ndarray) -> torch.Tensor:
        end, start = self._end[idx], self._start[idx]  # (B,)
        pos = end[:, None] - 1 - self._offsets[None, :]  # (B, L), most recent first
        tokens = self._events[np.maximum(pos, 0)].astype(np.int64)
        tokens[pos < start[:, None]] = 0  # older than the user's first event: padding
        return torch.from_numpy(tokens)

    def subset(self, rows: np.ndarray) -> HistorySequence:
        return HistorySequence(
            self.events, torch.from_numpy(self._start[rows]), torch.from_numpy(self._end[rows]), self._max_len
        )


SequenceStore = DenseSequence | HistorySequence


class RecDataset(torch.utils.data.Dataset):
    """All tensors in memory; ``ds[batch_indices]`` returns a whole batch with a few array indexes.

    Batches are gathered with numpy (single-threaded): torch's parallel indexing of small blocks is
    slower, and much slower when other processes share the cores.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        cat: torch.Tensor,  # (N, M) int32
        sequences: Sequence[SequenceStore],  # F stores
        labels: torch.Tensor,  # (N, T) float32
        group: torch.Tensor,  # (N,) int64
    ):
        n = cat.shape[0]
        if labels.shape[0] != n or group.shape[0] != n:
            raise DataError(
                f"RecDataset: row counts differ (cat {n}, labels {labels.shape[0]}, group {group.shape[0]})"
            )
        if cat.shape[1] != len(spec.categorical) or len(sequences) != len(spec.sequences):
            raise DataError("RecDataset: tensors do not match the FeatureSpec (field counts differ)")
        self.spec = spec
        self.cat = cat
        self.sequences = list(sequences)
        self.labels = labels
        self.group = group
        self._cat, self._labels, self._group = _np(cat), _np(labels), _np(group)

    def __len__(self) -> int:
        return int(self.cat.shape[0])

    def __getitem__(self, idx: int | Sequence[int] | torch.Tensor | np.ndarray) -> dict:
        single = isinstance(idx, int | np.integer)
        index = np.asarray([idx] if single else idx, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} rows")
        index %= max(len(self), 1)  # negative indices count from the end, as in a list
        batch = {
            "cat": torch.from_numpy(self._cat[index].astype(np.int64)),  # (B, M)
            "seq": [s.gather(index) for s in self.sequences],  # F x (B, n_a)
            "labels": torch.from_numpy(self._labels[index]),  # (B, T)
            "group": torch.from_numpy(self._group[index]),  # (B,)
            "index": torch.from_numpy(index),  # (B,)
        }
        if single:
            return {k: ([s[0] for s in v] if k == "seq" else v[0]) for k, v in batch.items()}
        return batch

    def subset(self, rows: np.ndarray | torch.Tensor) -> RecDataset:
        """A dataset of the given rows (sharing the event arrays of the histories)."""
        rows = np.asarray(rows, dtype=np.int64)
        return RecDataset(
            self.spec,
            torch.from_numpy(self._cat[rows]),
            [s.subset(rows) for s in self.sequences],
            torch.from_numpy(self._labels[rows]),
            torch.from_numpy(self._group[rows]),
        )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    info: DistInfo | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of ``dataset``, shuffled by (seed, epoch) alone so a resumed run replays the same order.

    A standard ``DataLoader`` over a ``BatchSampler``, with automatic batching off (``batch_size=None``), so
    each batch is one ``dataset[list of rows]`` call (``RecDataset`` gathers a whole batch with a few array
    indexes) instead of B per-sample calls and a collate. The row order comes from the usual samplers: a
    ``RandomSampler`` with a generator seeded ``seed * 1000 + epoch`` (or a ``SequentialSampler``), and under
    DDP ``shared.distributed.make_sampler``'s ``DistributedSampler`` seeded so that it draws the same
    permutation before taking this rank's shard (padded to equal length; ``gather_in_order`` drops repeats).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    sampler: Sampler | None = None
    if info is not None:
        # DistributedSampler seeds its permutation with seed + epoch
        sampler = make_sampler(dataset, info, shuffle=shuffle, seed=int(seed) * 1000)
        if sampler is not None:
            sampler.set_epoch(int(epoch))
    if sampler is None:
        sampler = (
            RandomSampler(dataset, generator=make_generator(int(seed) * 1000 + int(epoch)))
            if shuffle
            else SequentialSampler(dataset)
        )
    return DataLoader(dataset, sampler=BatchSampler(sampler, int(batch_size), drop_last), batch_size=None)
