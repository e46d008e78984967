"""Training on several processes (GPUs) under torchrun: the process group, ranks and reductions.

    torchrun --nproc-per-node 4 -m export.cli train data/ -o runs/r50 --device cuda --batch-size 64

torchrun starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK (and MASTER_ADDR,
MASTER_PORT) in each. `process_group(device)` reads them, picks the process's device (`cuda:LOCAL_RANK`
for `--device cuda`), starts the process group (NCCL on CUDA, gloo on the CPU) and ends it on exit, error
or not. Without those variables, or with WORLD_SIZE=1, it is a one-process run and starts nothing.
"""

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from aarm.errors import ConfigError

ENV_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in the run: its global rank, its rank on its node, the process count and
    the device it trains on."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when several processes train together (a process group is running)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files, logs and progress."""
        return self.rank == 0


def env_ranks(environ: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's variables; (0, 0, 1) when WORLD_SIZE is unset."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return 0, 0, 1
    missing = [name for name in ENV_VARS if name not in env]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} is not; launch with torchrun")
    try:
        rank, local_rank, world_size = (int(env[name]) for name in ENV_VARS)
    except ValueError:
        values = ", ".join(f"{name}={env[name]!r}" for name in ENV_VARS)
        raise ConfigError(f"torchrun's variables must be integers, got {values}") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(f"inconsistent RANK={rank}, LOCAL_RANK={local_rank}, WORLD_SIZE={world_size}")
    return rank, local_rank, world_size


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Rank 0, or a one-process run; readable before and without a process group (for the CLI's prints)."""
    return env_ranks(environ)[0] == 0


def training_device(requested: str, local_rank: int, world_size: int) -> torch.device:
    """The device this process trains on. One process: `requested` as given. Several: `cuda` becomes
    `cuda:LOCAL_RANK` (choose GPUs with CUDA_VISIBLE_DEVICES, not an index); `cpu` stays the CPU."""
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ConfigError(f"unknown device {requested!r}; use cpu, cuda or cuda:N") from None
    if world_size == 1:
        return device
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"training on several processes runs on cpu or cuda, not {requested!r}")
    if device.index is not None:
        raise ConfigError(
            f"`device` {requested} names one GPU for {world_size} processes; give `device` cuda "
            "(each process takes cuda:LOCAL_RANK; choose GPUs with CUDA_VISIBLE_DEVICES)"
        )
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
            "start at most that many processes per node"
        )
    return torch.device("cuda", local_rank)


@contextmanager
def process_group(device: str, environ: Mapping[str, str] | None = None) -> Iterator[Distributed]:
    """Yield this process's `Distributed`; with WORLD_SIZE > 1 start the process group (NCCL for CUDA,
    gloo for the CPU; MASTER_ADDR/MASTER_PORT from the environment) and destroy it on exit. A group that
    the caller already started is used as it is and left running."""
    rank, local_rank, world_size = env_ranks(environ)
    here = Distributed(rank, local_rank, world_size, training_device(device, local_rank, world_size))
    if world_size == 1:
        yield here
        return
    if dist.is_initialized():
        if (dist.get_rank(), dist.get_world_size()) != (rank, world_size):
            raise ConfigError(
                f"a process group is running as rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but RANK={rank} and WORLD_SIZE={world_size}"
            )
        yield here
        return
    if here.device.type == "cuda":
        torch.cuda.set_device(here.device)
    dist.init_process_group("nccl" if here.device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
    try:
        yield here
    finally:
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], ctx: Distributed) -> list[float]:
    """Element-wise sums of `values` over all processes (float64 on the process's device); as given on one."""
    if not ctx.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def barrier(ctx: Distributed) -> None:
    """Wait until every process gets here (nothing on one process)."""
    if ctx.enabled:
        dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
