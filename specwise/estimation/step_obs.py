"""One window of one class, as the cost side sees it (docs/design.md#the-cost-side).

Per class and window the counters give (plan identities):

- request-steps R = the ``vllm:inter_token_latency_seconds`` count gain;
- the step time requests see, T_obs = ITL sum gain / R;
- the mean decode batch, B_obs = R / ``vllm:iteration_tokens_total`` count gain (engine
  steps), else the mean of the busy running-request samples;
- tokens per request-step, G / R (G = generation tokens gain): 1 + accepted / drafts under
  speculation (plus each request's first token, which has no ITL observation), about 1 for
  plain decoding;
- per finished request (``vllm:request_inference_time_seconds`` = prefill + decode, and
  ``vllm:request_generation_tokens``, _sum/_count): the request-seconds the window's finished
  requests spent in the engine and the tokens they generated; their ratio is the token rate
  one request sees, prefill included (the throughput basis of the measured speedup).

:func:`observation_from_delta` makes a :class:`StepObservation` of a class delta, and
:func:`observation_problem` says in one sentence why a delta gives none. The array helpers
here are shared by the fit (:mod:`specwise.estimation.step_fit`) and the measured speedup
(:mod:`specwise.estimation.step_speedup`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from specwise.collectors.snapshot import CounterDelta

__all__ = [
    "StepObservation",
    "observation_from_delta",
    "observation_problem",
]

FloatArray = npt.NDArray[np.float64]

#: Posterior draws are widened by this factor: the knee's grid and the plug-in noise
#: variance understate the spread (calibrated on simulated windows, tests/estimation).
DRAW_WIDEN = 1.25
#: Prior relative noise of one window's T_obs (a pseudo-observation for the noise scale).
NOISE_PRIOR = 0.02
NOISE_PRIOR_WEIGHT = 1.0
#: A step time above this many seconds is not a decode step (a stalled or broken window).
MAX_STEP_SECONDS = 60.0
#: Bounds past which a window's numbers are not an engine's (a broken counter or parse).
MIN_STEP_SECONDS = 1e-7
MIN_BATCH = 1e-3
MAX_BATCH = 1e6
MAX_K = 1024
MAX_WEIGHT = 1e15
#: Fewer request-steps than this is not a window (at least one step of one request).
MIN_WEIGHT = 1.0


@dataclass(frozen=True)
class StepObservation:
    """One window of one class: what the engine's steps cost and delivered.

    ``k``: the k drafted in the window (0 = plain decoding); ``batch``: B_obs, running
    requests per step; ``step_seconds``: T_obs; ``weight``: R, the request-steps behind the
    mean; ``tokens_per_step``: G / R (None without the generation counter); ``start`` and
    ``end``: the window, Unix seconds. ``request_seconds``, ``request_tokens``,
    ``requests``: the inference time (prefill + decode), generated tokens and number of the
    requests that finished in the window (None without those families or when none
    finished).
    """

    k: int
    batch: float
    step_seconds: float
    weight: float
    tokens_per_step: float | None
    start: float
    end: float
    request_seconds: float | None = None
    request_tokens: float | None = None
    requests: float | None = None
    #: the batch's spread in the window: the busy running-request samples' squared
    #: deviations from ``batch`` summed, and their degrees of freedom (0: no samples)
    batch_sq_dev: float = 0.0
    batch_dof: int = 0
    #: the batch-size schedule the window ran under (its k per batch size), if any
    schedule: tuple[tuple[int, int, int], ...] | None = None

    @property
    def tokens(self) -> float:
        """Tokens the target verifies per step: B (k + 1)."""
        return self.batch * (self.k + 1)

    @property
    def load(self) -> float | None:
        """Requests in the engine on average over the window (Little's law: request-seconds
        of the finished requests / window length); None without the request families."""
        span = self.end - self.start
        if self.request_seconds is None or not span > 0:
            return None
        return self.request_seconds / span


def _gain(value: float | None) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        return None
    return v


def observation_problem(delta: CounterDelta, k: int | None = None) -> str | None:
    """Why ``delta`` gives no :class:`StepObservation` (one sentence), or None if it does."""
    return _build(delta, k)[1]


def observation_from_delta(delta: CounterDelta, k: int | None = None) -> StepObservation | None:
    """The window's :class:`StepObservation`, or None when the families it needs are missing
    or its gains make no sense (see :func:`observation_problem` for the reason).

    ``k`` overrides the delta's deployed k (a load-only delta is always k = 0).
    """
    return _build(delta, k)[0]


def _build(delta: CounterDelta, k: int | None) -> tuple[StepObservation | None, str | None]:
    kk = _window_k(delta, k)
    if kk is None:
        return None, "the deployed k of this window is unknown, so its step time cannot be priced"
    if delta.itl_seconds_count is None or delta.itl_seconds_sum is None:
        return None, (
            "no latency families (vllm:inter_token_latency_seconds): priced with the "
            "constant-cost model (draft cost c from the preset)"
        )
    r = _gain(delta.itl_seconds_count)
    s = _gain(delta.itl_seconds_sum)
    if r is None or s is None:
        return None, "no decode steps in this window (inter-token latency count did not grow)"
    t = s / r
    if t > MAX_STEP_SECONDS:
        return None, f"mean step time {t:.3g} s is not a decode step; window skipped"
    batch = _window_batch(delta, r)
    if batch is None:
        return None, (
            "no batch size for this window (neither vllm:iteration_tokens_total nor "
            "vllm:num_requests_running samples)"
        )
    g = _gain(delta.generation_tokens)
    tps: float | None = None
    if g is not None:
        ratio = g / r
        # G counts every request's first token, which has no ITL observation: G/R is a
        # little above 1 for plain decoding. Far outside [0.5, 2 (k+1)] it is nonsense.
        if 0.5 <= ratio <= 2.0 * (kk + 1) + 1.0:
            tps = ratio
    req_s, req_tok, req_n = _requests(delta)
    sq_dev, dof = _spread(delta, batch)
    obs = StepObservation(
        k=kk,
        batch=batch,
        step_seconds=t,
        weight=r,
        tokens_per_step=tps,
        start=float(delta.start),
        end=float(delta.end),
        request_seconds=req_s,
        request_tokens=req_tok,
        requests=req_n,
        batch_sq_dev=sq_dev,
        batch_dof=dof,
    )
    if not valid(obs):
        return None, (
            f"window gains out of range (k {kk}, {r:.3g} request-steps, batch {batch:.3g}, "
            f"step {t:.3g} s): skipped"
        )
    return obs, None


#: A finished request's inference time above this is not one (a broken counter).
MAX_REQUEST_SECONDS = 86400.0


def _requests(delta: CounterDelta) -> tuple[float | None, float | None, float | None]:
    """The finished requests' inference seconds, generated tokens and number in the window
    (all None without ``vllm:request_inference_time_seconds`` or when none finished). Their
    tokens come from ``vllm:request_generation_tokens``, else the generation counter's gain
    (close over long windows: it also counts tokens of requests still running)."""
    secs = _gain(delta.inference_seconds_sum)
    n = _gain(delta.inference_seconds_count)
    if secs is None or n is None or secs / n > MAX_REQUEST_SECONDS:
        return None, None, None
    tokens = _gain(delta.request_tokens_sum)
    if tokens is None:
        tokens = _gain(delta.generation_tokens)
    if tokens is None:
        return None, None, None
    return secs, tokens, n


def _window_k(delta: CounterDelta, k: int | None) -> int | None:
    if not delta.spec_families:
        return 0
    kk = delta.k if k is None else k
    if kk is None or isinstance(kk, bool):
        return None
    try:
        if int(kk) != kk or kk < 0:
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return int(kk)


def _window_batch(delta: CounterDelta, requests: float) -> float | None:
    steps = _gain(delta.iteration_steps)
    if steps is not None:
        b = requests / steps
        if math.isfinite(b) and b > 0.0:
            return b
    busy = [float(x) for x in delta.batch_samples if math.isfinite(float(x)) and float(x) > 0]
    if busy:
        return sum(busy) / len(busy)
    return None


def _spread(delta: CounterDelta, batch: float) -> tuple[float, int]:
    """The busy running samples' squared deviations from the window's mean batch and their
    degrees of freedom (one fewer when the mean is their own, without engine steps)."""
    busy = [float(x) for x in delta.batch_samples if 0.5 <= float(x) <= MAX_BATCH]
    if not busy or not (0.0 < batch <= MAX_BATCH):  # no samples, or not an engine's batch
        return 0.0, 0
    own = _gain(delta.iteration_steps) is None
    dof = len(busy) - 1 if own else len(busy)
    if dof <= 0:
        return 0.0, 0
    return float(sum((x - batch) ** 2 for x in busy)), dof


def observation_arrays(obs: Sequence[StepObservation]) -> dict[str, FloatArray]:
    n = len(obs)
    return {
        "k": np.fromiter((o.k for o in obs), dtype=np.float64, count=n),
        "b": np.fromiter((o.batch for o in obs), dtype=np.float64, count=n),
        "t": np.fromiter((o.step_seconds for o in obs), dtype=np.float64, count=n),
        "r": np.fromiter((o.weight for o in obs), dtype=np.float64, count=n),
        "g": np.fromiter(
            (math.nan if o.tokens_per_step is None else o.tokens_per_step for o in obs),
            dtype=np.float64,
            count=n,
        ),
    }


def valid_mask(a: dict[str, FloatArray]) -> npt.NDArray[np.bool_]:
    k, b, t, r = a["k"], a["b"], a["t"], a["r"]
    with np.errstate(invalid="ignore"):
        return np.asarray(
            (k >= 0)
            & (k <= MAX_K)
            & (k == np.floor(k))
            & (b >= MIN_BATCH)
            & (b <= MAX_BATCH)
            & (t >= MIN_STEP_SECONDS)
            & (t <= MAX_STEP_SECONDS)
            & (r >= MIN_WEIGHT)
            & (r <= MAX_WEIGHT),
            dtype=np.bool_,
        )


def valid(o: StepObservation) -> bool:
    """Whether a window's numbers can be an engine's."""
    return bool(valid_mask(observation_arrays([o]))[0])


#: Windows of one k whose batch sizes lie within this factor pool into one cell.
CELL_WIDTH = 1.01


def cell_keys(k: FloatArray, b: FloatArray) -> tuple[FloatArray, npt.NDArray[np.intp]]:
    """The k of each cell and each window's cell index (one int64 key: k, then log B)."""
    bins = np.round(np.log(b) / math.log(CELL_WIDTH)).astype(np.int64)
    key = k.astype(np.int64) * 10_000_000 + (bins + 1_000_000)
    uniq, inv = np.unique(key, return_inverse=True)
    ks = np.asarray(uniq // 10_000_000, dtype=np.float64)
    return ks, np.asarray(inv.reshape(-1), dtype=np.intp)
