"""How busy the CPUs are with other programs: the input of `--threads 0` (auto).

A recurrent step is many small operations, each ending in an OpenMP barrier. When another
program keeps a core busy, one of our threads is descheduled at every barrier and the others
wait for it: two threads then run tens of times slower than one. So auto uses only as many
threads as there are CPUs that other programs leave free.

The load is read from /proc/stat (time each CPU spent busy, for every process) minus this
process' own CPU time. Nothing here imports torch, so the CLI can take a first reading before
torch loads and judge the load over the ~1.5 s that loading takes. Where /proc/stat does not
exist (macOS, Windows) every reading is None and auto keeps torch's own count.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
# Columns of a `cpuN` line in /proc/stat that count busy time (user nice system idle iowait
# irq softirq steal ...): everything but idle and iowait. Guest time is already in user.
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
# Foreign load, in CPUs, that auto tolerates before it gives a CPU up: an editor or a shell
# costs a few percent of a core; a second training run costs a whole one.
LOAD_SLACK = 0.25
MIN_WINDOW_S = 0.2  # shorter windows hold too few 10 ms accounting ticks to judge


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU time at one instant: busy time of the CPUs we may use, and our own."""

    wall: float  # time.monotonic() seconds
    busy: float  # CPU-seconds the allowed CPUs spent running anything, since boot
    own: float  # CPU-seconds this process (all its threads) has run
    cpus: int  # how many CPUs `busy` covers


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity), or all of them."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return set(range(os.cpu_count() or 1))


def process_cpu_seconds(pid: int, proc: Path = PROC_STAT.parent) -> float:
    """CPU-seconds process `pid` has run (user + system), 0 when it is gone or unreadable."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()  # the name in parentheses may hold spaces
    try:
        ticks = int(fields[11]) + int(fields[12])  # utime and stime: fields 14 and 15 of stat
    except (IndexError, ValueError):
        return 0.0
    return ticks / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def read_cpu_sample(
    cpus: set[int] | None = None, stat_path: Path = PROC_STAT, partners: tuple[int, ...] = ()
) -> CpuSample | None:
    """The CPU times now, or None where /proc/stat cannot be read. `partners`: processes whose
    CPU time counts as our own (the other ranks of a torchrun job on this machine), so that
    their load is not taken for another program's."""
    cpus = allowed_cpus() if cpus is None else cpus
    try:
        lines = stat_path.read_text().splitlines()
    except OSError:
        return None
    ticks_per_s = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy_ticks, seen = 0, 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        columns = rest.split()
        busy_ticks += sum(int(columns[i]) for i in _BUSY_COLUMNS if i < len(columns))
        seen += 1
    if seen == 0:
        return None
    own = time.process_time() + sum(process_cpu_seconds(pid) for pid in partners)
    return CpuSample(time.monotonic(), busy_ticks / ticks_per_s, own, seen)


def foreign_load(before: CpuSample, after: CpuSample) -> float | None:
    """CPUs other processes kept busy, on average, between two samples (None: too short)."""
    wall = after.wall - before.wall
    if wall < MIN_WINDOW_S or before.cpus != after.cpus:
        return None
    others = (after.busy - before.busy) - (after.own - before.own)
    return min(float(after.cpus), max(0.0, others / wall))


def threads_for_load(ceiling: int, cpus: int, load: float, share: int = 1) -> int:
    """Threads to use when other processes keep `load` of our `cpus` busy: the free CPUs
    (tolerating `LOAD_SLACK`), at least 1 and at most `ceiling` (torch's own count). `share`
    processes of one job split the free CPUs evenly (the ranks of a torchrun job on a machine)."""
    free = math.floor(cpus - load + LOAD_SLACK)
    return max(1, min(ceiling, free // share))
