"""The batch's spread within a window: its distribution, its dispersion from the running
samples, and a fit that prices each window's mean step over it (T_obs is request-weighted:
E[B T(k_B, B)] / E[B], not T at the mean batch)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from specwise.estimation.batch_spread import (
    MAX_DISPERSION,
    batch_pmf,
    dispersion_from_samples,
    spread_support,
)
from specwise.estimation.load_window import LoadWindow
from specwise.estimation.step_fit import StepObservation, fit_step_cost
from specwise.policies.schedule import schedule_k_at
from specwise.step_cost import StepCost

#: the peak-hours scenario's engine: flat to a knee of 72 verified tokens, then compute-bound
TRUE = StepCost(base=0.02, per_token=0.0004, knee=72.0, draft_base=0.0035, draft_per_seq=0.0001)


@pytest.mark.parametrize("mean", [0.5, 3.0, 12.0, 48.0])
@pytest.mark.parametrize("dispersion", [0.0, 0.25, 1.0, 3.0])
def test_batch_pmf_has_the_asked_mean_and_variance(mean: float, dispersion: float) -> None:
    p = batch_pmf(mean, dispersion=dispersion, max_batch=400)
    b = np.arange(p.size)
    assert p.sum() == pytest.approx(1.0)
    m = float(b @ p)
    assert m == pytest.approx(mean, rel=1e-3)
    if dispersion >= 0.25 and mean >= 3:
        assert float(((b - m) ** 2) @ p) / m == pytest.approx(dispersion, rel=0.1)


@pytest.mark.parametrize("mean", [2.0, 3.0, 8.0, 48.0])
@pytest.mark.parametrize("dispersion", [0.25, 1.0, 2.0])
def test_busy_support_keeps_the_window_mean(mean: float, dispersion: float) -> None:
    sizes, q = spread_support(mean, dispersion)
    assert sizes.min() >= 1
    assert q.sum() == pytest.approx(1.0)
    assert float(sizes @ q) == pytest.approx(mean, rel=0.02)


@pytest.mark.parametrize(("mean", "dispersion"), [(6.0, 0.0), (6.0, 0.01), (0.8, 1.0)])
def test_no_spread_or_one_request_is_one_point(mean: float, dispersion: float) -> None:
    sizes, q = spread_support(mean, dispersion)
    assert sizes.tolist() == [mean]
    assert q.tolist() == [1.0]


def test_dispersion_from_samples() -> None:
    # two windows: deviations^2 summed 30 over 3 samples at mean 10, 8 over 2 at mean 4
    assert dispersion_from_samples([(30.0, 10.0, 3), (8.0, 4.0, 2)]) == pytest.approx(38 / 38)
    assert dispersion_from_samples([]) == 0.0
    assert dispersion_from_samples([(5.0, 3.0, 0), (math.nan, 3.0, 2)]) == 0.0
    assert dispersion_from_samples([(1e9, 1.0, 1)]) == MAX_DISPERSION


def _window(
    i: int,
    mean: float,
    k: int,
    *,
    dispersion: float,
    schedule: tuple[tuple[int, int, int], ...] | None = None,
    report_spread: bool = True,
) -> StepObservation:
    """One window whose steps spread over batch sizes (dispersion x mean): T_obs is the
    request-weighted mean step, B_obs the step-weighted mean batch."""
    sizes, q = spread_support(mean, dispersion)
    ks = np.array([schedule_k_at(schedule, round(b)) if schedule else k for b in sizes])
    steps = np.array([TRUE.step_time(int(kk), float(b)) for kk, b in zip(ks, sizes, strict=True)])
    t_obs = float((q * sizes * steps).sum() / (q * sizes).sum())
    b_obs = float(sizes @ q)
    dof = 4
    return StepObservation(
        k=k,
        batch=b_obs,
        step_seconds=t_obs,
        weight=1000.0 * b_obs,
        tokens_per_step=None,
        start=60.0 * i,
        end=60.0 * i + 60.0,
        batch_sq_dev=dispersion * b_obs * dof if report_spread else 0.0,
        batch_dof=dof if report_spread else 0,
        schedule=schedule,
    )


def _day(*, report_spread: bool) -> list[StepObservation]:
    means = np.geomspace(3.0, 48.0, 40)
    out = []
    for i, m in enumerate(means):
        for j, k in enumerate((1, 2, 4)):
            out.append(_window(3 * i + j, float(m), k, dispersion=1.0, report_spread=report_spread))
    return out


def test_the_fit_prices_the_spread_and_recovers_the_truth() -> None:
    spread = fit_step_cost(_day(report_spread=True), prior_cost=0.2)
    naive = fit_step_cost(_day(report_spread=False), prior_cost=0.2)
    assert spread is not None
    assert naive is not None
    for k in (0, 1, 2, 4):
        for b in (3.0, 16.0, 30.0, 48.0):
            truth = TRUE.step_time(k, b)
            assert spread.cost.step_time(k, b) == pytest.approx(truth, rel=0.02), (k, b)
    # the same windows read as if every step ran at the mean batch: visibly off somewhere
    worst = max(
        abs(naive.cost.relative(k, b) / TRUE.relative(k, b) - 1.0)
        for k in (1, 2, 4)
        for b in (3.0, 16.0, 30.0, 48.0)
    )
    assert worst > 0.03


def test_schedule_windows_are_priced_band_by_band() -> None:
    sched = ((1, 11, 3), (12, 21, 2), (22, 256, 1))
    obs = [
        _window(i, float(m), schedule_k_at(sched, round(m)), dispersion=1.0, schedule=sched)
        for i, m in enumerate(np.geomspace(3.0, 48.0, 60))
    ] + [_window(100 + i, 3.0, 4, dispersion=1.0) for i in range(20)]
    fit = fit_step_cost(obs, prior_cost=0.2)
    assert fit is not None
    for k in (1, 2, 3):
        for b in (6.0, 16.0, 30.0):
            assert fit.cost.step_time(k, b) == pytest.approx(TRUE.step_time(k, b), rel=0.03)


def test_a_window_mostly_in_a_k0_band_is_left_out() -> None:
    sched = ((1, 20, 2), (21, 256, 0))
    good = [_window(i, float(m), 2, dispersion=1.0) for i, m in enumerate((3.0, 6.0, 12.0))]
    # a window at B 30 of a k = 0 band: its steps would carry the loaded drafter's overhead
    off = _window(10, 30.0, 2, dispersion=1.0, schedule=sched)
    off = StepObservation(**{**off.__dict__, "step_seconds": off.step_seconds * 5})
    with_off = fit_step_cost([*good, off], prior_cost=0.2)
    without = fit_step_cost(good, prior_cost=0.2)
    counted = fit_step_cost(
        [*good, StepObservation(**{**off.__dict__, "schedule": None})], prior_cost=0.2
    )
    assert with_off is not None
    assert without is not None
    assert counted is not None
    assert with_off.cost.step_time(2, 30.0) == pytest.approx(
        without.cost.step_time(2, 30.0), rel=1e-3
    )
    assert counted.cost.step_time(2, 30.0) > 1.5 * without.cost.step_time(2, 30.0)


def test_spread_and_schedule_survive_the_state_file() -> None:
    win = LoadWindow(horizon=3600.0)
    o = _window(0, 12.0, 2, dispersion=1.0, schedule=((1, 11, 3), (12, 256, 2)))
    win.add_observation(o)
    plain = _window(1, 5.0, 0, dispersion=0.5, report_spread=False)
    win.add_observation(plain)
    back = LoadWindow.from_json(win.to_json())
    got = back.observations(now=200.0)
    assert got == [o, plain]
