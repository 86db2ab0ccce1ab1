"""DistributedDataParallel helpers: init from ``torchrun``'s environment, samplers, gathers, rank-0 guards.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything degrades to a single process, so the
same training script runs alone or under ``torchrun --nproc_per_node N``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler, Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's env vars (gloo on CPU, nccl on CUDA).

    ``device`` is ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: torch.nn.Module, info: DistInfo, **ddp_kwargs) -> torch.nn.Module:
    """Move to the device and wrap in DDP when running with several processes."""
    model = model.to(info.device)
    if not info.distributed:
        return model
    device_ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model inside DDP / DataParallel (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def make_sampler(
    dataset: Dataset, info: DistInfo, shuffle: bool, seed: int = 0, drop_last: bool = False
) -> Sampler | None:
    """A ``DistributedSampler`` when distributed (call ``set_epoch`` each epoch), else ``None``."""
    if not info.distributed:
        return None
    return DistributedSampler(
        dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every rank, which may differ in length along dim 0."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_len = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_len, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)], dim=0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_in_order(values: torch.Tensor, indices: torch.Tensor, total: int) -> torch.Tensor:
    """Gather per-sample results from all ranks back into dataset order.

    ``DistributedSampler`` pads the last shard by repeating samples; scattering by dataset index makes the
    duplicates overwrite themselves, so evaluation sees each sample exactly once.
    """
    all_values = all_gather_cat(values)
    all_indices = all_gather_cat(indices.to(values.device)).long()
    out = torch.empty((total, *values.shape[1:]), dtype=values.dtype, device=values.device)
    seen = torch.zeros(total, dtype=torch.bool, device=values.device)
    out[all_indices] = all_values
    seen[all_indices] = True
    if not bool(seen.all()):
        raise RuntimeError(f"gather_in_order: {int((~seen).sum())} of {total} samples missing")
    return out
