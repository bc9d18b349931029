"""The cost side of speculation: engine step time T(k, B) and speedup at a batch size.

Pure arithmetic, no I/O, no clock (docs/design.md#the-cost-side). One engine step that
drafts k tokens and verifies them for B running requests takes

    T(k, B) = base + per_token * max(0, B*(k+1) - knee)       target forward (verify)
              + k * verify_per_draft                           (constant-cost model only)
              + k * (draft_base + draft_per_seq * B)           k drafter steps

seconds: flat while decode is memory-bound (the weights are read once per step), growing
with the B*(k+1) verified tokens once the step passes the compute knee, plus k drafter
steps, each of which may grow with B. Plain decoding is T(0, B). The speedup of k at batch
size B is

    S(k, B) = E(k) * T(0, B) / T(k, B),    E(k) = 1 + s_1 + ... + s_k

(tokens per step per request over plain decoding's one). The seed model's constant cost
E / (k*c + v(k)) is the special case :meth:`StepCost.constant`: no knee, base 1.

A configuration vLLM can run (:class:`SpecConfig`) is a maximum k plus an optional
``num_speculative_tokens_per_batch_size`` schedule; its speedup over a batch-size
distribution (:class:`BatchDistribution`) is the ratio of tokens delivered, each batch size
weighted by its share of time and by plain decoding's throughput there
(:func:`config_speedup`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from specwise.errors import ModelInputError
from specwise.policies.schedule import ScheduleEntry, schedule_k_at

__all__ = [
    "SCHEDULE_OFF_OVERHEAD",
    "BatchDistribution",
    "SpecConfig",
    "StepCost",
    "config_speedup",
    "expected_tokens",
    "speedup_at_batch",
]

#: How much slower a step is when the engine was launched with a drafter but a schedule
#: band runs k = 0 (vLLM #49548: k = 0 bands keep KV lookahead slots reserved; an external
#: goodput controller measured 15-18%). Used to price k = 0 schedule bands against a
#: restart without speculation.
SCHEDULE_OFF_OVERHEAD = 0.14


def _finite_nonneg(value: float, name: str, example: str) -> float:
    v = float(value)
    if not (v >= 0.0) or math.isinf(v):
        raise ModelInputError(
            f"{name} = {value!r} must be a finite number >= 0 (e.g. {example})",
            field=name,
            value=value,
        )
    return v


@dataclass(frozen=True)
class StepCost:
    """T(k, B) in seconds (see the module docstring for the formula).

    ``base``: the memory-bound step of the target (seconds, > 0); ``per_token``: seconds per
    verified token past ``knee`` (tokens per step where the step becomes compute-bound;
    ``math.inf``: never); ``draft_base`` and ``draft_per_seq``: seconds per drafter step,
    fixed and per running request; ``verify_per_draft``: a load-independent verify cost per
    draft token (the seed model's slope, in the constant form only).
    """

    base: float
    per_token: float = 0.0
    knee: float = math.inf
    draft_base: float = 0.0
    draft_per_seq: float = 0.0
    verify_per_draft: float = 0.0

    def __post_init__(self) -> None:
        if not (float(self.base) > 0.0) or math.isinf(self.base):
            raise ModelInputError(
                f"step base time = {self.base!r} must be a finite number > 0 seconds",
                field="base",
                value=self.base,
            )
        _finite_nonneg(self.per_token, "per_token", "2e-5 s per token")
        _finite_nonneg(self.draft_base, "draft_base", "0.001 s")
        _finite_nonneg(self.draft_per_seq, "draft_per_seq", "1e-5 s")
        _finite_nonneg(self.verify_per_draft, "verify_per_draft", "0")
        if not (float(self.knee) >= 0.0):  # inf allowed: never compute-bound
            raise ModelInputError(
                f"knee = {self.knee!r} must be >= 0 tokens per step (math.inf: never "
                "compute-bound)",
                field="knee",
                value=self.knee,
            )

    @classmethod
    def constant(cls, cost: float, verify_slope: float = 0.0) -> StepCost:
        """The seed model: T(k, B) / T(0, B) = 1 + k*(c + eps) at every batch size."""
        c = _finite_nonneg(cost, "cost", "0.05")
        eps = _finite_nonneg(verify_slope, "verify_slope", "0")
        return cls(base=1.0, draft_base=c, verify_per_draft=eps)

    @property
    def load_dependent(self) -> bool:
        """Whether T(k, B) / T(0, B) changes with B (a knee or a per-sequence drafter)."""
        return (self.per_token > 0.0 and math.isfinite(self.knee)) or self.draft_per_seq > 0.0

    def verify_time(self, k: int, batch: float) -> float:
        """The target forward that verifies k drafts for ``batch`` requests (k = 0: plain)."""
        tokens = float(batch) * (k + 1)
        over = max(0.0, tokens - self.knee) if math.isfinite(self.knee) else 0.0
        return self.base + self.per_token * over + k * self.verify_per_draft

    def draft_time(self, k: int, batch: float) -> float:
        """k drafter steps for ``batch`` requests."""
        return k * (self.draft_base + self.draft_per_seq * float(batch))

    def step_time(self, k: int, batch: float) -> float:
        """T(k, B) in seconds."""
        _check_kb(k, batch)
        return self.verify_time(k, batch) + self.draft_time(k, batch)

    def relative(self, k: int, batch: float) -> float:
        """T(k, B) / T(0, B): the cycle cost in plain decode steps (the seed model's k*c + v)."""
        return self.step_time(k, batch) / self.step_time(0, batch)

    def implied_draft_cost(self, batch: float) -> float:
        """The seed model's c at this batch size: one drafter step over a plain step."""
        return self.draft_time(1, batch) / self.step_time(0, batch)

    def implied_verify_cost(self, k: int, batch: float) -> float:
        """The seed model's v(k) at this batch size: the verify over a plain step."""
        return self.verify_time(k, batch) / self.step_time(0, batch)


def _check_kb(k: int, batch: float) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ModelInputError(f"k = {k!r} must be a whole number >= 0", field="k", value=k)
    if not (float(batch) > 0.0) or math.isinf(batch):
        raise ModelInputError(
            f"batch size = {batch!r} must be a finite number > 0 (running requests)",
            field="batch",
            value=batch,
        )


def expected_tokens(survival: Sequence[float], k: int) -> float:
    """E(k) = 1 + s_1 + ... + s_k tokens per step per request (needs len(survival) >= k)."""
    if k > len(survival):
        raise ModelInputError(
            f"k = {k} needs a survival curve of at least {k} positions, got {len(survival)}",
            field="k",
            value=k,
        )
    return 1.0 + float(sum(survival[:k]))


def speedup_at_batch(survival: Sequence[float], k: int, batch: float, cost: StepCost) -> float:
    """S(k, B) = E(k) * T(0, B) / T(k, B); exactly 1 at k = 0."""
    if k == 0:
        return 1.0
    return expected_tokens(survival, k) / cost.relative(k, batch)


@dataclass(frozen=True)
class SpecConfig:
    """What vLLM runs: ``k`` = num_speculative_tokens (0 = launched without speculation),
    and an optional ``num_speculative_tokens_per_batch_size`` schedule (every k <= ``k``)."""

    k: int
    schedule: tuple[ScheduleEntry, ...] | None = None

    def k_at(self, batch: int) -> int:
        """The k vLLM drafts at this running batch size."""
        if self.k == 0 or not self.schedule:
            return self.k
        return schedule_k_at(self.schedule, batch)

    def describe(self) -> str:
        if self.k == 0:
            return "off (no speculative config)"
        if not self.schedule or (len(self.schedule) == 1 and self.schedule[0][2] == self.k):
            return f"k = {self.k}"
        bands = ", ".join(f"{a}-{b}: {k}" for a, b, k in self.schedule)
        return f"k = {self.k}, by batch size {bands}"


@dataclass(frozen=True)
class BatchDistribution:
    """How the running batch size was spread over time: ``sizes`` (whole numbers >= 1,
    ascending) and their time ``shares`` (summing to 1). ``idle_share`` is the share of time
    nothing ran (batch size 0), kept apart since it delivers no tokens at any k."""

    sizes: tuple[int, ...]
    shares: tuple[float, ...]
    idle_share: float = 0.0

    def __post_init__(self) -> None:
        if len(self.sizes) != len(self.shares) or not self.sizes:
            raise ModelInputError(
                "a batch-size distribution needs one share per size and at least one size",
                field="batches",
            )
        if any(b < 1 for b in self.sizes) or list(self.sizes) != sorted(set(self.sizes)):
            raise ModelInputError(
                f"batch sizes {list(self.sizes)[:8]} must be distinct whole numbers >= 1, "
                "ascending",
                field="batches",
            )
        total = sum(self.shares)
        if any(s < 0 for s in self.shares) or not math.isclose(total, 1.0, rel_tol=1e-6):
            raise ModelInputError(
                f"batch-size shares must be >= 0 and sum to 1 (they sum to {total!r})",
                field="batches",
            )

    @classmethod
    def from_samples(
        cls, samples: Iterable[float], weights: Iterable[float] | None = None
    ) -> BatchDistribution:
        """From running-request samples (rounded to whole numbers), optionally time-weighted."""
        values = [float(x) for x in samples]
        ws = [1.0] * len(values) if weights is None else [float(w) for w in weights]
        if len(ws) != len(values):
            raise ModelInputError("one weight per batch-size sample", field="batches")
        counts: dict[int, float] = {}
        idle = 0.0
        for x, w in zip(values, ws, strict=True):
            if not math.isfinite(x) or x < 0 or w < 0 or not math.isfinite(w):
                continue
            b = round(x)
            if b == 0:
                idle += w
            else:
                counts[b] = counts.get(b, 0.0) + w
        busy = sum(counts.values())
        if busy <= 0:
            raise ModelInputError(
                "no batch-size sample above 0: the server ran nothing in this window",
                field="batches",
            )
        sizes = tuple(sorted(counts))
        return cls(
            sizes,
            tuple(counts[b] / busy for b in sizes),
            idle_share=idle / (idle + busy),
        )

    @classmethod
    def single(cls, batch: int) -> BatchDistribution:
        return cls((int(batch),), (1.0,))

    @property
    def mean(self) -> float:
        return float(sum(b * s for b, s in zip(self.sizes, self.shares, strict=True)))

    def quantile(self, q: float) -> int:
        """The smallest size with at least ``q`` of the busy time at or below it."""
        acc = 0.0
        for b, s in zip(self.sizes, self.shares, strict=True):
            acc += s
            if acc >= q - 1e-12:
                return b
        return self.sizes[-1]


def config_speedup(
    survival: Sequence[float],
    config: SpecConfig,
    batches: BatchDistribution,
    cost: StepCost,
    *,
    off_overhead: float = SCHEDULE_OFF_OVERHEAD,
) -> float:
    """Tokens ``config`` delivers over ``batches`` relative to plain decoding.

    At each batch size B (time share p_B) plain decoding delivers B / T(0, B) tokens per
    second and the configuration B * E(k_B) / T(k_B, B); the ratio of the p-weighted sums is
    returned. A k = 0 band of a configuration launched with a drafter runs plain steps
    ``off_overhead`` slower; ``config.k == 0`` (no drafter) is exactly 1.
    """
    if config.k == 0:
        return 1.0
    plain = 0.0
    spec = 0.0
    for b, p in zip(batches.sizes, batches.shares, strict=True):
        t0 = cost.step_time(0, b)
        plain += p * b / t0
        kb = config.k_at(b)
        if kb == 0:
            spec += p * b / (t0 * (1.0 + off_overhead))
        else:
            spec += p * b * expected_tokens(survival, kb) / cost.step_time(kb, b)
    return spec / plain
