"""Data-parallel training under torchrun: one process per GPU (or CPU process, gloo).

Gradients are averaged across ranks after every backward, with one flattened all-reduce,
which is DDP's arithmetic; the model is not wrapped in DistributedDataParallel because an
EB-JDAT iteration runs several forwards per backward and input-only gradients (sampler,
attack), which DDP's reducer does not expect. Each rank owns a replay-buffer shard and
its own random streams (seed + 1000 * rank); rank 0 logs and writes checkpoints, which
hold every rank's buffer shard.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun launched us."""
    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU (LOCAL_RANK) when training on CUDA."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_model(model: nn.Module) -> None:
    """Every rank starts from rank 0's weights and buffers."""
    if _active():
        for t in model.state_dict().values():
            dist.broadcast(t, 0)


def average_gradients(model: nn.Module) -> None:
    """grad <- mean over ranks, for every parameter with a gradient (one all-reduce)."""
    if not _active():
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, avg in zip(grads, _unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


def gather_states(state: dict) -> list[dict]:
    """Every rank's ``state`` (buffer shard, random streams), gathered on every rank."""
    if not _active():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def my_state(states: list[dict], rank: int) -> dict:
    if rank >= len(states):
        raise ValueError(f"the checkpoint holds {len(states)} rank state(s); this is rank "
                         f"{rank}: resume with the same number of processes")
    return states[rank]


def is_main() -> bool:
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()
