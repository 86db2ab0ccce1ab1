"""shared.distributed: single-process fallbacks, and 2 gloo processes on CPU started with torchrun's env vars.

The two-process run checks that one DDP SGD step on two half-batches equals one single-process step on the
concatenated global batch, that ``all_gather_cat`` handles uneven lengths and that ``gather_in_order`` undoes
``DistributedSampler``'s shuffling and padding.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from shared.distributed import (
    DistInfo,
    all_gather_cat,
    all_gather_object,
    all_reduce_mean,
    barrier,
    cleanup_distributed,
    gather_in_order,
    init_distributed,
    make_sampler,
    unwrap_model,
    wrap_model,
)
from tests.shared._ddp_worker import LR, global_batch, make_model

REPO = Path(__file__).resolve().parents[2]
WORLD = 2

# -------------------------------------------------------------------------------- single-process fallbacks


def test_single_process_fallbacks(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert info.is_main and not info.distributed
    model = nn.Linear(2, 2)
    assert wrap_model(model, info) is model and unwrap_model(model) is model
    assert make_sampler(list(range(5)), info, shuffle=True) is None
    t = torch.arange(4.0)
    assert all_reduce_mean(t) is t and all_gather_cat(t) is t
    assert all_gather_object({"a": 1}) == [{"a": 1}]
    barrier()
    cleanup_distributed()
    assert not DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu")).is_main
    assert DistInfo(rank=1, world_size=2, local_rank=1, device=torch.device("cpu")).distributed


def test_gather_in_order_single_process_scatters_by_index():
    values = torch.tensor([[30.0], [10.0], [20.0], [0.0], [10.0]])
    indices = torch.tensor([3, 1, 2, 0, 1])  # index 1 twice, as DistributedSampler padding repeats samples
    out = gather_in_order(values, indices, total=4)
    assert torch.equal(out, torch.tensor([[0.0], [10.0], [20.0], [30.0]]))
    with pytest.raises(RuntimeError, match="1 of 4 samples missing"):
        gather_in_order(values[:3], indices[:3], total=4)


# ------------------------------------------------------------------------------------ two gloo processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path) -> list[subprocess.CompletedProcess]:
    """Start WORLD ranks with the environment torchrun would give them; kill all if one hangs."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = [sys.executable, "-m", "tests.shared._ddp_worker", str(out)]
        procs.append(
            subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        )
    done = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=180)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout.decode(errors="replace")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return done


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    for _attempt in range(2):  # a second try only if the free port was taken in between
        done = _launch(out)
        if all(p.returncode == 0 for p in done):
            return out
        log = "\n".join(p.stdout for p in done)
        if "address already in use" not in log.lower():
            break
    pytest.fail(f"distributed workers failed:\n{log}")


def _results(out: Path) -> list[dict]:
    return [json.loads((out / f"result{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.distributed
def test_ddp_step_equals_single_process_step_on_global_batch(two_process_run):
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    x, y = global_batch()
    nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    for r in range(WORLD):
        state = torch.load(two_process_run / f"state{r}.pt")
        for k, v in model.state_dict().items():
            torch.testing.assert_close(state[k], v, rtol=0, atol=1e-12)
            assert not torch.equal(state[k], before[k])  # the step did move every parameter


@pytest.mark.distributed
def test_dist_info_wrapping_and_all_reduce(two_process_run):
    for r, res in enumerate(_results(two_process_run)):
        assert res["rank"] == r and res["local_rank"] == r and res["world"] == WORLD and res["distributed"]
        assert res["initialized_after_cleanup"] is False
        assert res["is_main"] == (r == 0)
        assert res["is_ddp"] and res["unwrapped"] and res["sampler"] == "DistributedSampler"
        assert res["mean"] == pytest.approx(1.5)
        assert res["flag_seen_after_barrier"]
        assert res["objects"] == [{"rank": 0, "name": "r0"}, {"rank": 1, "name": "r1"}]


@pytest.mark.distributed
def test_all_gather_cat_uneven_and_gather_in_order_with_padding(two_process_run):
    results = _results(two_process_run)
    expected = [[0.0] * 3] * 2 + [[1.0] * 3] * 3
    shards = [res["shard"] for res in results]
    assert all(len(s) == 4 for s in shards)  # 7 samples padded to 8
    assert sorted(set(shards[0] + shards[1])) == list(range(7))
    assert shards[0] + shards[1] != sorted(shards[0] + shards[1])  # shuffled, so order really is restored
    for res in results:
        assert res["gathered"] == expected
        assert res["ordered"] == [10.0 * i for i in range(7)]
