"""Where the arithmetic runs: device choice, CPU threads (and the CPU quota), autocast.

Every command that computes (train, sample, eval) picks its device and threads here, so none of
them imports the training loop to do so.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from charrnn.errors import UsageError
from charrnn.system.cpuload import (
    CpuSample,
    allowed_cpus,
    foreign_load,
    read_cpu_sample,
    threads_for_load,
)


def mps_available() -> bool:
    """True on Apple silicon with a torch that has the MPS backend."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this CPU as Linux lists them; empty where it does not."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_support(
    flags: frozenset[str] | None = None, capability: str | None = None
) -> str | None:
    """The CPU's own bfloat16 instructions that torch's kernels use here ("AMX-BF16" or
    "AVX512-BF16"), or None: bf16 is then converted to and from fp32 around every operation,
    which costs more than it saves. Both the CPU (its flags) and torch (the vector code it
    dispatches to, `torch.backends.cpu.get_cpu_capability()`) must have them."""
    flags = cpu_flags() if flags is None else flags
    capability = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    if not capability.startswith(("AVX512", "AMX")):
        return None
    if "amx_bf16" in flags:
        return "AMX-BF16"
    return "AVX512-BF16" if "avx512_bf16" in flags else None


def select_device(name: str) -> torch.device:
    """The device for `name`; `auto` picks CUDA, then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"--device cuda: no CUDA device is available (this torch build: {torch.__version__})"
        )
    if name == "mps" and not mps_available():
        raise UsageError("--device mps: MPS is not available on this machine")
    return torch.device(name)


def select_sampling_device(name: str) -> torch.device:
    """The device for generating text: as `select_device`, except that `auto` is the CPU.

    Generation runs one small step per character, which is bound by per-operation latency: on a
    GPU every step pays kernel launches and a device-to-host copy of the drawn ids.
    """
    return torch.device("cpu") if name == "auto" else select_device(name)


def cgroup_cpu_limit(cpu_max: str) -> int | None:
    """Whole CPUs allowed by a cgroup v2 `cpu.max` line ("QUOTA PERIOD"); None if unlimited."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This process' cgroup CPU limit (v2, else v1), or None. Containers (`docker --cpus 2`)
    set one; torch's default thread count ignores it and oversubscribes the CPUs."""
    try:
        return cgroup_cpu_limit((cgroup_root / "cpu.max").read_text())
    except OSError:
        pass
    try:
        quota = (cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (cgroup_root / "cpu" / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return cgroup_cpu_limit(f"{quota} {period}" if quota != "-1" else "max")


def use_cpu_threads(requested: int) -> int:
    """Set torch's CPU threads to `requested`, or for 0 cap the current count at the cgroup CPU
    quota (torch already follows the CPU affinity). Returns the count in use."""
    threads = requested or min(torch.get_num_threads(), cpu_quota() or torch.get_num_threads())
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def shared_thread_ceiling(share: int) -> int:
    """The most threads one of `share` processes of a job on this machine takes: its even share
    of the CPUs it may use (affinity and cgroup quota), at least 1."""
    cpus = len(allowed_cpus())
    return max(1, min(cpus, cpu_quota() or cpus) // share)


class CpuThreads:
    """Torch's CPU thread count for a command: exactly `requested`, or for 0 (auto) as many as
    the CPUs that other processes leave free, re-judged every `interval` seconds.

    `since` is a `read_cpu_sample()` taken earlier (the CLI takes one before torch loads), so the
    first choice is made at once from the load seen since then. Loops call `tick()` often
    (every step, window or character); it costs a clock read except once per interval.

    `share` > 1: this is one of that many ranks of a torchrun job on this machine, whose
    processes are `partners`. Auto then takes this rank's even share of the CPUs, and of the
    CPUs other programs leave free, counting the partners' load as the job's own. (torchrun sets
    OMP_NUM_THREADS=1 for every rank; auto does not follow it, an explicit count does.)
    """

    def __init__(
        self,
        requested: int,
        since: CpuSample | None = None,
        interval: float = 1.0,
        share: int = 1,
        partners: tuple[int, ...] = (),
    ) -> None:
        self.previous = torch.get_num_threads()
        if requested == 0 and share > 1:
            self.ceiling = use_cpu_threads(shared_thread_ceiling(share))
            since = None  # taken before the partners were known: their start-up looks foreign
        else:
            self.ceiling = use_cpu_threads(requested)
        self.share, self.partners = share, partners
        self.adaptive = requested == 0 and self.ceiling > 1
        self.interval = interval
        self.count = self.ceiling
        self.changes = 0  # how often auto changed the count (reported in metrics)
        self._last = self._read() if self.adaptive else None
        self._next = time.monotonic() + interval
        if self.adaptive and since is not None and self._last is not None:
            self._apply(foreign_load(since, self._last))

    def __enter__(self) -> CpuThreads:
        return self

    def __exit__(self, *exc: object) -> None:
        """Give the process back the thread count it had (for library callers)."""
        if torch.get_num_threads() != self.previous:
            torch.set_num_threads(self.previous)

    def tick(self) -> None:
        """Re-judge the thread count when the interval has passed."""
        if self.adaptive and time.monotonic() >= self._next:
            self.adjust()

    def adjust(self) -> None:
        """Read the load since the last reading and set the thread count for it."""
        sample = self._read()
        self._next = time.monotonic() + self.interval
        if sample is None or self._last is None:
            return
        load = foreign_load(self._last, sample)
        if load is not None:
            self._last = sample
            self._apply(load)

    def _read(self) -> CpuSample | None:
        return read_cpu_sample(partners=self.partners)

    def _apply(self, load: float | None) -> None:
        if load is None or self._last is None:
            return
        count = threads_for_load(self.ceiling, self._last.cpus, load, self.share)
        if count != self.count:
            torch.set_num_threads(count)
            self.count = count
            self.changes += 1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for plain fp32."""
    if precision == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
