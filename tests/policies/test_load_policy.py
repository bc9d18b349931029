"""The load-aware policy: single k, batch-size schedule or off, weighted by the batch
distribution, with band-edge margins and the #49548 warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specwise.errors import ConfigError
from specwise.estimation.step_fit import StepCostFit, StepObservation, fit_step_cost
from specwise.policies.load_policy import (
    HOVER_DENSE,
    ConfigRecommendation,
    LoadEvidence,
    _hover,
    _step_times,
    recommend_config,
)
from specwise.policies.schedule import validate_schedule
from specwise.step_cost import (
    BatchDistribution,
    SpecConfig,
    StepCost,
    config_speedup,
    expected_tokens,
)


def fit(cost: StepCost, samples: tuple[StepCost, ...] = ()) -> StepCostFit:
    """A fitted StepCost as estimation.step_fit returns it (the policy reads cost, samples)."""
    return StepCostFit(
        cost=cost,
        samples=samples,
        n_observations=100,
        ks=(0, 4),
        batch_range=(1.0, 128.0),
        plain_observed=True,
        prior_cost=0.05,
    )


#: An EAGLE-style drafter on a target whose step turns compute-bound at 64 tokens.
KNEE = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.001, draft_per_seq=2e-5)
N = 256


def survival(alpha: float, k_max: int = 8, n: int = 64, spread: float = 0.02) -> np.ndarray:
    alphas = np.clip(alpha + spread * np.linspace(-1.5, 1.5, n), 0.0, 0.999)
    return np.asarray([[a**i for i in range(1, k_max + 1)] for a in alphas])


def cost_draws(cost: StepCost, n: int = 40, rel: float = 0.03) -> tuple[StepCost, ...]:
    rng = np.random.default_rng(7)
    return tuple(
        StepCost(
            base=cost.base * (1 + rel * rng.standard_normal()),
            per_token=cost.per_token * abs(1 + rel * rng.standard_normal()),
            knee=cost.knee,
            draft_base=cost.draft_base * abs(1 + rel * rng.standard_normal()),
            draft_per_seq=cost.draft_per_seq,
        )
        for _ in range(n)
    )


def mixture(parts: list[tuple[float, float, float]], top: int = 200) -> BatchDistribution:
    """Time shares of a mixture of Gaussians over batch sizes 1..top: (weight, mean, sd)."""
    sizes = list(range(1, top + 1))
    w = [sum(p / s * math.exp(-0.5 * ((b - m) / s) ** 2) for p, m, s in parts) for b in sizes]
    return BatchDistribution.from_samples(sizes, w)


def run(
    batches: BatchDistribution,
    *,
    cost: StepCost = KNEE,
    alpha: float = 0.75,
    current: SpecConfig | None = None,
    **kw: object,
) -> ConfigRecommendation:
    args: dict[str, object] = {
        "k_max": 8,
        "plateau": 0.01,
        "min_gain": 0.05,
        "current": current,
        "max_batch_size": N,
        "edge_margin": 0.25,
        "off_overhead": 0.14,
        **kw,
    }
    out = recommend_config(
        survival(alpha),
        LoadEvidence(fit(cost, cost_draws(cost)), batches),
        **args,  # type: ignore[arg-type]
    )
    check_valid(out, int(args["max_batch_size"]))  # type: ignore[call-overload]
    return out


def check_valid(out: ConfigRecommendation, n: int) -> None:
    """Every output: a valid schedule covering 1..n, bands that tile it, consistent kind."""
    cfg = out.config
    if out.kind == "schedule":
        assert cfg.schedule is not None
        assert validate_schedule(cfg.schedule, cfg.k) == cfg.schedule
        assert cfg.schedule[-1][1] == n
        assert len({k for _a, _b, k in cfg.schedule}) > 1
        assert cfg.k == max(k for _a, _b, k in cfg.schedule)
    else:
        assert cfg.schedule is None
    assert (cfg.k == 0) == (out.kind == "off")
    assert out.bands[0].start == 1
    assert out.bands[-1].end == n
    for left, right in zip(out.bands, out.bands[1:], strict=False):
        assert right.start == left.end + 1
    assert math.isclose(sum(b.share for b in out.bands), 1.0, rel_tol=1e-6)
    if out.kind != "off":
        assert out.speedup > 1.0
        assert out.low <= out.high
    assert 0.0 <= out.confidence <= 1.0


def test_vectorised_step_times_match_step_cost() -> None:
    sizes = np.arange(1, 300)
    for cost in (KNEE, StepCost.constant(0.1, 0.02), StepCost(0.01, 1e-4, 100, 0, 1e-5, 0)):
        times = _step_times(cost, 6, sizes)
        for k in range(7):
            for b in (1, 7, 64, 65, 150, 299):
                assert times[k, b - 1] == pytest.approx(cost.step_time(k, b), rel=1e-12)


def test_peak_hours_get_a_schedule_with_k_at_night_and_zero_at_peak() -> None:
    day = mixture([(0.7, 6, 2), (0.3, 64, 8)])
    out = run(day, current=SpecConfig(4))
    assert out.kind == "schedule"
    assert out.config.k_at(1) >= 3
    assert out.config.k_at(6) >= 3
    assert out.config.k_at(64) == 0
    assert out.config.k_at(N) == 0
    # it gains at least min_gain over the best single k, priced by step_cost.config_speedup
    single = config_speedup(survival(0.75).mean(axis=0), SpecConfig(out.single_k), day, KNEE)
    assert out.single_speedup == pytest.approx(single, rel=1e-9)
    whole = config_speedup(survival(0.75).mean(axis=0), out.config, day, KNEE)
    assert out.speedup == pytest.approx(whole, rel=1e-9)
    assert out.speedup >= out.single_speedup * 1.05
    assert out.low < out.speedup < out.high
    assert out.current_speedup is not None
    assert out.current_speedup < out.speedup
    assert any("k = 0 band" in w and "#49548" in w for w in out.warnings)
    assert any("dynamic speculative decoding" in w and "data parallel" in w for w in out.warnings)
    assert all(w.count(". ") == 0 and w.endswith(".") for w in out.warnings)  # one sentence each
    assert "+" in out.reason
    assert "best single k" in out.reason
    night = out.bands[0]
    assert night.k > 0
    assert night.share > 0.6
    assert night.speedup > 2.0


def traffic_kind(out: ConfigRecommendation) -> str:
    """The kind of configuration where the traffic runs: guard bands past the largest batch
    size seen (``guard_from``) make the configuration a schedule without changing it there."""
    if out.guard_from is None:
        return out.kind
    ks = {out.config.k_at(b) for b in range(1, out.guard_from)}
    return "single" if len(ks) == 1 else out.kind


def test_flat_load_keeps_a_single_k() -> None:
    flat = mixture([(1.0, 24, 3)])
    out = run(flat)
    assert traffic_kind(out) == "single"
    assert out.single_k > 0
    assert out.config.k == out.single_k
    assert out.speedup == pytest.approx(out.single_speedup)
    assert out.bands[0].k == out.single_k
    assert out.bands[0].share == pytest.approx(1.0, abs=2e-3)
    assert not any("k = 0 band" in w for w in out.warnings)
    # without schedules: the single k alone, one band
    one = run(flat, schedules=False)
    assert one.kind == "single"
    assert one.config == SpecConfig(out.single_k)
    assert len(one.bands) == 1


def test_a_schedule_gaining_less_than_min_gain_is_a_single_k() -> None:
    day = mixture([(0.7, 6, 2), (0.3, 64, 8)])
    loose = run(day, min_gain=0.0)
    assert loose.kind == "schedule"
    gain = loose.speedup / loose.single_speedup - 1.0
    strict = run(day, min_gain=gain + 0.01)
    assert traffic_kind(strict) == "single"
    assert "less than" in strict.reason
    assert loose.confidence >= 0.8


def test_a_schedule_held_back_by_min_gain_does_not_make_the_single_k_unsure() -> None:
    day = mixture([(0.5, 6, 2), (0.5, 40, 4)])
    loose = run(day, min_gain=0.0)
    assert loose.kind == "schedule"
    assert loose.speedup > loose.single_speedup * 1.05  # better by more than the plateau
    out = run(day, min_gain=0.5)
    assert traffic_kind(out) == "single"
    assert out.single_speedup > 1.3
    assert out.confidence >= 0.9
    assert run(day, schedules=False).kind == "single"


def test_a_drafter_losing_everywhere_is_off_by_restart() -> None:
    heavy = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.012, draft_per_seq=1e-4)
    out = run(mixture([(0.5, 4, 2), (0.5, 48, 10)]), cost=heavy, alpha=0.3, current=SpecConfig(4))
    assert out.kind == "off"
    assert out.config == SpecConfig(0)
    assert out.speedup == 1.0
    assert out.single_k == 0
    assert all(s <= 1.0 for s in out.speedups[1:])
    assert [(b.start, b.end, b.k) for b in out.bands] == [(1, N, 0)]
    assert not any("k = 0 band" in w for w in out.warnings)
    assert "restart without a drafter" in out.reason
    assert out.current_speedup is not None
    assert out.current_speedup < 1.0


def test_a_restart_beats_a_k0_band_when_spec_pays_almost_nowhere() -> None:
    # Speculation pays at batch sizes 1-2 only (10% of the busy time); a schedule drafting
    # there and k = 0 elsewhere runs the k = 0 band 14% slow: worse than no drafter at all.
    cost = StepCost(base=0.02, per_token=0.02 / 4, knee=4, draft_base=0.002)
    dist = BatchDistribution((1, 2, 40, 41, 42), (0.05, 0.05, 0.3, 0.3, 0.3))
    out = run(dist, cost=cost, alpha=0.8, min_band_share=0.0)
    assert out.kind == "off"
    curve = survival(0.8).mean(axis=0)
    assert config_speedup(curve, SpecConfig(1), BatchDistribution.single(1), cost) > 1.2
    k0_band = SpecConfig(3, ((1, 2, 3), (3, N, 0)))
    assert config_speedup(curve, k0_band, dist, cost) < 1.0


def test_traffic_hovering_at_an_edge_moves_or_merges_it_with_a_warning() -> None:
    # best k falls to 0 near batch size 12; traffic hovers at 10-14 (prefills move it)
    cost = StepCost(base=0.02, per_token=0.02 / 12, knee=12, draft_base=0.0005)
    hover = BatchDistribution(
        (1, 2, 3, 10, 11, 12, 13, 14, 60), (0.15, 0.15, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1)
    )
    raw = run(hover, cost=cost, edge_margin=0.0, min_gain=0.0)
    assert raw.kind == "schedule"
    raw_edges = [b.start for b in raw.bands[1:]]
    assert any(_hover(e, 0.25, _shares(hover)) > HOVER_DENSE for e in raw_edges)
    out = run(hover, cost=cost, min_gain=0.0)
    edges = [b.start for b in out.bands[1:]]
    assert edges != raw_edges
    assert all(_hover(e, 0.25, _shares(hover)) <= HOVER_DENSE for e in edges)
    flap = [w for w in out.warnings if "flap" in w]
    assert flap
    assert all("#49548" in w and "232 -> 24-157" in w for w in flap)
    assert any("moved the edge" in w or "merged the two bands" in w for w in flap)


def test_the_49548_case_runs_one_k_where_the_traffic_is() -> None:
    # vLLM #49548: [[1,4,2],[5,512,0]] at 8 concurrent requests; running count 3..8
    cost = StepCost(base=0.02, per_token=0.02 / 10, knee=10, draft_base=0.001)
    dist = BatchDistribution((3, 4, 5, 6, 7, 8), (0.1, 0.2, 0.2, 0.2, 0.15, 0.15))
    raw = run(dist, cost=cost, edge_margin=0.0, min_gain=0.0, min_band_share=0.0)
    assert len({raw.config.k_at(b) for b in range(3, 9)}) > 1  # k flaps with the running count
    out = run(dist, cost=cost, min_gain=0.0, min_band_share=0.0)
    assert len({out.config.k_at(b) for b in range(3, 9)}) == 1
    assert any("merged the two bands" in w for w in out.warnings)
    # with the default band share the unvisited bands merge too: one k
    assert traffic_kind(run(dist, cost=cost)) == "single"


def test_small_bands_merge_into_a_neighbour() -> None:
    day = mixture([(0.7, 6, 2), (0.3, 64, 8)])
    out = run(day, min_band_share=0.05)
    assert all(b.share >= 0.05 for b in out.bands) or out.kind != "schedule"
    fine = run(day, min_band_share=0.0, edge_margin=0.0, min_gain=0.0)
    assert len(fine.bands) > len(out.bands)


def test_sizes_above_max_batch_size_are_folded_with_a_warning() -> None:
    out = run(mixture([(1.0, 40, 5)], top=80), max_batch_size=32)
    assert out.bands[-1].end == 32
    assert any("max_batch_size = 32" in w for w in out.warnings)


def test_a_current_k_above_the_priced_positions_is_not_priced() -> None:
    out = run(mixture([(1.0, 8, 2)]), current=SpecConfig(12))
    assert out.current_speedup is None
    assert any("current k = 12" in n for n in out.notes)


def test_bad_arguments_are_one_sentence() -> None:
    with pytest.raises(ConfigError, match=r"edge_margin = -1 must lie in 0\.\.4, e\.g\. 0\.25"):
        run(mixture([(1.0, 8, 2)]), edge_margin=-1)
    with pytest.raises(ConfigError, match=r"max_batch_size = 0 must lie in 1"):
        run(mixture([(1.0, 8, 2)]), max_batch_size=0)
    with pytest.raises(ConfigError, match="at least one position"):
        recommend_config(
            np.zeros((3, 0)),
            LoadEvidence(fit(KNEE), BatchDistribution.single(4)),
            k_max=4,
            plateau=0.01,
            min_gain=0.05,
            current=None,
            max_batch_size=16,
            edge_margin=0.25,
            off_overhead=0.14,
        )


def _shares(dist: BatchDistribution) -> np.ndarray:
    share = np.zeros(N)
    for b, p in zip(dist.sizes, dist.shares, strict=True):
        share[b - 1] += p
    return share


@settings(max_examples=60, deadline=None)
@given(
    alpha=st.floats(0.05, 0.95),
    knee=st.sampled_from([8.0, 32.0, 128.0, math.inf]),
    draft=st.floats(0.0, 0.6),
    per_seq=st.floats(0.0, 2e-4),
    parts=st.lists(
        st.tuples(st.floats(0.05, 1.0), st.floats(1.0, 120.0), st.floats(0.5, 20.0)),
        min_size=1,
        max_size=3,
    ),
    margin=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    min_share=st.sampled_from([0.0, 0.05, 0.2]),
    max_bs=st.sampled_from([16, 64, 256]),
)
def test_every_output_is_a_valid_configuration(
    alpha: float,
    knee: float,
    draft: float,
    per_seq: float,
    parts: list[tuple[float, float, float]],
    margin: float,
    min_share: float,
    max_bs: int,
) -> None:
    cost = StepCost(
        base=0.02, per_token=0.0003, knee=knee, draft_base=0.02 * draft, draft_per_seq=per_seq
    )
    out = run(
        mixture(parts, top=150),
        cost=cost,
        alpha=alpha,
        edge_margin=margin,
        min_band_share=min_share,
        max_batch_size=max_bs,
        current=SpecConfig(3),
    )
    check_valid(out, max_bs)
    # never worse than the best single k or than plain decoding, at the point estimate
    assert out.speedup >= max(1.0, out.single_speedup) - 1e-9
    if out.kind == "schedule" and min_share > 0:  # guard bands carry no traffic
        guard = out.guard_from or max_bs + 1
        assert all(b.share >= min_share - 1e-9 for b in out.bands if b.start < guard)
    if out.kind == "schedule" and margin > 0:  # no edge where the traffic hovers
        share = np.zeros(max_bs)
        for b, p in zip(mixture(parts, top=150).sizes, mixture(parts, top=150).shares, strict=True):
            share[min(b, max_bs) - 1] += p
        assert all(_hover(b.start, margin, share) <= HOVER_DENSE for b in out.bands[1:])


def test_with_a_real_fit_the_schedule_matches_the_ground_truth() -> None:
    """Windows simulated from KNEE at k = 0 and k = 4 over a day of batch sizes, fitted by
    estimation.step_fit: the policy's answer priced on the ground truth is within 2% of the
    answer it gives from the ground truth itself."""
    rng = np.random.default_rng(3)
    curve = list(survival(0.75).mean(axis=0))
    obs = []
    for i in range(240):
        k = (0, 4)[i % 2]
        b = float((2, 4, 6, 8, 12, 24, 48, 64, 80)[(i // 2) % 9]) * float(rng.uniform(0.9, 1.1))
        t = KNEE.step_time(k, b) * (1.0 + 0.02 * float(rng.standard_normal()))
        obs.append(
            StepObservation(k, b, t, 1000.0, expected_tokens(curve, k), 10.0 * i, 10.0 * i + 10)
        )
    fitted = fit_step_cost(obs, prior_cost=0.05)
    assert fitted is not None
    assert len(fitted.samples) > 10
    day = mixture([(0.7, 6, 2), (0.3, 64, 8)])
    args = {
        "k_max": 8,
        "plateau": 0.01,
        "min_gain": 0.05,
        "current": SpecConfig(4),
        "max_batch_size": N,
        "edge_margin": 0.25,
        "off_overhead": 0.14,
    }
    from_fit = recommend_config(survival(0.75), LoadEvidence(fitted, day), **args)  # type: ignore[arg-type]
    truth = recommend_config(survival(0.75), LoadEvidence(fit(KNEE), day), **args)  # type: ignore[arg-type]
    check_valid(from_fit, N)
    assert from_fit.kind == truth.kind == "schedule"
    mean = survival(0.75).mean(axis=0)
    got = config_speedup(mean, from_fit.config, day, KNEE)
    best = config_speedup(mean, truth.config, day, KNEE)
    assert got >= 0.98 * best
    assert from_fit.low < got < from_fit.high  # the interval from the fit's draws covers it


def test_evidence_from_a_known_cost_prices_point_intervals() -> None:
    day = mixture([(0.7, 6, 2), (0.3, 64, 8)])
    load = LoadEvidence.from_cost(KNEE, day)
    assert load.fit.cost == KNEE
    assert load.fit.samples == ()
    out = recommend_config(
        survival(0.75, spread=0.0),
        load,
        k_max=8,
        plateau=0.01,
        min_gain=0.05,
        current=None,
        max_batch_size=N,
        edge_margin=0.25,
        off_overhead=0.14,
    )
    assert out.kind == "schedule"
    assert out.low == pytest.approx(out.speedup)
    assert out.high == pytest.approx(out.speedup)


def test_a_peak_now_reprices_without_turning_off_what_pays_over_the_day() -> None:
    # 23 hours of quiet (B ~ 4, where k pays) and a peak now (B ~ 64, where it loses): the
    # recent load weighs as much as the day, so the peak is answered at once, with a k = 0
    # band, not by turning speculation off (which would lose the quiet hours)
    day = mixture([(0.95, 4, 1), (0.05, 64, 4)])
    peak = mixture([(1.0, 64, 4)])
    args: dict[str, object] = {
        "k_max": 8,
        "plateau": 0.01,
        "min_gain": 0.05,
        "current": SpecConfig(4),
        "max_batch_size": N,
        "edge_margin": 0.25,
        "off_overhead": 0.14,
    }
    evidence = LoadEvidence(fit(KNEE, cost_draws(KNEE)), day, recent_batches=peak)
    out = recommend_config(survival(0.75), evidence, **args)  # type: ignore[arg-type]
    assert out.kind == "schedule"
    assert out.config.k_at(4) >= 3
    assert out.config.k_at(64) == 0
    assert out.confidence >= 0.8
    # speculation that loses over the day too is still turned off
    heavy = StepCost(base=0.02, per_token=0.02 / 64, knee=64, draft_base=0.012, draft_per_seq=1e-4)
    off = recommend_config(
        survival(0.3),
        LoadEvidence(fit(heavy, cost_draws(heavy)), day, recent_batches=peak),
        **args,  # type: ignore[arg-type]
    )
    assert off.kind == "off"
