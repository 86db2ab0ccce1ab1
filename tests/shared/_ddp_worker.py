"""One rank of the two-process gloo check in ``test_distributed.py``.

Launched like torchrun does it (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` in
the environment): ``python -m tests.shared._ddp_worker OUT_DIR``. Writes ``state<rank>.pt`` (parameters after
one DDP SGD step) and ``result<rank>.json`` (what the collectives returned).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from shared.distributed import (
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

GLOBAL_BATCH = 8
LR = 0.5


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2)).double()


def global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    y = torch.randn(GLOBAL_BATCH, 2, generator=g, dtype=torch.float64)
    return x, y


def main(out: str) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    r, w = info.rank, info.world_size
    model = make_model()
    ddp = wrap_model(model, info)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR)
    x, y = global_batch()
    per = GLOBAL_BATCH // w
    shard = slice(r * per, (r + 1) * per)  # rank r holds rows [r*per, (r+1)*per) of the global batch
    nn.functional.mse_loss(ddp(x[shard]), y[shard]).backward()
    opt.step()

    # uneven lengths: rank r contributes r + 2 rows filled with r
    gathered = all_gather_cat(torch.full((r + 2, 3), float(r)))
    # 7 samples over 2 ranks: DistributedSampler shuffles and pads each shard to 4
    sampler = make_sampler(list(range(7)), info, shuffle=True, seed=3)
    sampler.set_epoch(1)
    idx = torch.tensor(list(sampler))
    ordered = gather_in_order((idx * 10).double().unsqueeze(1), idx, total=7)
    # rank 1 is late to the barrier; rank 0 must not get past it before rank 1's file exists
    flag = Path(out) / "rank1_reached_barrier"
    if r == 1:
        time.sleep(0.5)
        flag.touch()
    barrier()
    flag_seen = flag.exists()
    result = {
        "flag_seen_after_barrier": flag_seen,
        "objects": all_gather_object({"rank": r, "name": f"r{r}"}),
        "rank": r,
        "world": w,
        "local_rank": info.local_rank,
        "is_main": info.is_main,
        "distributed": info.distributed,
        "is_ddp": isinstance(ddp, DistributedDataParallel),
        "unwrapped": unwrap_model(ddp) is model,
        "sampler": type(sampler).__name__ if isinstance(sampler, DistributedSampler) else None,
        "shard": idx.tolist(),
        "mean": all_reduce_mean(torch.tensor(float(r + 1))).item(),
        "gathered": gathered.tolist(),
        "ordered": ordered.squeeze(1).tolist(),
    }
    torch.save(unwrap_model(ddp).state_dict(), f"{out}/state{r}.pt")
    cleanup_distributed()
    result["initialized_after_cleanup"] = torch.distributed.is_initialized()
    with open(f"{out}/result{r}.json", "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1])
