"""Scenario schedules for the simulated vLLM fleet: what the truth is, class by class, over time.

A scenario gives each workload class a survival curve as a function of time (i.i.d.,
a workload mix, or correlated acceptance), a drafter cost, a load, a starting k and, for
n-gram or suffix drafters, the lengths its drafts really have (often fewer than k). The
simulator samples vLLM's counters from it; the control-quality benchmark scores controllers
against the oracle that knows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from specwise.errors import ConfigError
from specwise.model import (
    mixture_survival,
    speedup_from_survival,
    survival_curve,
    survival_two_state,
)
from specwise.sim.load_truth import LoadRates, batch_pmf, load_rates, plain_rate
from specwise.step_cost import SCHEDULE_OFF_OVERHEAD, SpecConfig, StepCost

__all__ = [
    "EAGLE_ON_BUSY_GPU",
    "HEAVY_DRAFTER",
    "SCENARIOS",
    "ClassScenario",
    "DraftLengthFn",
    "Scenario",
    "SurvivalFn",
    "busy_hour",
    "const",
    "day_shape",
    "get_scenario",
    "iid",
    "linear",
    "mix",
    "ngram_lengths",
    "step",
    "two_state",
]

#: (seconds since the scenario started, k) -> [s_1, ..., s_k]
SurvivalFn = Callable[[float, int], list[float]]
#: k -> [P(a decode step proposes l tokens) for l = 0..k]; l = 0 proposes nothing (a plain
#: step, not a draft: vLLM counts no draft for it)
DraftLengthFn = Callable[[int], list[float]]
Schedule = Callable[[float], float]

HOUR = 3600.0


def linear(start: float, end: float, duration: float) -> Schedule:
    """A value moving linearly from ``start`` to ``end`` over ``duration`` seconds, then held."""

    def value(t: float) -> float:
        f = min(max(t / duration, 0.0), 1.0)
        return start + (end - start) * f

    return value


def step(before: float, after: float, at: float) -> Schedule:
    """``before`` until ``at`` seconds, then ``after`` (an abrupt change)."""
    return lambda t: before if t < at else after


def const(value: float) -> Schedule:
    """The same value at every time."""
    return lambda _t: value


def day_shape(
    night: float,
    peak: float,
    *,
    peaks: Sequence[float] = (11.0, 16.0),
    width: float = 2.5,
    start_hour: float = 0.0,
) -> Schedule:
    """A day of load: ``night`` in the quiet hours, rising to ``peak`` around each hour of
    ``peaks`` (flat-topped bumps about ``width`` hours wide each side, the larger one wins);
    t = 0 is ``start_hour`` o'clock and the day repeats."""

    def value(t: float) -> float:
        hour = (start_hour + t / HOUR) % 24.0
        bump = 0.0
        for p in peaks:
            d = min(abs(hour - p), 24.0 - abs(hour - p))
            bump = max(bump, math.exp(-((d / width) ** 4)))
        return night + (peak - night) * bump

    return value


def busy_hour(
    quiet: float, busy: float, *, start: float, end: float, ramp: float = 300.0
) -> Schedule:
    """``quiet`` outside [start, end] seconds, ``busy`` inside, with linear ramps of ``ramp``."""

    def value(t: float) -> float:
        if t <= start - ramp or t >= end + ramp:
            return quiet
        if t < start:
            return quiet + (busy - quiet) * (t - start + ramp) / ramp
        if t > end:
            return busy + (quiet - busy) * (t - end) / ramp
        return busy

    return value


_DEFAULT_LOAD = const(400.0)


def iid(alpha: Schedule) -> SurvivalFn:
    """Independent acceptance with a time-varying alpha: s_i = alpha(t)^i."""
    return lambda t, k: survival_curve(alpha(t), k)


def mix(weight_first: Schedule, alpha_first: float, alpha_second: float) -> SurvivalFn:
    """A class pooling two workloads (say code and prose) whose share moves over time."""

    def survival(t: float, k: int) -> list[float]:
        w = min(max(weight_first(t), 0.0), 1.0)
        return mixture_survival([w, 1.0 - w], [alpha_first, alpha_second], k)

    return survival


def two_state(alpha_high: float, alpha_low: float, p_hl: float, p_lh: float) -> SurvivalFn:
    """Correlated acceptance: in-phrase and at-boundary states (see model.survival_two_state)."""
    return lambda _t, k: survival_two_state(
        k, alpha_high=alpha_high, alpha_low=alpha_low, p_high_to_low=p_hl, p_low_to_high=p_lh
    )


