"""Torch ``Dataset`` over scenes, the collate that builds ``offset``, and a reproducible loader.

A batch is the Pointcept/Point-Transformer dict of concatenated clouds::

    {"coord": (N, 3) float32, "feat": (N, C) float32, "segment": (N,) int64 (ignore_index = unlabelled),
     "grid_coord": (N, 3) int64, "index": (N,) int64 (row of each point in its own scene),
     "offset": (B,) int64 cumulative point counts}

Sample ``i`` of epoch ``e`` is drawn from ``numpy.random.default_rng([seed, e, i])`` and the shuffle of epoch
``e`` from ``default_rng([seed, e])``, so a run resumed at any epoch sees the same samples as an
uninterrupted one, whatever the number of workers. ``loop`` repeats the training scenes per epoch (official:
10 for S3DIS). A ``batch_hook`` (e.g. the model's ``compute_hierarchy``) runs inside ``collate``, which the
``DataLoader`` calls in its worker processes, so neighbour search is done before the training step asks for
the batch. It sees the whole batch: Mix3D changes the offsets at collate time, so per-sample structures
computed earlier would be wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from retrofpn.data.catalog import SceneRef, list_scenes, load_scene
from retrofpn.data.config import DataConfig
from retrofpn.data.scene import Scene
from retrofpn.data.transforms import train_sample

Batch = dict[str, Any]
BatchHook = Callable[[Batch], Batch]
POINT_KEYS = ("coord", "feat", "segment", "grid_coord", "index")


class SceneDataset(Dataset):
    """Training samples of the scenes of one split, ``loop`` times per epoch.

    ``scenes`` overrides the catalogue (already loaded scenes, e.g. in tests). With ``cfg.cache`` every scene
    is read once here, before any worker forks, so workers share the arrays copy-on-write.
    """

    def __init__(
        self,
        cfg: DataConfig,
        split: str = "train",
        seed: int = 0,
        scenes: Sequence[Scene] | None = None,
        loop: int | None = None,
    ):
        self.cfg, self.split, self.seed, self.epoch = cfg, split, int(seed), 0
        self.loop = (cfg.loop if split == "train" else 1) if loop is None else loop
        if scenes is not None:
            self.refs = [SceneRef(s.name, s.source) for s in scenes]
            self._scenes: list[Scene] | None = list(scenes)
        else:
            self.refs = list_scenes(cfg, split)
            self._scenes = [load_scene(r, cfg) for r in self.refs] if cfg.cache else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.refs) * self.loop

    def scene(self, i: int) -> Scene:
        j = i % len(self.refs)
        return self._scenes[j] if self._scenes is not None else load_scene(self.refs[j], self.cfg)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        sample = train_sample(self.scene(int(i)), self.cfg, rng)
        sample["key"] = np.array([self.seed, self.epoch, int(i)], dtype=np.int64)
        return sample


class Collate:
    """Concatenate samples and build ``offset``; Mix3D (``mix_prob``) merges clouds 2k and 2k+1 of the batch
    into one, as Pointcept's ``point_collate_fn`` does; then ``batch_hook``. The Mix3D draw is seeded by the
    samples' (seed, epoch, index) keys, so it is reproducible too."""

    def __init__(self, mix_prob: float = 0.0, batch_hook: BatchHook | None = None):
        self.mix_prob, self.batch_hook = mix_prob, batch_hook

    def __call__(self, samples: Sequence[dict[str, Any]]) -> Batch:
        batch: Batch = {}
        for key in POINT_KEYS:
            if key in samples[0]:
                batch[key] = torch.from_numpy(np.concatenate([np.asarray(s[key]) for s in samples]))
        counts = torch.tensor([len(s["coord"]) for s in samples], dtype=torch.int64)
        offset = torch.cumsum(counts, 0)
        if self.mix_prob > 0 and len(samples) > 1:
            keys = [int(v) for s in samples for v in np.asarray(s.get("key", [0]))]
            if np.random.default_rng([7, *keys]).random() < self.mix_prob:
                offset = torch.cat([offset[1:-1:2], offset[-1:]])
        batch["offset"] = offset
        return self.batch_hook(batch) if self.batch_hook is not None else batch


def collate(samples: Sequence[dict[str, Any]]) -> Batch:
    """Concatenate samples into one batch dict with ``offset`` (no Mix3D, no hook)."""
    return Collate()(samples)


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` that depends on (seed, epoch) only (``set_epoch`` before each epoch).

    With ``world_size > 1`` rank r takes every world_size-th index of the permutation, padded by wrapping so
    every rank gets the same count (``DistributedSampler``'s convention)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), shuffle, 0
        self.rank, self.world_size = rank, world_size
        self.per_rank = -(-n // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            if self.shuffle
            else np.arange(self.n)
        )
        order = np.resize(order, self.per_rank * self.world_size)
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def make_loader(
    dataset: SceneDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    workers: int = 0,
    drop_last: bool = True,
    batch_hook: BatchHook | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of ``dataset`` with the seeded epoch shuffle, Mix3D from ``dataset.cfg.mix_prob`` and the
    hook; call ``set_epoch(loader, epoch)`` before iterating each epoch (official: drop_last=True)."""
    sampler = EpochShuffle(len(dataset), dataset.seed, shuffle, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        collate_fn=Collate(dataset.cfg.mix_prob, batch_hook),
        persistent_workers=False,  # a fresh copy of the dataset per epoch carries the new epoch to the workers
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Point the sampler and the dataset of ``loader`` at ``epoch``."""
    loader.dataset.set_epoch(epoch)
    if isinstance(loader.sampler, EpochShuffle):
        loader.sampler.set_epoch(epoch)
