"""Data-parallel training under torchrun: which rank this process is, the process group, and
the few collectives the training loop needs.

`charrnn train` runs unchanged under PyTorch's own launcher (`torchrun`, that is
`python -m torch.distributed.run`), which starts one process per rank and tells each its rank and
the world's size in environment variables. Without them a process is a world of one whose
collectives return their input, so the training loop has a single code path. Gradients are
averaged by `DistributedDataParallel`; everything else (stopping together, the validation score,
the per-rank resume state) goes through `World`, which turns a failed collective into one line
naming the rank that went away.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from charrnn.errors import TrainingError, UsageError

# How long the survivors of a failed collective wait for each other to check in (seconds): long
# enough for a rank that saw the failure a moment later, short enough to end the job promptly.
CHECK_IN_S = 5.0
_ALIVE_KEY = "charrnn/alive/{rank}"
_LEFT_KEY = "charrnn/left/{rank}"


@dataclass(frozen=True)
class Placement:
    """Where this process stands in the job: its rank among `size`, and on its own machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the checkpoints, config.json, metrics and messages for the job."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def placement_from_env(env: Mapping[str, str] = os.environ) -> Placement:
    """This process' placement from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    LOCAL_WORLD_SIZE); a world of one without them."""
    if "WORLD_SIZE" not in env or "RANK" not in env:
        return Placement()
    try:
        size, rank = int(env["WORLD_SIZE"]), int(env["RANK"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_size = int(env.get("LOCAL_WORLD_SIZE", size))
    except ValueError:
        raise UsageError(
            "WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers "
            f"(got {env.get('WORLD_SIZE')!r}, {env.get('RANK')!r}, ...)"
        ) from None
    if not (0 <= rank < size and 0 <= local_rank < local_size <= size):
        raise UsageError(f"RANK {rank} does not fit WORLD_SIZE {size}")
    return Placement(rank, size, local_rank, local_size)


def check_batch_split(batch_size: int, placement: Placement) -> None:
    """Raise `UsageError` unless the global batch of streams splits evenly among the ranks."""
    if batch_size % placement.size:
        raise UsageError(
            f"--batch-size {batch_size} cannot be split evenly among {placement.size} processes; "
            f"use a multiple of {placement.size} (it is the number of streams of the whole job)"
        )


def check_resume_world(run_dir: object, saved_size: int, placement: Placement) -> None:
    """Raise `UsageError` when a run saved by `saved_size` processes is resumed by another count:
    the streams, hidden states and random-number states belong to the ranks that saved them."""
    if saved_size != placement.size:
        how = "one process (no torchrun)" if saved_size == 1 else f"{saved_size} processes"
        raise UsageError(
            f"the run in {run_dir} was trained by {how}; resume it with the same count "
            f"(this is {placement.size})"
        )


def rank_device(device: torch.device, placement: Placement) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) on CUDA, else `device` unchanged."""
    if not placement.distributed:
        return device
    if device.type == "mps":
        raise UsageError(
            "data-parallel training runs on CPUs (gloo) or CUDA GPUs (nccl), not on MPS; "
            "use --device cpu under torchrun"
        )
    if device.type != "cuda":
        return device
    if placement.local_rank >= torch.cuda.device_count():
        raise UsageError(
            f"rank {placement.rank} wants GPU {placement.local_rank} but this machine has "
            f"{torch.cuda.device_count()}; start at most that many processes per node"
        )
    torch.cuda.set_device(placement.local_rank)
    return torch.device("cuda", placement.local_rank)


class World:
    """The ranks of one training job and its collectives; a world of one does no communication.

    Every collective fails as a `TrainingError` naming the rank(s) that stopped answering, after
    the process group's timeout at the latest, so a dead rank cannot hang the others forever.
    """

    def __init__(self, placement: Placement = Placement(), device: torch.device | None = None):
        self.placement = placement
        self.device = device or torch.device("cpu")
        self.sibling_pids: tuple[int, ...] = ()  # the other ranks on this machine

    @property
    def rank(self) -> int:
        return self.placement.rank

    @property
    def size(self) -> int:
        return self.placement.size

    @property
    def is_writer(self) -> bool:
        return self.placement.is_writer

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train: `model` itself, or wrapped in DistributedDataParallel."""
        if not self.placement.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        with self.collective("starting data-parallel training"):
            return DistributedDataParallel(model, device_ids=ids)

    def max_of(self, values: list[float]) -> list[float]:
        """The element-wise maximum of `values` over all ranks."""
        return self._all_reduce(values, "max")

    def sum_of(self, values: list[float]) -> list[float]:
        """The element-wise sum of `values` over all ranks."""
        return self._all_reduce(values, "sum")

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable, small), in rank order."""
        if not self.placement.distributed:
            return [value]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        with self.collective("gathering the resume state"):
            dist.all_gather_object(gathered, value)
        return gathered

    def _all_reduce(self, values: list[float], op: str) -> list[float]:
        if not self.placement.distributed:
            return list(values)
        import torch.distributed as dist

        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        reduce_op = dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM
        with self.collective("exchanging progress"):
            dist.all_reduce(tensor, op=reduce_op)
        return tensor.tolist()

    @contextlib.contextmanager
    def collective(self, doing: str) -> Iterator[None]:
        """Turn a failed collective (a rank died, hung past the timeout or lost its network)
        inside the block into a `TrainingError` naming the ranks that are gone."""
        if not self.placement.distributed:
            yield
            return
        import torch.distributed as dist

        try:
            yield
        except (RuntimeError, dist.DistError) as exc:  # gloo and nccl raise RuntimeError kinds
            if not _is_communication_failure(exc):
                raise
            raise TrainingError(self._lost_message(doing)) from None

    def _lost_message(self, doing: str) -> str:
        missing = self.missing_ranks()
        if not missing:  # every rank checked in: one left on an error of its own, and says so
            return (
                f"lost contact with the other ranks while {doing} (see their messages); "
                "all ranks stop; the last checkpoint is left as it was"
            )
        who = ", ".join(str(r) for r in missing)
        return (
            f"rank {who} of {self.size} stopped answering while {doing} (it died, hung past "
            "--collective-timeout or lost its network); all ranks stop; the last checkpoint is "
            "left as it was"
        )

    def missing_ranks(self, wait: float = CHECK_IN_S) -> list[int]:
        """After a failed collective: the ranks that do not check in within `wait` seconds."""
        return self._check_in(_ALIVE_KEY, wait)

    def leave_together(self) -> None:
        """At the end of a run: wait until every rank has finished (rank 0 after its last save)
        and has returned from that last collective, so that no rank closes its connections while
        another still reads from them. A rank already gone is no error here: the run is over."""
        if not self.placement.distributed:
            return
        import torch.distributed as dist

        ids = [self.device.index] if self.device.type == "cuda" else None
        try:  # within --collective-timeout; a rank that died fails it at once
            dist.barrier(device_ids=ids)
        except (RuntimeError, dist.DistError) as exc:
            if not _is_communication_failure(exc):
                raise
            return
        # A rank leaves the barrier once it has heard from the others, maybe before they have
        # read its own last message: closing now could cut that message off under them.
        self._check_in(_LEFT_KEY, CHECK_IN_S)

    def _check_in(self, key: str, wait: float) -> list[int]:
        """Record through the job's key-value store (the launcher's, which outlives any one rank)
        that this rank got to `key`; the other ranks that do not get there within `wait` s."""
        try:
            from torch.distributed import distributed_c10d

            store = distributed_c10d._get_default_store()
            store.set(key.format(rank=self.rank), "1")
            others = [r for r in range(self.size) if r != self.rank]
            deadline = time.monotonic() + wait
            while True:
                missing = [r for r in others if not store.check([key.format(rank=r)])]
                if not missing or time.monotonic() >= deadline:
                    return missing
                time.sleep(0.05)
        except Exception:  # noqa: BLE001 - the store itself is gone: we cannot tell who
            return []


def _is_communication_failure(exc: BaseException) -> bool:
    """True for errors of the process group (a peer gone, a timeout), not of the arithmetic."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    markers = ("Connection closed", "Connection reset", "Timed out", "timed out", "gloo", "NCCL")
    return any(marker in text for marker in markers)


@contextlib.contextmanager
def joined(placement: Placement, device: torch.device, timeout_s: float) -> Iterator[World]:
    """The `World` of this process: for a distributed placement, join the process group (gloo on
    the CPU, nccl on CUDA; collectives time out after `timeout_s`) and leave it on exit (after
    the other ranks, when the block ends normally)."""
    if not placement.distributed:
        yield World(placement, device)
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        dist.init_process_group(
            backend, rank=placement.rank, world_size=placement.size,
            timeout=timedelta(seconds=timeout_s),
        )  # fmt: skip
    except (RuntimeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrainingError(f"cannot join the other ranks ({first[:200]})") from None
    try:
        world = World(placement, device)
        hosts = world.gather((socket.gethostname(), os.getpid()))
        world.sibling_pids = tuple(
            pid for host, pid in hosts if host == hosts[placement.rank][0] and pid != os.getpid()
        )
        yield world
        world.leave_together()
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