def ngram_lengths(match: float, longer: float) -> DraftLengthFn:
    """An n-gram (or suffix) proposer: a step finds a match with probability ``match`` and
    then proposes min(M, k) tokens, where the match length M >= 1 goes on past each token
    with probability ``longer``; most drafts are shorter than k, and many steps propose
    nothing (vLLM 0.32 n-gram k = 4: 2,946 drafts in 5,593 steps, 3.82 tokens each)."""
    if not (0.0 <= match <= 1.0 and 0.0 <= longer <= 1.0):
        raise ConfigError(
            f"ngram_lengths(match={match!r}, longer={longer!r}) needs probabilities in [0, 1]",
            field="draft_lengths",
        )

    def pmf(k: int) -> list[float]:
        out = [1.0 - match]
        out += [match * longer ** (n - 1) * (1.0 - longer) for n in range(1, k)]
        out.append(match * longer ** (k - 1) if k >= 1 else 0.0)
        return out

    return pmf


@dataclass(frozen=True)
class ClassScenario:
    """One workload class of the fleet (served as its own ``model_name``).

    ``load`` is the target's plain-decoding throughput per engine in tokens per second (it
    sets how much evidence arrives); ``restart_every`` crashes and restarts each engine
    periodically at the same k (counters reset); ``target_step_seconds`` is one target
    forward, for the inter-token latency histogram. ``draft_lengths`` (None: every step
    drafts k tokens) gives the proposal lengths of n-gram and suffix drafters. ``cost`` is
    the drafter cost the controller's ``[[classes]]`` entry is given (the preset).

    Load-varying classes (``batch`` set; None keeps the constant-cost behaviour above
    exactly): ``batch`` is the mean number of running requests per engine over time, spread
    per step with variance ``batch_dispersion`` x mean (1 = Poisson) up to ``max_batch``;
    ``step_cost`` is the true T(k, B) (None: ``StepCost.constant(cost)`` at
    ``target_step_seconds``); engines then deploy whole :class:`SpecConfig` s (a schedule by
    batch size included), k flapping at a band edge costs ``flap_penalty`` plain steps per
    change on a share ``flap_rate`` of steps, and a k = 0 band under a loaded drafter runs
    ``off_overhead`` slower (vLLM #49548; :mod:`specwise.sim.load_truth`). Plain throughput
    is then B / T(0, B) and ``load`` is not read. ``output_tokens``: the mean tokens a
    request generates (for the per-request latency histograms).
    """

    name: str
    survival: SurvivalFn
    cost: float
    initial_k: int
    load: Schedule = _DEFAULT_LOAD
    replicas: int = 1
    restart_every: float | None = None
    target_step_seconds: float = 0.02
    draft_lengths: DraftLengthFn | None = None
    step_cost: StepCost | None = None
    batch: Schedule | None = None
    batch_dispersion: float = 1.0
    max_batch: int = 256
    flap_rate: float = 0.5
    flap_penalty: float = 1.0
    off_overhead: float = SCHEDULE_OFF_OVERHEAD
    output_tokens: int = 256
    #: replicas of the same model served without speculation and left alone by the
    #: class's configuration changes (a baseline pool): their load-only pages measure
    #: T(0, B); they are not scored
    plain_replicas: int = 0
    #: the batch-size schedule the engines start with (with ``initial_k`` as its maximum)
    initial_schedule: tuple[tuple[int, int, int], ...] | None = None

    @property
    def initial_config(self) -> SpecConfig:
        return SpecConfig(self.initial_k, self.initial_schedule if self.initial_k else None)

    @property
    def load_varying(self) -> bool:
        """Whether this class has a batch-size schedule (the cost-side simulation)."""
        return self.batch is not None

    @property
    def truth_cost(self) -> StepCost:
        """The true T(k, B) (seconds)."""
        if self.step_cost is not None:
            return self.step_cost
        c = StepCost.constant(self.cost)
        return StepCost(
            base=self.target_step_seconds, draft_base=c.draft_base * self.target_step_seconds
        )

    def batch_pmf_at(self, t: float) -> np.ndarray:
        """P(B = b), b = 0..max_batch, at time t (a single size 8 without ``batch``)."""
        mean = self.batch(t) if self.batch is not None else 8.0
        return batch_pmf(mean, dispersion=self.batch_dispersion, max_batch=self.max_batch)

    def rates_at(self, t: float, config: SpecConfig) -> LoadRates:
        """What ``config`` delivers at time t, per second of engine time (the truth)."""
        survival = self.survival(t, config.k) if config.k > 0 else []
        return load_rates(
            self.batch_pmf_at(t),
            config,
            survival,
            self.truth_cost,
            off_overhead=self.off_overhead,
            flap_rate=self.flap_rate,
            flap_penalty=self.flap_penalty,
        )

    def plain_rate_at(self, t: float) -> float:
        """Plain decoding's tokens per second at time t."""
        if self.batch is None:
            return self.load(t)
        return plain_rate(self.batch_pmf_at(t), self.truth_cost)

    def config_speedup_at(self, t: float, config: SpecConfig) -> float:
        """The true speedup of a whole configuration at time t (k alone without ``batch``)."""
        if self.batch is None:
            return self.speedup_at(t, config.k)
        return self.rates_at(t, config).speedup

    def speedup_at(self, t: float, k: int) -> float:
        """The true speedup of k at time t: expected tokens per cycle over its cost, a
        cycle drafting l tokens (l from ``draft_lengths``) costing l*c + 1 target steps."""
        if k <= 0:
            return 1.0
        survival = self.survival(t, k)
        if self.draft_lengths is None:
            return speedup_from_survival(survival, k, self.cost)
        pmf = self.draft_lengths(k)
        tokens = sum(p * (1.0 + sum(survival[:n])) for n, p in enumerate(pmf))
        cost = sum(p * (n * self.cost + 1.0) for n, p in enumerate(pmf))
        return tokens / cost

    def alpha_at(self, t: float) -> float:
        """The first-position acceptance s_1: alpha for i.i.d. classes, a summary otherwise."""
        return self.survival(t, 1)[0]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration: float
    classes: tuple[ClassScenario, ...]


