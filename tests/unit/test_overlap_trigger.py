"""When a lane's extra receivers poll: only while receives come back full, wait on the network rather
than on the process's CPU, and the machine has idle CPU; with hysteresis, on injected clocks."""

from __future__ import annotations

from pathlib import Path

from cloudjobs.runtimes.overlap import (
    START_AFTER,
    IdleCpu,
    OverlapTrigger,
    read_proc_stat,
)


class _Stat:
    """A machine's CPU ticks since boot, advanced by hand: (idle, total)."""

    def __init__(self) -> None:
        self.idle = 1000
        self.total = 4000
        self.reads = 0
        self.readable = True

    def busy(self, share_idle: float, ticks: int = 200) -> None:
        self.idle += round(ticks * share_idle)
        self.total += ticks

    def read(self) -> tuple[int, int] | None:
        self.reads += 1
        return (self.idle, self.total) if self.readable else None


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _idle(stat: _Stat, clock: _Clock, share: float) -> IdleCpu:
    """An IdleCpu that has seen one interval of ``share`` idle."""
    idle = IdleCpu(stat.read, clock)
    stat.busy(share)
    clock.now += 1
    assert idle.share() == share
    return idle


def _trigger(idle: IdleCpu | None = None) -> OverlapTrigger:
    if idle is None:
        stat = _Stat()
        stat.readable = False
        idle = IdleCpu(stat.read, _Clock())
    return OverlapTrigger(10, idle=idle, cpu=lambda: 0.0, clock=lambda: 0.0)


# -- the machine's idle CPU ------------------------------------------------------------------------


def test_the_idle_share_is_read_from_the_aggregate_cpu_line(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n")
    assert read_proc_stat(str(stat)) == (845, 1000)
    assert read_proc_stat(str(tmp_path / "missing")) is None
    stat.write_text("intr 1 2 3\n")
    assert read_proc_stat(str(stat)) is None


def test_the_idle_share_is_sampled_at_most_every_half_second() -> None:
    stat, clock = _Stat(), _Clock()
    idle = IdleCpu(stat.read, clock)
    assert idle.share() is None  # one read: no interval yet
    stat.busy(0.5)
    clock.now += 0.5
    assert idle.share() == 0.5
    reads = stat.reads
    stat.busy(0.0)
    clock.now += 0.2
    assert idle.share() == 0.5  # too soon: the last share, no read
    assert stat.reads == reads
    clock.now += 0.3
    assert idle.share() == 0.0


def test_without_proc_stat_there_is_no_idle_share() -> None:
    stat, clock = _Stat(), _Clock()
    stat.readable = False
    idle = IdleCpu(stat.read, clock)
    clock.now += 1
    assert not idle.available
    assert idle.share() is None
    assert stat.reads == 1  # never read again


# -- the trigger -----------------------------------------------------------------------------------


def test_full_receives_that_wait_on_the_network_on_a_machine_with_idle_cpu_start_the_extra_polls() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.6))
    for _ in range(START_AFTER - 1):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
        assert not trigger.on.is_set()  # one receive is not a trend
    trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()


def test_receives_are_timed_against_the_whole_process_cpu() -> None:
    """12 ms of wall time during which the process computed 11 ms (its other threads held the GIL)
    is not a network wait, however idle the receiving thread was."""
    wall, cpu = [0.0], [0.0]
    trigger = OverlapTrigger(
        10, idle=_idle(_Stat(), _Clock(), 0.6), cpu=lambda: cpu[0], clock=lambda: wall[0]
    )
    for _ in range(5):
        start = trigger.started()
        wall[0] += 0.012
        cpu[0] += 0.011
        trigger.finished(start, 10)
    assert not trigger.on.is_set()

    for _ in range(START_AFTER):
        start = trigger.started()
        wall[0] += 0.012
        cpu[0] += 0.002
        trigger.finished(start, 10)
    assert trigger.on.is_set()


