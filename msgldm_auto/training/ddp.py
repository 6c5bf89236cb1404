"""Distributed data parallel through `torchrun` (single node or multi-node): rank/world from the environment that
torchrun sets, NCCL on CUDA and gloo elsewhere. Rank 0 writes every file; the others only train."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from msgldm_auto.errors import MSGLDMError


@dataclass(frozen=True)
class DistributedContext:
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


def resolve_device(kind: str, local_rank: int = 0) -> torch.device:
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise MSGLDMError("-device cuda: no CUDA GPU is visible to torch; use -device cpu (or mps on Apple "
                              "silicon)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if kind == "mps":
        if not torch.backends.mps.is_available():
            raise MSGLDMError("-device mps: Apple's MPS backend is not available here; use -device cpu")
        return torch.device("mps")
    if kind == "cpu":
        return torch.device("cpu")
    raise MSGLDMError(f"-device {kind}: choose cpu, cuda or mps")


def init_distributed(device_kind: str) -> DistributedContext:
    """One process: rank 0 of 1. Under torchrun (WORLD_SIZE > 1): join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_kind, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank, device)


def wrap_module(module: torch.nn.Module, context: DistributedContext) -> torch.nn.Module:
    if not context.distributed or not any(p.requires_grad for p in module.parameters()):
        return module
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def shared_max(value: float, context: DistributedContext) -> float:
    """The largest of every rank's `value` (the value itself without DDP)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def barrier(context: DistributedContext) -> None:
    if context.distributed:
        dist.barrier()


def shutdown(context: DistributedContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()
