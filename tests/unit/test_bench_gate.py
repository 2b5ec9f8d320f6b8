"""The performance gate's judgement, without running a bench: recorded and measured ratios in, verdict out."""

from __future__ import annotations

import pytest

from bench.gate import Check, Contention, Decision, decide, table, verdict

THROUGHPUT, CPU = "per_second", "cpu_per_thousand"


def _ratios(throughput: float = 1.0, cpu: float = 1.0) -> dict[str, float]:
    return {THROUGHPUT: throughput, CPU: cpu}


def _failed(recorded: dict[str, float], measured: dict[str, float]) -> set[str]:
    return {check.gated.key for check in verdict(recorded, measured, 0.30) if not check.is_within_limit}


def test_ratios_equal_to_the_recorded_ones_pass() -> None:
    assert _failed(_ratios(0.9, 0.8), _ratios(0.9, 0.8)) == set()


def test_throughput_may_fall_by_the_margin_but_not_more() -> None:
    assert _failed(_ratios(throughput=1.0), _ratios(throughput=0.70)) == set()
    assert _failed(_ratios(throughput=1.0), _ratios(throughput=0.69)) == {THROUGHPUT}


def test_cpu_per_message_may_rise_by_the_margin_but_not_more() -> None:
    assert _failed(_ratios(cpu=1.0), _ratios(cpu=1.30)) == set()
    assert _failed(_ratios(cpu=1.0), _ratios(cpu=1.31)) == {CPU}


def test_improvements_never_fail() -> None:
    assert _failed(_ratios(1.0, 1.0), _ratios(throughput=5.0, cpu=0.1)) == set()


def test_each_ratio_is_judged_in_its_own_direction() -> None:
    # Higher throughput and lower CPU are better: the mirror-image change fails both.
    assert _failed(_ratios(1.0, 1.0), _ratios(throughput=0.5, cpu=2.0)) == {THROUGHPUT, CPU}


def test_limits_scale_with_the_recorded_ratio() -> None:
    checks = {check.gated.key: check for check in verdict(_ratios(0.5, 2.0), _ratios(0.5, 2.0), 0.30)}
    assert checks[THROUGHPUT].limit == pytest.approx(0.35)
    assert checks[CPU].limit == pytest.approx(2.6)


def test_a_missing_ratio_is_an_error_not_a_pass() -> None:
    with pytest.raises(ValueError, match="measured"):
        verdict(_ratios(), {THROUGHPUT: 1.0}, 0.30)
    with pytest.raises(ValueError, match="recorded"):
        verdict({CPU: 1.0}, _ratios(), 0.30)


def test_a_ratio_that_is_not_positive_is_an_error() -> None:
    with pytest.raises(ValueError, match="not positive"):
        verdict(_ratios(), _ratios(throughput=0.0), 0.30)
    with pytest.raises(ValueError, match="not positive"):
        verdict(_ratios(), _ratios(cpu=float("nan")), 0.30)


@pytest.mark.parametrize("margin", [-0.1, 1.0])
def test_a_margin_outside_zero_to_one_is_refused(margin: float) -> None:
    with pytest.raises(ValueError, match="margin"):
        verdict(_ratios(), _ratios(), margin)


def test_the_table_names_the_regression_and_its_limit() -> None:
    rendered = table(verdict(_ratios(1.0, 1.0), _ratios(throughput=0.5), 0.30), 0.30)
    throughput_row, cpu_row = rendered.splitlines()[2:]
    assert "≥ 0.70" in throughput_row
    assert "REGRESSION: fell by more than 30%" in throughput_row
    assert cpu_row.endswith("| ok |")


def _checks(*, throughput: float = 1.0, cpu: float = 1.0) -> list[Check]:
    return verdict(_ratios(), _ratios(throughput, cpu), 0.30)


def test_a_failure_on_a_quiet_machine_is_measured_again_then_a_regression() -> None:
    assert decide(_checks(throughput=0.5), is_busy=False, is_last_attempt=False) is Decision.RETRY
    assert decide(_checks(throughput=0.5), is_busy=False, is_last_attempt=True) is Decision.REGRESSED


def test_a_failure_on_a_busy_machine_is_measured_again() -> None:
    assert decide(_checks(throughput=0.5), is_busy=True, is_last_attempt=False) is Decision.RETRY


@pytest.mark.parametrize(("throughput", "cpu"), [(0.5, 1.0), (1.0, 2.0)])
def test_a_failure_on_a_machine_busy_to_the_end_is_not_judged(throughput: float, cpu: float) -> None:
    checks = _checks(throughput=throughput, cpu=cpu)
    assert decide(checks, is_busy=True, is_last_attempt=True) is Decision.NOT_JUDGED


def test_a_pass_on_a_busy_machine_is_a_pass() -> None:
    assert decide(_checks(), is_busy=True, is_last_attempt=False) is Decision.PASSED


def test_other_share_is_the_machines_cpu_outside_the_bench_over_all_cpus() -> None:
    contention = Contention(wall_seconds=2.0, bench_cpu_seconds=1.0, machine_cpu_seconds=3.0, cpus=2)
    assert contention.other_share == pytest.approx(0.5)


def test_other_share_is_never_negative() -> None:
    # The two clocks tick at different granularities: the bench may appear to use more than the machine.
    contention = Contention(wall_seconds=2.0, bench_cpu_seconds=1.02, machine_cpu_seconds=1.0, cpus=2)
    assert contention.other_share == 0.0
