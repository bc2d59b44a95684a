"""Distributed data-parallel training with PyTorch's own engine (torchrun + torch.distributed).

``torchrun --nproc_per_node=N -m plantpheno train CONFIG`` starts N processes; each finds its rank in
the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT). Backend: NCCL on CUDA,
gloo on CPU. Rank 0 alone writes the run directory, checkpoints, tracker runs and reports.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from plantpheno.errors import ConfigError, PlantPhenoError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (``world_size == 1``: plain single-process training)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T | None:
        """``fn()`` on rank 0 alone (None elsewhere). A refusal there (a :class:`PlantPhenoError`: the data check
        finds leakage, the output folder is not writable) is raised on every rank, so the other ranks end with the
        same one-line message instead of waiting at the next collective call and dying of rank 0's exit."""
        if not self.enabled:
            return fn()
        value, refusal = None, None
        if self.is_main:
            try:
                value = fn()
            except PlantPhenoError as exc:
                refusal = exc
        told = self.broadcast(refusal)
        if told is not None:
            raise (refusal if refusal is not None else told)
        return value

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if not self.enabled:
            return [value]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP does this at the start of each training forward; after the last step of an epoch every rank
        holds statistics from its own batch, so validation (and the checkpoint, which is rank 0's) would
        otherwise mix different normalisations.
        """
        if self.enabled:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over ranks (float64, so counts and sums stay exact)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def any(self, flags: list[bool], device: torch.device) -> list[bool]:
        """Element-wise OR over ranks: one rank's NaN or stop request reaches all of them at the same step."""
        if not self.enabled:
            return flags
        t = torch.tensor([float(f) for f in flags], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]


def local_world_size() -> int:
    """Training processes on this machine (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def from_environment() -> DistContext:
    """The context torchrun describes in the environment, or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                       world_size=world)


def init(ctx: DistContext, device_setting: str, *, timeout_s: float) -> tuple[DistContext, str]:
    """Join the process group; return the context with its backend and the device string for this rank."""
    if not ctx.enabled:
        return ctx, device_setting
    use_cuda = torch.cuda.is_available() and device_setting in ("auto", "cuda")
    if device_setting.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: got {device_setting!r} but CUDA is not available here; use device=cpu")
    backend = "nccl" if use_cuda else "gloo"
    device = f"cuda:{ctx.local_rank}" if use_cuda else "cpu"
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": torch.device(device)} if use_cuda else {}))
    return DistContext(ctx.rank, ctx.local_rank, ctx.world_size, backend), device


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def parameters_digest(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter: equal on all ranks exactly when the replicas are identical."""
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
