"""shared.seeding: python, numpy, torch and data-loader workers."""

# ruff: noqa: NPY002  (the global numpy RNG is what seeding and checkpoints must cover)

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from shared.seeding import make_generator, seed_everything, seed_worker


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_seed_everything_repeats_python_numpy_torch():
    assert seed_everything(7) == 7
    a = _draws()
    seed_everything(7)
    b = _draws()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    # each generator is seeded with seed + rank
    assert seed_everything(7, rank=2) == 9
    c = _draws()
    assert c[0] == random.Random(9).random()
    assert c[1] == np.random.RandomState(9).rand()
    assert torch.equal(c[2], torch.rand(3, generator=torch.Generator().manual_seed(9)))
    assert c[0] != a[0] and not torch.equal(c[2], a[2])


def test_seed_everything_deterministic_flag():
    prev = torch.are_deterministic_algorithms_enabled()
    prev_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        seed_everything(0, deterministic=False)
        assert torch.are_deterministic_algorithms_enabled() == prev
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", prev_env)
    finally:
        torch.use_deterministic_algorithms(prev)
        torch.backends.cudnn.deterministic = False
        if prev_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def test_seed_worker_derives_numpy_and_python_from_torch_seed():
    torch.manual_seed(123456789012)
    seed_worker(0)
    expected = 123456789012 % 2**32
    assert np.random.rand() == np.random.RandomState(expected).rand()
    assert random.random() == random.Random(expected).random()


class _RandomItems(Dataset):
    """Every item is drawn from the worker's global python/numpy/torch RNGs."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(
            [i, random.random(), np.random.rand(), torch.rand(()).item()], dtype=torch.float64
        )


def _epoch(seed: int) -> torch.Tensor:
    loader = DataLoader(
        _RandomItems(),
        batch_size=2,
        shuffle=True,
        num_workers=2,
        worker_init_fn=seed_worker,
        generator=make_generator(seed),
        multiprocessing_context="fork",
    )
    return torch.cat(list(loader))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_dataloader_workers_reproducible_per_seed_and_distinct_per_worker():
    torch.manual_seed(0)  # the global RNG must not matter: the generator decides
    a = _epoch(seed=5)
    torch.manual_seed(99)
    np.random.seed(99)
    b = _epoch(seed=5)
    assert torch.equal(a, b)
    c = _epoch(seed=6)
    assert not torch.equal(a, c)
    # batches alternate between the two workers; they must not replay the same python/numpy stream
    # (the classic forked-worker bug)
    batches = a.view(4, 2, 4)
    w0, w1 = batches[0::2].reshape(-1, 4), batches[1::2].reshape(-1, 4)
    assert not torch.equal(w0[:, 1], w1[:, 1])
    assert not torch.equal(w0[:, 2], w1[:, 2])
    assert sorted(a[:, 0].long().tolist()) == list(range(8))


def test_make_generator_depends_on_seed_only():
    torch.manual_seed(0)
    p1 = torch.randperm(20, generator=make_generator(3))
    state = torch.get_rng_state()
    torch.manual_seed(1)
    p2 = torch.randperm(20, generator=make_generator(3))
    assert torch.equal(p1, p2)
    assert not torch.equal(p1, torch.randperm(20, generator=make_generator(4)))
    torch.set_rng_state(state)
    before = torch.get_rng_state()
    torch.randperm(20, generator=make_generator(3))
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched
