"""Drift detection on simulated tick streams (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from specwise.collectors.snapshot import CounterDelta
from specwise.errors import ConfigError
from specwise.estimation.drift import DriftConfig, DriftDetector

WINDOW = 600.0
TICK = 30.0


def tick_trials(
    rng: np.random.Generator, alphas: np.ndarray, drafts: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Successes and failures of one tick per alpha: full-length i.i.d. drafts."""
    reached = np.full(len(alphas), drafts, dtype=np.int64)
    successes = np.zeros(len(alphas), dtype=np.int64)
    for _ in range(k):
        reached = rng.binomial(reached, alphas)
        successes += reached
    return successes, drafts - reached


def run(
    det: DriftDetector, alphas: np.ndarray, rng: np.random.Generator, *, drafts: int = 100
) -> list[int]:
    """Feed one stream (alpha per tick); return the tick indices that alarmed."""
    s, f = tick_trials(rng, alphas, drafts, 4)
    alarms = []
    for i in range(len(alphas)):
        st = det.update_trials(
            "c", time=(i + 1) * TICK, successes=float(s[i]), failures=float(f[i])
        )
        if st.alarm:
            alarms.append(i)
    return alarms


@pytest.mark.parametrize(("before", "after"), [(0.7, 0.6), (0.5, 0.6), (0.85, 0.75)])
def test_step_of_01_is_flagged_within_two_windows(before: float, after: float) -> None:
    rng = np.random.default_rng(101)
    change = 200  # ticks of stationary history first (100 minutes)
    limit = int(2 * WINDOW / TICK)
    delays = []
    for _ in range(30):
        det = DriftDetector(DriftConfig(window_seconds=WINDOW))
        alphas = np.where(np.arange(change + 3 * limit) < change, before, after)
        alarms = run(det, alphas, rng)
        late = [a for a in alarms if a >= change]
        assert [a for a in alarms if a < change] == []
        assert late, "the step was never flagged"
        delays.append(late[0] - change + 1)
    assert max(delays) <= limit, f"detection delays in ticks: {delays}"


def test_stationary_streams_rarely_alarm() -> None:
    rng = np.random.default_rng(202)
    ticks = 0
    alarms = 0
    for alpha in (0.3, 0.6, 0.8, 0.9):
        for _ in range(10):
            det = DriftDetector(DriftConfig(window_seconds=WINDOW))
            alarms += len(run(det, np.full(2500, alpha), rng))
            ticks += 2500
    assert alarms / ticks <= 1e-3, f"{alarms} false alarms in {ticks} ticks"


def test_noisy_stationary_stream_is_absorbed_by_the_dispersion() -> None:
    """Per-tick alpha wobbles (a bursty mix) without a trend: no alarms."""
    rng = np.random.default_rng(303)
    alarms = 0
    ticks = 0
    for _ in range(10):
        det = DriftDetector(DriftConfig(window_seconds=WINDOW))
        alphas = np.clip(0.7 + rng.normal(0, 0.04, size=2500), 0, 1)
        alarms += len(run(det, alphas, rng, drafts=400))
        ticks += 2500
    assert alarms / ticks <= 1e-3


def test_alarm_rebaselines_and_reports_the_move() -> None:
    rng = np.random.default_rng(404)
    det = DriftDetector(DriftConfig(window_seconds=WINDOW))
    alphas = np.where(np.arange(400) < 100, 0.8, 0.5)
    s, f = tick_trials(rng, alphas, 200, 4)
    statuses = [
        det.update_trials("c", time=(i + 1) * TICK, successes=float(s[i]), failures=float(f[i]))
        for i in range(400)
    ]
    alarms = [st for st in statuses if st.alarm]
    assert len(alarms) == 1
    first = alarms[0]
    assert first.shift is not None
    assert first.shift < -0.03  # flagged while the recent window is still partly old
    assert "alpha moved from 0.79" in first.reason
    assert first.drifting
    assert not statuses[-1].drifting


def test_update_from_deltas_and_warm_up() -> None:
    det = DriftDetector()
    d = CounterDelta(
        labels={"model_name": "m"},
        start=0,
        end=30,
        drafts=100,
        draft_tokens=200,
        accepted=120,
        accepted_per_position=(70, 50),
        k=2,
    )
    st = det.update("m", d)
    assert not st.alarm
    assert "warming up" in st.reason
    no_pos = CounterDelta(labels={}, start=30, end=60, drafts=None, draft_tokens=100, accepted=50)
    assert not det.update("m", no_pos).alarm


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="persist_ticks = 0"):
        DriftConfig(persist_ticks=0)
    with pytest.raises(ConfigError, match="min_shift"):
        DriftConfig(min_shift=1.5)
