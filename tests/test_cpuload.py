"""Auto threads: the load other programs put on the CPUs, and the thread count chosen for it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charrnn.system.cpuload import (
    LOAD_SLACK,
    CpuSample,
    allowed_cpus,
    foreign_load,
    process_cpu_seconds,
    read_cpu_sample,
    threads_for_load,
)
from charrnn.system.device import CpuThreads, shared_thread_ceiling

STAT = """cpu  400 0 200 9000 10 0 5 0 0 0
cpu0 100 0 50 4500 5 0 2 0 0 0
cpu1 300 0 150 4500 5 0 3 0 0 0
intr 1 2 3
"""


def test_reads_busy_time_of_the_allowed_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(STAT)
    ticks = 100  # USER_HZ on Linux
    both = read_cpu_sample({0, 1}, stat)
    only_cpu1 = read_cpu_sample({1}, stat)
    assert both is not None and only_cpu1 is not None
    assert both.cpus == 2 and only_cpu1.cpus == 1
    # user + nice + system + irq + softirq + steal; idle and iowait are not busy.
    assert both.busy == pytest.approx((152 + 453) / ticks)
    assert only_cpu1.busy == pytest.approx(453 / ticks)


def test_no_proc_stat_means_no_reading(tmp_path: Path) -> None:
    assert read_cpu_sample({0}, tmp_path / "missing") is None
    (tmp_path / "stat").write_text("intr 1 2\n")
    assert read_cpu_sample({0}, tmp_path / "stat") is None


def test_foreign_load_is_busy_time_less_our_own_per_second() -> None:
    before = CpuSample(wall=10.0, busy=100.0, own=5.0, cpus=2)
    # 2 s later: the CPUs ran 3.5 CPU-seconds, 1.5 of them ours -> others kept 1 CPU busy.
    after = CpuSample(wall=12.0, busy=103.5, own=6.5, cpus=2)
    assert foreign_load(before, after) == pytest.approx(1.0)
    too_soon = CpuSample(wall=10.05, busy=100.1, own=5.0, cpus=2)
    assert foreign_load(before, too_soon) is None
    # Accounting ticks can make our own time exceed the CPUs' busy time: never negative.
    assert foreign_load(before, CpuSample(12.0, 101.0, 7.5, 2)) == 0.0


@pytest.mark.parametrize(
    ("ceiling", "cpus", "load", "expected"),
    [
        (2, 2, 0.0, 2),  # idle: all of torch's threads
        (2, 2, LOAD_SLACK - 0.01, 2),  # a shell or an editor: keep them
        (2, 2, 0.5, 1),  # a busy program: give its CPU up
        (2, 2, 1.0, 1),  # another training run
        (2, 2, 2.0, 1),  # everything busy: never fewer than one
        (4, 8, 3.0, 4),  # torch's count stays the ceiling
        (8, 8, 3.0, 5),
    ],
)
def test_threads_for_load(ceiling: int, cpus: int, load: float, expected: int) -> None:
    assert threads_for_load(ceiling, cpus, load) == expected


def test_explicit_threads_stay_exactly_as_asked() -> None:
    with CpuThreads(2) as threads:
        assert not threads.adaptive and threads.count == 2
        assert torch.get_num_threads() == 2
        threads.adjust()
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1  # the count the tests run with is given back


BUSY_LOOP = "import time\nend = time.time() + 30\nwhile time.time() < end:\n    pass\n"


@pytest.mark.skipif(
    read_cpu_sample() is None or len(allowed_cpus()) < 2, reason="needs /proc/stat and 2 CPUs"
)
def test_auto_gives_a_cpu_up_beside_a_real_busy_process() -> None:
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.5)
        since = read_cpu_sample()
        time.sleep(1.0)
        torch.set_num_threads(2)  # as torch's default on a 2-core machine
        with CpuThreads(0, since) as threads:
            assert threads.adaptive and threads.ceiling == 2
            assert threads.count == 1 and torch.get_num_threads() == 1
            time.sleep(1.1)
            threads.tick()  # still busy: still one
            assert torch.get_num_threads() == 1
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(1)


# ----------------------------------------------------------------------------- ranks of torchrun


@pytest.mark.parametrize(
    ("ceiling", "cpus", "load", "share", "expected"),
    [
        (8, 8, 0.0, 2, 4),  # two ranks on an idle 8-core machine: four threads each
        (8, 8, 2.0, 2, 3),  # another program keeps two busy: the six free ones, split
        (16, 16, 0.0, 4, 4),
        (4, 8, 0.0, 1, 4),  # one process: torch's own count stays the ceiling
        (2, 2, 1.0, 2, 1),  # more ranks than free CPUs: never fewer than one
    ],
)
def test_ranks_on_one_machine_split_the_free_cpus(
    ceiling: int, cpus: int, load: float, share: int, expected: int
) -> None:
    assert threads_for_load(ceiling, cpus, load, share) == expected


@pytest.mark.skipif(read_cpu_sample() is None, reason="needs /proc")
def test_the_other_ranks_cpu_time_counts_as_our_own() -> None:
    partner = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])  # a sibling rank, busy
    try:
        time.sleep(0.5)
        alone = read_cpu_sample()
        partner_before = process_cpu_seconds(partner.pid)
        with_partner = read_cpu_sample(partners=(partner.pid,))
        assert alone is not None and with_partner is not None
        assert partner_before > 0.05
        assert with_partner.own - alone.own >= partner_before  # CPU times only grow
    finally:
        partner.kill()
        partner.wait()
    assert process_cpu_seconds(partner.pid) == 0.0  # gone: counts nothing


def test_auto_under_torchrun_takes_its_share_of_the_cpus_not_omp_num_threads() -> None:
    with CpuThreads(0, share=2) as threads:  # torchrun's OMP_NUM_THREADS=1 is what tests run with
        assert threads.ceiling == shared_thread_ceiling(2) == max(1, len(allowed_cpus()) // 2)
        assert torch.get_num_threads() == threads.count <= threads.ceiling
    with CpuThreads(3, share=2) as threads:  # an explicit count stays as asked
        assert threads.count == 3 and not threads.adaptive
    assert torch.get_num_threads() == 1
