"""The cost side of the one-shot surfaces (``recommend``, ``report``): windows of a class
whose counters follow a ground-truth T(k, B) give the measured speedup (against plain
windows of the same class), the fitted costs and their disagreement with the preset, the
batch sizes and a configuration; without latency families, the constant-cost model and
the note that says so."""

from __future__ import annotations

import json

import pytest

from specwise.collectors.classes import ClassConfig
from specwise.collectors.snapshot import CounterDelta
from specwise.commands.recommend import recommend_deltas
from specwise.estimation.estimator import EstimatorConfig
from specwise.policies import PolicyConfig
from specwise.policies.speedup_policy import CONSTANT_COST_NOTE
from specwise.reporting.cost import cost_lines, cost_side
from specwise.step_cost import StepCost, expected_tokens

ALPHA = 0.7
#: memory-bound 20 ms, compute-bound past 256 tokens per step, EAGLE-like drafter (c = 0.05)
TRUTH = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.001)


def window(
    batch: float,
    k: int,
    *,
    start: float,
    seconds: float = 600.0,
    cost: StepCost = TRUTH,
    model: str = "chat",
    engine: str = "0",
    latency: bool = True,
) -> CounterDelta:
    """What ``seconds`` of decoding at ``batch`` running requests adds to the counters."""
    t = cost.step_time(k, batch)
    steps = seconds / t
    r = steps * batch
    survival = [ALPHA**i for i in range(1, k + 1)]
    e = expected_tokens(survival, k)
    spec = k > 0
    return CounterDelta(
        labels={"model_name": model, "engine": engine},
        start=start,
        end=start + seconds,
        drafts=r if spec else 0.0,
        draft_tokens=r * k,
        accepted=r * (e - 1.0),
        accepted_per_position=tuple(r * s for s in survival),
        k=k if spec else 0,
        generation_tokens=r * e,
        itl_seconds_sum=r * t if latency else None,
        itl_seconds_count=r if latency else None,
        running_requests=batch,
        iteration_steps=steps if latency else None,
        iteration_tokens=steps * batch * (k + 1) if latency else None,
        batch_samples=(batch,),
        spec_families=spec,
    )


DAY = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 96.0, 128.0, 192.0, 256.0)


def day(k: int = 4, *, plain: bool = True, cost: StepCost = TRUTH) -> list[CounterDelta]:
    """Windows over a day of load: the speculative engine and a plain replica."""
    out = []
    for i, b in enumerate(DAY):
        out.append(window(b, k, start=600.0 * i, cost=cost))
        if plain:
            out.append(window(b, 0, start=600.0 * i, cost=cost, engine="plain"))
    return out


def _classes() -> ClassConfig:
    return ClassConfig()


def test_measured_speedup_against_plain_windows_matches_the_truth() -> None:
    deltas = day()
    side = cost_side(deltas, prior_cost=0.05, survival=[ALPHA**i for i in range(1, 5)])
    assert side.load_aware
    m = side.measured
    assert m is not None
    assert m.basis == "baseline"
    assert m.k == 4
    # the truth: tokens over what plain decoding delivers in the same target time
    spec = [window(b, 4, start=0) for b in DAY]
    truth = sum(d.generation_tokens or 0 for d in spec) / sum(
        (d.itl_seconds_sum or 0) / TRUTH.step_time(0, b) for d, b in zip(spec, DAY, strict=True)
    )
    assert m.value == pytest.approx(truth, rel=0.03)
    assert m.low <= m.value <= m.high
    assert m.predicted == pytest.approx(truth, rel=0.05)
    assert side.batches is not None
    assert side.batches.quantile(0.5) in DAY
    assert side.fit is not None
    assert side.fit.plain_source == "measured"


def test_a_busy_day_gets_k_at_night_and_none_at_peak() -> None:
    """Why k = 4 at night and 0 at peak: the configuration drafts at small batch sizes and
    not at the largest ones; the whole picture is in the JSON block and the lines."""
    windows = day()
    answers = recommend_deltas(
        [window(64.0, 4, start=0.0, seconds=6000.0)],  # the whole day, for alpha
        extra_load=windows,  # its sub-windows, for the cost side
        classes=_classes(),
        estimator=EstimatorConfig(),
        policy_for=lambda name: PolicyConfig(cost=0.05, k_max=8),
        now=6000.0,
    )
    assert len(answers) == 1
    a = answers[0]
    r = a.recommendation
    assert r.config is not None
    assert r.load is not None
    assert r.config.k_at(2) >= 4  # memory-bound: drafts are nearly free
    assert r.config.k_at(256) == 0  # compute-bound: verifying drafts costs more than it gives
    assert r.load.kind == "schedule"
    data = json.loads(json.dumps(a.to_dict()))
    load = data["load"]
    assert load["load_aware"] is True
    assert load["measured"]["basis"] == "baseline"  # the plain replica's windows
    assert load["costs"]["base"] == pytest.approx(0.02, rel=0.1)
    assert load["batch"]["p90"] >= 192
    assert load["recommended"]["kind"] in {"schedule", "single", "off"}
    assert data["configuration"]["k"] == r.config.k
    lines = cost_lines(a.cost_side, r.load)
    text = "\n".join(lines)
    assert "measured speedup at k = 4" in text
    assert "against plain windows of this class" in text
    assert "fitted step: base 20" in text
    assert "batch size: mean" in text


def test_a_drafter_three_times_its_preset_is_named() -> None:
    heavy = StepCost(base=0.02, per_token=0.02 / 256, knee=256, draft_base=0.003)
    deltas = day(cost=heavy)
    side = cost_side(deltas, prior_cost=0.05, survival=[ALPHA**i for i in range(1, 5)])
    assert side.load_aware
    assert any("the drafter costs" in d for d in side.disagreements), side.disagreements
    assert any("disagrees with the preset" in line for line in cost_lines(side))
    costs = side.to_dict()["costs"]
    assert costs["implied_draft_cost"] == pytest.approx(0.15, rel=0.25)


def test_without_latency_families_the_constant_cost_model_says_so() -> None:
    deltas = [window(b, 4, start=600.0 * i, latency=False) for i, b in enumerate(DAY)]
    answers = recommend_deltas(
        deltas,
        classes=_classes(),
        estimator=EstimatorConfig(),
        policy_for=lambda name: PolicyConfig(cost=0.05, k_max=8),
        now=6000.0,
    )
    (a,) = answers
    assert not a.cost_side.load_aware
    assert a.cost_side.note == CONSTANT_COST_NOTE
    assert a.recommendation.load is None
    assert a.recommendation.config is None
    assert CONSTANT_COST_NOTE in a.recommendation.notes
    data = a.to_dict()
    assert data["load"]["load_aware"] is False
    assert data["load"]["note"] == CONSTANT_COST_NOTE
    assert data["configuration"] is None
    assert cost_lines(a.cost_side)[0] == CONSTANT_COST_NOTE


def test_one_window_without_plain_decoding_is_inferred_and_says_so() -> None:
    side = cost_side(
        [window(8.0, 4, start=0.0)], prior_cost=0.05, survival=[ALPHA**i for i in range(1, 5)]
    )
    assert side.load_aware
    assert side.measured is not None
    assert side.measured.basis == "inferred"
    assert any("inferred from the fit" in n for n in side.notes)
    assert "T(0, B) inferred from the fit" in "\n".join(cost_lines(side))