#: The ground truth of the load-varying scenarios: a target whose decode step (20 ms) is
#: memory-bound up to 72 verified tokens per step, then 0.4 ms per token, and an EAGLE-style
#: drafter step of 3.5 ms + 0.1 ms per running request (c = 0.185 at batch size 2). With
#: alpha 0.8 the best k is 4 up to batch size 12, 3 to 18, 2 to 26, 1 to 47, then 0.
EAGLE_ON_BUSY_GPU = StepCost(
    base=0.02, per_token=0.0004, knee=72.0, draft_base=0.0035, draft_per_seq=0.0001
)
#: A drafter that really costs 0.15 of a target step (3x the EAGLE preset of 0.05).
HEAVY_DRAFTER = StepCost(
    base=0.02, per_token=0.0004, knee=64.0, draft_base=0.003, draft_per_seq=0.00002
)
DAY = 24 * HOUR


def _hover(center: float, swing: float, period: float) -> Schedule:
    return lambda t: center + swing * math.sin(2.0 * math.pi * t / period)


def _suite() -> dict[str, Scenario]:
    six_hours = 6 * HOUR
    return {
        s.name: s
        for s in (
            Scenario(
                "demo",
                "Four classes: code (EAGLE, alpha 0.82), chat (EAGLE whose acceptance falls "
                "from 0.7 to 0.3 after 40 minutes), summarize (a small draft model that "
                "loses: alpha 0.3 at cost 0.4) and docs (EAGLE, alpha 0.8, whose load rises "
                "from 3 to 48 running requests for a busy hour from 0:40: k = 4 pays when "
                "it is quiet, speculation loses while it is busy).",
                2 * HOUR,
                (
                    ClassScenario("code", iid(const(0.82)), cost=0.05, initial_k=3),
                    ClassScenario("chat", iid(step(0.7, 0.3, 40 * 60)), cost=0.05, initial_k=5),
                    ClassScenario("summarize", iid(const(0.3)), cost=0.4, initial_k=3),
                    ClassScenario(
                        "docs",
                        iid(const(0.8)),
                        cost=0.2,
                        initial_k=4,
                        step_cost=EAGLE_ON_BUSY_GPU,
                        batch=busy_hour(3.0, 48.0, start=40 * 60, end=100 * 60, ramp=600.0),
                    ),
                ),
            ),
            Scenario(
                "steady",
                "Two classes at constant acceptance: code (alpha 0.8) and chat (alpha 0.55).",
                six_hours,
                (
                    ClassScenario("code", iid(const(0.8)), cost=0.05, initial_k=3),
                    ClassScenario("chat", iid(const(0.55)), cost=0.05, initial_k=3),
                ),
            ),
            Scenario(
                "drift",
                "Chat acceptance drifts from 0.8 down to 0.45 over six hours.",
                six_hours,
                (ClassScenario("chat", iid(linear(0.8, 0.45, six_hours)), cost=0.05, initial_k=5),),
            ),
            Scenario(
                "drafter-failure",
                "An EAGLE-style drafter (alpha 0.75) breaks after one hour (alpha 0.1).",
                six_hours,
                (ClassScenario("code", iid(step(0.75, 0.1, HOUR)), cost=0.05, initial_k=5),),
            ),
            Scenario(
                "mix-change",
                "One class pooling code (alpha 0.92) and prose (alpha 0.4); the code share "
                "falls from 80% to 20%.",
                six_hours,
                (ClassScenario("assistant", mix(linear(0.8, 0.2, six_hours), 0.92, 0.4), 0.05, 4),),
            ),
            Scenario(
                "restarts",
                "Steady alpha 0.7, but every engine crashes and restarts every 30 minutes.",
                six_hours,
                (
                    ClassScenario(
                        "chat",
                        iid(const(0.7)),
                        cost=0.05,
                        initial_k=3,
                        replicas=2,
                        restart_every=0.5 * HOUR,
                    ),
                ),
            ),
            Scenario(
                "losing",
                "A mediocre small draft model (alpha 0.25, cost 0.4): speculation loses.",
                six_hours,
                (ClassScenario("summarize", iid(const(0.25)), cost=0.4, initial_k=3),),
            ),
            Scenario(
                "ngram",
                "An n-gram drafter (cost 0.02) whose drafts are mostly shorter than k (a "
                "match in 70% of steps, going on past each token with probability 0.65): "
                "alpha 0.75, falling to 0.35 after two hours.",
                six_hours,
                (
                    ClassScenario(
                        "edits",
                        iid(step(0.75, 0.35, 2 * HOUR)),
                        cost=0.02,
                        initial_k=4,
                        draft_lengths=ngram_lengths(0.7, 0.65),
                    ),
                ),
            ),
            Scenario(
                "correlated",
                "Correlated acceptance (in-phrase 0.95, boundary 0.3): i.i.d. misprices k.",
                six_hours,
                (ClassScenario("code", two_state(0.95, 0.3, 0.08, 0.25), 0.05, 4),),
            ),
            Scenario(
                "peak-hours",
                "A simulated day: an EAGLE-style drafter (alpha 0.8, c about 0.19 at batch "
                "size 2) pays at night (3 running requests: best k = 4) and loses at the "
                "afternoon peak (48: best k = 0); the engines start at k = 4.",
                DAY,
                (
                    ClassScenario(
                        "chat",
                        iid(const(0.8)),
                        cost=0.2,
                        initial_k=4,
                        step_cost=EAGLE_ON_BUSY_GPU,
                        batch=day_shape(3.0, 48.0, peaks=(14.0,), width=1.25),
                    ),
                ),
            ),
            Scenario(
                "heavy-drafter",
                "A drafter whose true cost is 0.15 of a target step, 3x the EAGLE preset "
                "(0.05) its [[classes]] entry gives: alpha 0.7, 3 to 12 running requests "
                "over a day; the preset says k = 6, the truth k = 3; the engines start at 5.",
                DAY,
                (
                    ClassScenario(
                        "code",
                        iid(const(0.7)),
                        cost=0.05,
                        initial_k=5,
                        step_cost=HEAVY_DRAFTER,
                        batch=day_shape(3.0, 12.0, width=3.0),
                    ),
                ),
            ),
            Scenario(
                "flat-load",
                "Constant load (6 running requests, steady) and alpha 0.75: the best k is 3 "
                "at every batch size the server sees, so a schedule has nothing to gain; the "
                "engines start at k = 2.",
                DAY,
                (
                    ClassScenario(
                        "chat",
                        iid(const(0.75)),
                        cost=0.2,
                        initial_k=2,
                        step_cost=EAGLE_ON_BUSY_GPU,
                        batch=const(6.0),
                        batch_dispersion=0.25,
                    ),
                ),
            ),
            Scenario(
                "schedule-flapping",
                "Load hovering at the batch size where the best k drops from 2 to 1 (24 to 29 "
                "running requests, a 40-minute swing): a schedule edge there flaps k between "
                "steps (vLLM #49548: 2 plain steps lost per change), and moving the edge with "
                "the load is a restart each time; the best answer is one k.",
                DAY,
                (
                    ClassScenario(
                        "chat",
                        iid(const(0.8)),
                        cost=0.2,
                        initial_k=2,
                        step_cost=EAGLE_ON_BUSY_GPU,
                        batch=_hover(26.5, 2.5, 2400.0),
                        flap_penalty=2.0,
                    ),
                ),
            ),
        )
    }


SCENARIOS: dict[str, Scenario] = _suite()


def get_scenario(name: str) -> Scenario:
    """The scenario of that name, or a ConfigError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ConfigError(
            f"unknown scenario {name!r}; choose one of {', '.join(sorted(SCENARIOS))}",
            field="scenario",
        ) from None