def test_a_machine_without_idle_cpu_never_starts_the_extra_polls() -> None:
    """On a busy machine a round trip that waited for a CPU looks like one that waited on the network:
    the idle share tells them apart."""
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.05))
    for _ in range(10):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert not trigger.on.is_set()


def test_receives_that_answer_at_once_never_start_the_extra_polls() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.9))
    for _ in range(10):
        trigger.observe(waited=0.001, cpu=0.0005, full=True)
    assert not trigger.on.is_set()


def test_partial_batches_never_start_the_extra_polls_and_one_stops_them() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.6))
    for _ in range(10):
        trigger.observe(waited=0.010, cpu=0.001, full=False)
    assert not trigger.on.is_set()

    for _ in range(START_AFTER):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()
    trigger.observe(waited=0.010, cpu=0.001, full=False)
    assert not trigger.on.is_set()


def test_a_partial_batch_breaks_the_streak() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.6))
    for _ in range(5):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
        trigger.observe(waited=0.010, cpu=0.001, full=False)
    assert not trigger.on.is_set()


def test_the_idle_share_has_hysteresis() -> None:
    stat, clock = _Stat(), _Clock()
    trigger = _trigger(_idle(stat, clock, 0.25))  # between the stopping and the starting share
    for _ in range(5):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert not trigger.on.is_set()  # not enough to start

    stat.busy(0.4)
    clock.now += 1
    for _ in range(START_AFTER):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()

    stat.busy(0.25)  # the extra polls take some of the idle CPU: not enough to stop them
    clock.now += 1
    for _ in range(5):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()

    stat.busy(0.1)  # the machine got busy
    clock.now += 1
    trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert not trigger.on.is_set()


def test_the_network_wait_has_hysteresis() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.6))
    for _ in range(5):
        trigger.observe(waited=0.003, cpu=0.001, full=True)
    assert not trigger.on.is_set()  # 3 ms is not enough to start

    for _ in range(START_AFTER):
        trigger.observe(waited=0.005, cpu=0.001, full=True)
    assert trigger.on.is_set()
    trigger.observe(waited=0.003, cpu=0.001, full=True)
    assert trigger.on.is_set()  # nor to stop
    trigger.observe(waited=0.003, cpu=0.030, full=True)
    assert not trigger.on.is_set()  # the process computed through 90 % of the round trip
    for _ in range(START_AFTER):
        trigger.observe(waited=0.005, cpu=0.001, full=True)
    assert trigger.on.is_set()
    trigger.observe(waited=0.001, cpu=0.0, full=True)
    assert not trigger.on.is_set()


def test_the_process_share_of_a_receive_has_hysteresis() -> None:
    trigger = _trigger(_idle(_Stat(), _Clock(), 0.6))
    for _ in range(5):
        trigger.observe(waited=0.005, cpu=0.020, full=True)
    assert not trigger.on.is_set()  # the process computed through 80 % of the round trip

    for _ in range(START_AFTER):
        trigger.observe(waited=0.010, cpu=0.010, full=True)
    assert trigger.on.is_set()
    trigger.observe(waited=0.005, cpu=0.020, full=True)
    assert trigger.on.is_set()  # 80 % does not stop them either
    trigger.observe(waited=0.005, cpu=0.050, full=True)
    assert not trigger.on.is_set()


def test_without_proc_stat_the_network_wait_decides_alone() -> None:
    trigger = _trigger()
    for _ in range(START_AFTER):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()
    trigger.observe(waited=0.001, cpu=0.001, full=True)
    assert not trigger.on.is_set()


def test_no_start_before_the_machine_has_been_sampled_over_an_interval() -> None:
    trigger = _trigger(IdleCpu(_Stat().read, _Clock()))
    for _ in range(5):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert not trigger.on.is_set()


def test_a_failed_receive_stops_the_extra_polls() -> None:
    trigger = _trigger()
    for _ in range(START_AFTER):
        trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert trigger.on.is_set()
    trigger.failed()
    assert not trigger.on.is_set()
    trigger.observe(waited=0.010, cpu=0.001, full=True)
    assert not trigger.on.is_set()  # the streak starts over
