"""The controller's per-class load bookkeeping (:class:`LoadTracker`): the step-time fit is
redone only when enough new windows arrived, so a tick of many classes stays cheap."""

from __future__ import annotations

import dataclasses

from specwise.collectors.snapshot import CounterDelta
from specwise.controller.load import NO_LATENCY_NOTE, PRIOR_ONLY_NOTE, LoadTracker
from specwise.step_cost import SpecConfig, StepCost

COST = StepCost(base=0.02, per_token=4e-4, knee=64.0, draft_base=0.0015)
SURVIVAL = (0.8, 0.64, 0.512, 0.4096)


def window(i: int, batch: int, k: int, *, latency: bool = True) -> CounterDelta:
    """60 s of decoding at ``batch`` with k drafts (k = 0: a load-only delta)."""
    t = COST.step_time(k, batch)
    steps = 60.0 / t
    r = steps * batch
    tokens = 1.0 + sum(SURVIVAL[:k])
    return CounterDelta(
        labels={"class": "c"},
        start=i * 60.0,
        end=(i + 1) * 60.0,
        drafts=r if k else None,
        draft_tokens=r * k,
        accepted=r * (tokens - 1.0),
        k=k if k else None,
        generation_tokens=r * tokens,
        itl_seconds_sum=r * t if latency else None,
        itl_seconds_count=r if latency else None,
        iteration_steps=steps,
        batch_samples=(float(batch),),
        spec_families=k > 0,
    )


def test_the_fit_is_reused_while_too_little_arrived_and_redone_when_enough_did() -> None:
    tracker = LoadTracker(horizon=86400.0, recent=600.0)
    names = [f"c{i}" for i in range(50)]
    n = 0
    for i in range(200):
        for name in names:
            tracker.add(name, window(i, (2, 8, 32, 48)[i % 4], 4 if i % 2 else 0), 4)
        n = i
    now = (n + 1) * 60.0

    def tick() -> None:
        for name in names:
            ev, note = tracker.evidence(
                name, now, prior_cost=0.05, survival=SURVIVAL, deployed=SpecConfig(4)
            )
            assert ev is not None, note
            assert ev.measured is not None

    tick()
    assert tracker.fits == 50  # one per class
    tick()
    assert tracker.fits == 50  # nothing new: every fit reused
    for name in names:  # one new window among 200: too little to move the fit
        tracker.add(name, window(n + 1, 8, 4), 4)
    tick()
    assert tracker.fits == 50
    for j in range(2, 6):  # 5 new windows (> 2% of 200): refit
        for name in names:
            tracker.add(name, window(n + j, 8, 4), 4)
    tick()
    assert tracker.fits == 100
    ev, _ = tracker.evidence("c0", now, prior_cost=0.05, survival=SURVIVAL, deployed=None)
    assert ev is not None
    assert abs(ev.fit.cost.base - COST.base) < 0.1 * COST.base


def test_without_latency_families_there_is_no_evidence_and_the_note_says_why() -> None:
    tracker = LoadTracker()
    for i in range(10):
        tracker.add("c", window(i, 8, 4, latency=False), 4)
    ev, note = tracker.evidence("c", 600.0, prior_cost=0.05, survival=SURVIVAL, deployed=None)
    assert ev is None
    assert note == NO_LATENCY_NOTE
    batches = tracker.batches("c", 600.0)
    assert batches is not None
    assert batches.quantile(0.5) == 8
    ev, note = tracker.evidence("never", 600.0, prior_cost=0.05, survival=None, deployed=None)
    assert ev is None
    assert note == NO_LATENCY_NOTE


def test_one_k_and_no_plain_window_is_priced_with_the_constant_cost_model() -> None:
    """One k at one batch size: T(0, B) only from the drafter prior adds nothing to the
    preset, so no load evidence; a plain window, or the load moving, brings it."""
    for batch, k in ((8, 0), (32, 4)):
        tracker = LoadTracker()
        for i in range(10):
            tracker.add("c", window(i, 8, 4), 4)
        ev, note = tracker.evidence("c", 600.0, prior_cost=0.05, survival=SURVIVAL, deployed=None)
        assert ev is None
        assert note == PRIOR_ONLY_NOTE
        tracker.add("c", window(10, batch, k), k)  # a replica without speculation, or B x 4
        ev, note = tracker.evidence("c", 660.0, prior_cost=0.05, survival=SURVIVAL, deployed=None)
        assert ev is not None
        assert note == ""


def test_under_a_schedule_a_window_counts_in_its_band_and_straddling_ones_only_for_batches() -> (
    None
):
    schedule = SpecConfig(4, ((1, 16, 4), (17, 256, 0)))
    tracker = LoadTracker()
    tracker.add("c", window(0, 8, 4), 4, deployed=schedule)  # in the k = 4 band
    straddling = dataclasses.replace(window(1, 8, 4), batch_samples=(8.0, 30.0, 8.0, 30.0))
    tracker.add("c", straddling, 4, deployed=schedule)
    tracker.add("c", window(2, 48, 4), 4, deployed=schedule)  # a k = 0 band, drafter loaded
    tracker.add("c", window(3, 8, 4), 4, deployed=SpecConfig(0))  # off through a schedule
    obs = tracker._classes["c"].window.observations(300.0)
    assert [o.k for o in obs] == [4]  # only the clean one gives a step observation
    batches = tracker.batches("c", 300.0)
    assert batches is not None
    assert set(batches.sizes) == {8, 30, 48}  # every window still gives its batch sizes


def test_one_k_over_a_narrow_load_range_is_priced_with_the_conditioned_fit() -> None:
    """One k at batch sizes 24-29 (a load hovering past the compute knee): the step time's
    growth over B is measured, so the class is priced with the load (T(0, B) inferred through
    the preset c, draws conditioned on it), not with the constant-cost model that would
    raise k into the knee. Where the knee lies below the range is not identified (base and
    knee trade off), and the interval says so."""
    truth = dataclasses.replace(COST, draft_base=0.001)  # c = 0.05, the preset
    tracker = LoadTracker()
    for i in range(30):
        batch = (24, 25, 26, 27, 28, 29)[i % 6]
        t = truth.step_time(2, batch)
        d = window(i, batch, 2)
        steps = 60.0 / t
        r = steps * batch
        d = dataclasses.replace(
            d, itl_seconds_sum=r * t, itl_seconds_count=r, iteration_steps=steps
        )
        tracker.add("c", d, 2)
    ev, note = tracker.evidence("c", 1800.0, prior_cost=0.05, survival=SURVIVAL, deployed=None)
    assert ev is not None, note
    assert note == ""
    assert ev.fit.plain_source == "prior"
    assert any("conditioned on the preset c = 0.05" in n for n in ev.fit.notes)
    assert ev.measured is not None
    assert ev.measured.basis == "inferred"
    assert ev.measured.low <= ev.measured.value <= ev.measured.high
    # the fit sees the verify past the knee: k = 4 at B = 26 costs far more than the preset says
    assert ev.fit.cost.relative(4, 26.0) > 1.5 * (1.0 + 4 * 0.05)
