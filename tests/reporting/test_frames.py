"""The pandas frames (specwise.reporting.frames) and ``specwise export`` on real data.

A day of 60 s samples is backfilled into a real Prometheus 2.42 (promtool, once per module)
with known true alphas: "code" (two engines, one restarting at 6 h: a counter reset), "chat"
(restarting at 12 h with k 4 -> 2: a k change inside the range), "gap" (its engine gone from
8 h to 10 h, then back from 0: a series that goes and comes back) and "early" (only in the
first 6 h: a class in one window only). Captures and a log are the real vLLM output in
tests/fixtures/vllm/.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from specwise.cli import main
from specwise.collectors.deltas import window_deltas
from specwise.collectors.logs import parse_log_lines
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource
from specwise.collectors.scrape import FileSource
from specwise.collectors.snapshot import Snapshot
from specwise.errors import DataError
from specwise.estimation.estimator import (
    EstimatorConfig,
    WindowCounts,
    estimate_counts,
)
from specwise.reporting.frames import (
    capture_counters,
    load_prometheus,
    log_counters,
    position_columns,
    prometheus_counters,
    snapshot_counters,
    survival_frame,
    with_estimates,
)
from specwise.reporting.windows import TimeRange, alpha_over_time

try:
    from tests import servers
except ImportError:
    import servers  # type: ignore[no-redef]

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vllm"
SAMPLE = 60.0
HOUR = 3600.0
N = int(24 * HOUR / SAMPLE)
T0 = math.floor((time.time() - 27 * HOUR) / HOUR) * HOUR
END = T0 + N * SAMPLE
STEP = 300.0  # query step = rate window: consecutive windows tile the range


@dataclass(frozen=True)
class Segment:
    """One process of one engine: [start, end) with its k and true alpha."""

    start: float
    end: float
    k: int
    alpha: float


@dataclass(frozen=True)
class Engine:
    model: str
    engine: str
    drafts: int  # per sample
    segments: tuple[Segment, ...]
    itl: bool = False


ENGINES = [
    Engine("code", "0", 80, (Segment(T0, END + 1, 4, 0.7),), itl=True),
    Engine("code", "1", 40, (Segment(T0, T0 + 6 * HOUR, 4, 0.7),
                             Segment(T0 + 6 * HOUR, END + 1, 4, 0.7)), itl=True),
    Engine("chat", "0", 60, (Segment(T0, T0 + 12 * HOUR, 4, 0.5),
                             Segment(T0 + 12 * HOUR, END + 1, 2, 0.5))),
    Engine("gap", "0", 60, (Segment(T0, T0 + 8 * HOUR, 3, 0.6),
                            Segment(T0 + 10 * HOUR, END + 1, 3, 0.6))),
    Engine("early", "0", 60, (Segment(T0, T0 + 6 * HOUR, 2, 0.8),)),
    Engine("roll", "0", 60, (Segment(T0, END + 1, 3, 0.6),)),
    Engine("roll", "1", 60, (Segment(T0, T0 + 12 * HOUR, 3, 0.6),
                             Segment(T0 + 12 * HOUR, END + 1, 5, 0.6))),
]  # fmt: skip

Series = dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]]
#: (model, sample time) -> true gains at that sample (summed over the model's engines).
Gains = dict[str, dict[float, dict[str, float]]]


def history(seed: int = 5) -> tuple[Series, Gains]:
    rng = np.random.default_rng(seed)
    series: Series = {}
    gains: Gains = {}
    times = T0 + SAMPLE * np.arange(N + 1)
    for e in ENGINES:
        labels = {"engine": e.engine, "instance": f"{e.model}-{e.engine}:8000",
                  "job": "vllm", "model_name": e.model}  # fmt: skip
        for seg in e.segments:
            t = times[(times >= seg.start) & (times < seg.end)]
            a, k = seg.alpha, seg.k
            pvals = [a**j * (1 - a) for j in range(k)] + [a**k]
            counts = rng.multinomial(e.drafts, pvals, size=len(t))
            counts[0] = 0  # a process' first sample: counters start at 0
            d = np.full(len(t), float(e.drafts))
            d[0] = 0.0
            cols = {
                "spec_decode_num_drafts_total": d,
                "spec_decode_num_draft_tokens_total": k * d,
                "spec_decode_num_accepted_tokens_total": (counts * np.arange(k + 1)).sum(axis=1),
            }
            if e.itl:
                cols["generation_tokens_total"] = d + cols["spec_decode_num_accepted_tokens_total"]
            per_pos = {j: counts[:, j + 1 :].sum(axis=1) for j in range(k)}
            for name, g in [*cols.items(), *((f"pos{j}", g) for j, g in per_pos.items())]:
                if name.startswith("pos"):
                    key = ("vllm:spec_decode_num_accepted_tokens_per_pos_total",
                           tuple(sorted({**labels, "position": name[3:]}.items())))  # fmt: skip
                else:
                    key = (f"vllm:{name}", tuple(sorted(labels.items())))
                series.setdefault(key, []).extend(
                    zip(t.tolist(), np.cumsum(g).astype(float).tolist(), strict=True)
                )
                per_t = gains.setdefault(e.model, {})
                for ti, gi in zip(t.tolist(), g.tolist(), strict=True):
                    row = per_t.setdefault(ti, {})
                    row[name] = row.get(name, 0.0) + float(gi)
    return series, gains


SERIES, GAINS = history()


def true_sum(model: str, field: str, lo: float, hi: float) -> float:
    """True gains of ``field`` over samples in (lo, hi]."""
    return sum(g.get(field, 0.0) for t, g in GAINS[model].items() if lo < t <= hi)


@pytest.fixture(scope="module")
def prom(
    backfill: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[servers.ManagedProcess]:
    blocks = backfill(servers.openmetrics_text(SERIES), "frames-history", max_block_duration="24h")
    proc = servers.start_prometheus(tmp_path_factory.mktemp("frames-prom"), blocks=blocks)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(prom: servers.ManagedProcess) -> Iterator[PrometheusClient]:
    with requests.Session() as session:
        yield PrometheusClient(prom.base_url, session=session, timeout=60)


@pytest.fixture(scope="module")
def day(client: PrometheusClient) -> pd.DataFrame:
    return with_estimates(prometheus_counters(client, T0 + STEP, END, step=STEP))


def rows(frame: pd.DataFrame, cls: str) -> pd.DataFrame:
    return frame[frame["class"] == cls]


def secs(frame: pd.DataFrame) -> np.ndarray:
    return frame["time"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9


def test_frame_shape_and_types(day: pd.DataFrame) -> None:
    assert set(day["class"]) == {"code", "chat", "gap", "early", "roll"}
    assert str(day["time"].dtype) == "datetime64[ns, UTC]"
    assert str(day["k"].dtype) == "Int64"
    for col in ("drafts", "draft_tokens", "accepted", "alpha", "alpha_low", "alpha_high"):
        assert day[col].dtype == np.float64, col
    assert position_columns(day) == [f"accepted_pos_{i}" for i in range(5)]
    assert not day.duplicated(["class", "time"]).any()  # one row per class x step
    code = rows(day, "code")
    assert len(code) == round((END - T0 - STEP) / STEP) + 1  # every step, none twice
    assert (np.diff(secs(code)) == STEP).all()
    # load/latency families where exported (code only), NaN elsewhere
    assert code["generation_tokens"].notna().all()
    assert rows(day, "chat")["generation_tokens"].isna().all()
    assert day.attrs["rate_window"] == STEP
    assert day.attrs["requests"] == 9  # one chunk, nine queries


@pytest.mark.parametrize(
    ("cls", "rel"),
    [("code", 1e-9), ("chat", 1e-9), ("roll", 1e-9), ("gap", 0.005), ("early", 0.005)],
)
def test_increases_sum_to_the_true_counts(day: pd.DataFrame, cls: str, rel: float) -> None:
    """Windows tile the range, so the rows add up to the true gains: exactly through the
    code engine's reset at 6 h and chat's restart at 12 h; where a series ends (gap at 8 h,
    early at 6 h) Prometheus extrapolates its last window by up to one sample."""
    r = rows(day, cls)
    lo, hi = float(secs(r)[0]) - STEP, float(secs(r)[-1])
    for col, name in (("drafts", "spec_decode_num_drafts_total"),
                      ("accepted", "spec_decode_num_accepted_tokens_total")):  # fmt: skip
        assert r[col].sum() == pytest.approx(true_sum(cls, name, lo, hi), rel=rel)
    if rel > 1e-9:
        assert abs(r["drafts"].sum() - true_sum(cls, "spec_decode_num_drafts_total", lo, hi)) <= 60


def test_reset_is_handled_by_the_frame(day: pd.DataFrame) -> None:
    restart = T0 + 6 * HOUR
    code = rows(day, "code")
    at = code[secs(code) == restart].iloc[0]
    # engine 1 restarted at the window end (counter back to 0): its 4 earlier gains count
    assert at["drafts"] == pytest.approx(5 * 80 + 4 * 40)
    key = (
        "vllm:spec_decode_num_drafts_total",
        (("engine", "1"), ("instance", "code-1:8000"), ("job", "vllm"), ("model_name", "code")),
    )
    values = dict(SERIES[key])
    naive = values[END] - values[T0]  # last minus first, ignoring the reset
    assert naive < 0.8 * 40 * (N - 1)  # engine 1 gained 40 drafts at every other sample


def test_k_change_inside_the_range(day: pd.DataFrame) -> None:
    chat = rows(day, "chat")
    t = secs(chat)
    change = T0 + 12 * HOUR
    before, after = chat[t < change], chat[t >= change + STEP]
    assert (before["k"] == 4).all()
    assert (after["k"] == 2).all()
    assert after["accepted_pos_2"].isna().all()  # positions the new k does not have
    for part in (before, after):
        pooled = part[position_columns(part)].sum()
        k = int(part["k"].iloc[0])
        a, d = part["accepted"].sum(), part["drafts"].sum()
        assert a / (a + d - pooled[f"accepted_pos_{k - 1}"]) == pytest.approx(0.5, abs=0.01)
        assert abs(float(part["alpha"].median()) - 0.5) < 0.03
    surv = survival_frame(after)
    assert set(surv["position"]) == {1, 2}


def test_rollout_engines_at_two_k_are_flagged(day: pd.DataFrame) -> None:
    roll = rows(day, "roll")
    t = secs(roll)
    before, after = roll[t < T0 + 12 * HOUR], roll[t >= T0 + 12 * HOUR + STEP]
    assert not before["mixed_k"].any()
    assert (before["k"] == 3).all()
    assert after["mixed_k"].all()  # one engine at k = 3, one at k = 5
    assert (after["k"] == 5).all()
    assert not rows(day, "chat")["mixed_k"].any()  # one engine changing k is not a rollout
    # pooled positions of two k look like short drafts: the bracket covers the truth
    covered = (after["alpha_low"] <= 0.6) & (after["alpha_high"] >= 0.6)
    assert covered.mean() > 0.9


def test_series_gone_and_back_leave_a_gap(day: pd.DataFrame) -> None:
    gap = rows(day, "gap")
    t = secs(gap)
    assert not ((t >= T0 + 8 * HOUR + STEP) & (t <= T0 + 10 * HOUR)).any()
    assert (t == T0 + 8 * HOUR).any()
    assert (t == T0 + 10 * HOUR + STEP).any()
    assert (gap["k"] == 3).all()


def test_class_in_one_window_only(client: PrometheusClient) -> None:
    first = prometheus_counters(client, T0 + HOUR, T0 + 5 * HOUR, step=STEP)
    second = prometheus_counters(client, T0 + 13 * HOUR, T0 + 20 * HOUR, step=STEP)
    assert "early" in set(first["class"])
    assert "early" not in set(second["class"])
    assert {"code", "chat", "gap"} <= set(second["class"])


def test_alpha_and_interval_per_row(day: pd.DataFrame) -> None:
    """Each row's alpha and interval are the estimator's on that row's counts, and the
    95% intervals cover the true alpha about as often as they should."""
    truth = {"code": 0.7, "chat": 0.5, "gap": 0.6, "early": 0.8, "roll": 0.6}
    ok = day[day["alpha"].notna()]
    cover = ((ok["alpha_low"] <= ok["class"].map(truth))
             & (ok["class"].map(truth) <= ok["alpha_high"]))  # fmt: skip
    assert cover.mean() > 0.88
    cfg = EstimatorConfig(min_drafts=0)
    for i in range(0, len(ok), 97):
        row = ok.iloc[i]
        k = int(row["k"])
        counts = WindowCounts(
            drafts=float(row["drafts"]),
            draft_tokens=float(row["draft_tokens"]),
            accepted=float(row["accepted"]),
            accepted_per_position=tuple(float(row[f"accepted_pos_{j}"]) for j in range(k)),
            k=k,
        )
        e = estimate_counts(str(row["class"]), counts, now=0.0, config=cfg)
        assert row["alpha"] == pytest.approx(e.alpha, rel=1e-9)
        assert row["alpha_low"] == pytest.approx(e.alpha_low, rel=1e-9)
        assert row["alpha_high"] == pytest.approx(e.alpha_high, rel=1e-9)
        assert row["mean_acceptance_length"] == pytest.approx(e.mean_acceptance_length)


def test_survival_frame(day: pd.DataFrame) -> None:
    surv = survival_frame(rows(day, "code"))
    assert list(surv.columns) == [
        "time", "class", "k", "position", "accepted", "survival", "conditional",
    ]  # fmt: skip
    assert len(surv) == 4 * len(rows(day, "code"))
    pooled = surv.groupby("position")["survival"].median()
    for pos, value in pooled.items():
        assert value == pytest.approx(0.7 ** int(pos), abs=0.03)
    first = surv[surv["position"] == 1]
    assert np.allclose(first["survival"], first["conditional"])


def test_chunked_fetch_equals_one_request(client: PrometheusClient, day: pd.DataFrame) -> None:
    calls: list[tuple[int, int]] = []
    chunked = prometheus_counters(
        client, T0 + STEP, END, step=STEP, max_points=50,
        progress=lambda done, total, _: calls.append((done, total)),
    )  # fmt: skip
    assert len(calls) == math.ceil(len(rows(day, "code")) / 50)
    assert calls[-1][0] == calls[-1][1]
    assert chunked.attrs["requests"] == 9 * len(calls)
    pd.testing.assert_frame_equal(with_estimates(chunked), day)


def test_column_parse_equals_point_parse(client: PrometheusClient) -> None:
    q = 'sum by (model_name, position) (increase({__name__=~"vllm[:_]spec_decode_num_accepted_tokens_per_pos_total"}[5m]))'  # noqa: E501
    points = client.query_range(q, start=T0, end=END, step=STEP, max_points=100)
    cols = client.query_range_columns(q, start=T0, end=END, step=STEP, max_points=100)
    assert len(points.series) == len(cols.series) > 5
    for p, c in zip(points.series, cols.series, strict=True):
        assert dict(p.labels) == dict(c.labels)
        arr = np.asarray(p.points)
        assert np.array_equal(arr[:, 0], c.times)
        assert np.array_equal(arr[:, 1], c.values)


def test_load_prometheus_for_a_notebook(prom: servers.ManagedProcess) -> None:
    df = load_prometheus(prom.base_url, f"{T0 + HOUR:.0f}..{T0 + 3 * HOUR:.0f}", step="5m")
    wide = df.pivot(index="time", columns="class", values="alpha")
    assert list(wide.columns) == ["chat", "code", "early", "gap", "roll"]
    assert abs(float(wide["code"].median()) - 0.7) < 0.03
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = wide.plot(ylabel="alpha")  # the README's third line
    assert len(ax.get_lines()) == 5
    plt.close("all")


# -- captures and logs -------------------------------------------------------------------------


CAPTURES = [FIXTURES / f"metrics-ngram-{n}" for n in (
    "0-before-load.txt", "1-after-20req.txt", "2-after-40req.txt", "5-final.txt")]  # fmt: skip


def test_capture_counters_are_the_differences() -> None:
    times = [1000.0, 1100.0, 1200.0, 1300.0]
    frame = with_estimates(capture_counters(CAPTURES, times=times))
    snaps = [FileSource(p, instance="capture").collect(t) for p, t in zip(CAPTURES, times)]
    assert list(frame["interval_s"]) == [100.0, 100.0, 100.0]
    for i, row in enumerate(frame.itertuples()):
        (d,) = window_deltas(snaps[i], snaps[i + 1])
        assert row.drafts == d.drafts
        assert row.accepted == d.accepted
        assert row.k == d.k == 4
    assert frame["alpha"].notna().all()
    assert frame["generation_tokens"].notna().all()  # captures carry the context counters


def test_capture_counter_reset() -> None:
    """A capture taken after the server restarted (lower counters) counts from 0."""
    frame = capture_counters([CAPTURES[3], CAPTURES[1]], times=[0.0, 60.0])
    (row,) = frame.itertuples()
    (late,) = FileSource(CAPTURES[1], instance="capture").collect(60.0)
    assert row.drafts == late.drafts
    assert row.restarts >= 1


def test_capture_times_must_differ() -> None:
    with pytest.raises(DataError, match="same time"):
        capture_counters(CAPTURES[:2], times=[5.0, 5.0])


def test_log_counters_one_row_per_line() -> None:
    log = FIXTURES / "server-ngram.log"
    frame = with_estimates(log_counters(log, year=2026))
    lines = [it for it in parse_log_lines(log.read_text().splitlines(), year=2026)]
    assert len(frame) == len(lines) >= 3
    assert list(frame["drafts"]) == [float(it.drafts or 0) for it in lines]
    assert list(frame["accepted"]) == [float(it.accepted) for it in lines]
    assert (frame["k"] == 4).all()
    assert frame["alpha"].between(0.5, 1.0).all()


def test_snapshot_k_change_restarts_the_count() -> None:
    lab = {"engine": "0", "model_name": "m"}

    def snap(t: float, d: float, pos: tuple[float, ...]) -> Snapshot:
        return Snapshot(labels=lab, timestamp=t, drafts=d, draft_tokens=len(pos) * d,
                        accepted=sum(pos), accepted_per_position=pos, k=len(pos))  # fmt: skip

    frame = snapshot_counters(
        [
            snap(0, 100, (80, 60, 40, 20)),
            snap(10, 200, (160, 120, 80, 40)),
            snap(20, 250, (200, 150)),
            snap(30, 300, (240, 180)),
        ]
    )
    assert list(frame["k"]) == [4, 2, 2]
    assert list(frame["drafts"]) == [100.0, 250.0, 50.0]  # k changed: counts from 0
    assert frame["accepted_pos_2"].isna().tolist() == [False, True, True]


# -- specwise export -------------------------------------------------------------------------


def test_export_csv(prom: servers.ManagedProcess, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "series.csv"
    rng = f"{T0 + HOUR:.0f}..{T0 + 7 * HOUR:.0f}"
    status = main(["export", "--prometheus", prom.base_url, "--range", rng, "--step", "5m",
                   "--out", str(out)])  # fmt: skip
    _, err = capsys.readouterr()
    assert status == 0, err
    back = pd.read_csv(out, parse_dates=["time"])
    assert set(back["class"]) == {"code", "chat", "gap", "early", "roll"}
    assert len(back[back["class"] == "code"]) == 6 * 12 + 1
    assert str(back["time"].dtype).startswith("datetime64")
    assert back["time"].dt.tz is not None
    assert {"alpha", "alpha_low", "alpha_high", "mean_acceptance_length",
            "accepted_pos_3", "drafts"} <= set(back.columns)  # fmt: skip
    assert abs(back[back["class"] == "code"]["alpha"].median() - 0.7) < 0.03


def test_export_with_config_classes_and_an_empty_range(
    prom: servers.ManagedProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "specwise.toml"
    cfg.write_text(
        f'[source]\nkind = "prometheus"\nurl = "{prom.base_url}"\n\n'
        '[[classes]]\nname = "fastlane"\nmatch = \'{model_name=~"code|early"}\'\n'
    )
    out = tmp_path / "c.csv"
    rng = f"{T0 + HOUR:.0f}..{T0 + 2 * HOUR:.0f}"
    argv = ["export", "--prometheus", prom.base_url, "--range", rng, "--config", str(cfg),
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    back = pd.read_csv(out)
    assert set(back["class"]) == {"fastlane", "chat", "gap", "roll"}
    fast = back[back["class"] == "fastlane"]
    assert (fast["drafts"] == 5 * (80 + 40 + 60)).all()  # code's two engines and early's
    assert main([*argv, "--force", "--range", "-3650d..-3649d"]) == 0
    _, err = capsys.readouterr()
    assert "no vLLM spec-decode counters" in err
    assert pd.read_csv(out).empty
    assert main(argv) == 1  # exists, no --force
    assert "pass --force" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--range", "nonsense"], "is not START..END"),
        (["--range", "-1h..now", "--out", "x.xlsx"], "x.xlsx"),
        (["--range", "-1h..now", "--step", "0s"], "step"),
        (["--range", "-1h..now", "--out", "/nonexistent-h8/x.csv"], "does not exist"),
    ],
)
def test_export_bad_input_is_one_error_line(
    prom: servers.ManagedProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    args: list[str], message: str,
) -> None:  # fmt: skip
    argv = ["export", "--prometheus", prom.base_url, "--out", str(tmp_path / "o.csv"), *args]
    status = main(argv)
    _, err = capsys.readouterr()
    assert status == 1
    assert err.startswith("Error: ")
    assert message in err
    assert "Traceback" not in err


def test_export_parquet_without_pyarrow_says_how(
    prom: servers.ManagedProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import sys

    monkeypatch.setitem(sys.modules, "pyarrow", None)  # fault injection: pyarrow missing
    out = tmp_path / "s.parquet"
    rng = f"{T0 + HOUR:.0f}..{T0 + 2 * HOUR:.0f}"
    status = main(["export", "--prometheus", prom.base_url, "--range", rng, "--out", str(out)])
    _, err = capsys.readouterr()
    assert status == 1
    assert "pip install specwise[parquet]" in err
    assert not out.exists()


def test_export_parquet(prom: servers.ManagedProcess, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "s.parquet"
    rng = f"{T0 + HOUR:.0f}..{T0 + 2 * HOUR:.0f}"
    assert main(["export", "--prometheus", prom.base_url, "--range", rng, "--out", str(out)]) == 0
    back = pd.read_parquet(out)
    assert str(back["time"].dtype) == "datetime64[ns, UTC]"
    assert set(back["class"]) >= {"code", "chat"}


@st.composite
def short_counts(draw: st.DrawFn) -> tuple[float, float, float, tuple[float, ...]]:
    """Window counts whose drafts averaged fewer than k tokens (an n-gram drafter's)."""
    k = draw(st.integers(1, 6))
    d = float(draw(st.integers(1, 100_000)))
    pos = sorted((float(draw(st.integers(0, int(d)))) for _ in range(k)), reverse=True)
    a = sum(pos)
    t = float(draw(st.integers(int(a), int(k * d))))  # accepted <= drafted <= k x drafts
    return d, t, a, tuple(pos)


@settings(max_examples=200, deadline=None)
@given(st.lists(short_counts(), min_size=1, max_size=6))
def test_frame_estimates_are_the_estimators(
    rows: list[tuple[float, float, float, tuple[float, ...]]],
) -> None:
    """Full and short drafts alike: each row's alpha and interval are estimate_counts'."""
    k_max = max(len(p) for *_, p in rows)
    data = []
    for i, (d, t, a, pos) in enumerate(rows):
        row: dict[str, object] = {"time": float(i), "class": "c", "drafts": d,
                                  "draft_tokens": t, "accepted": a}  # fmt: skip
        row.update({f"accepted_pos_{j}": p for j, p in enumerate(pos)})
        data.append(row)
    frame = with_estimates(snapshot_frame_from(data, k_max))
    cfg = EstimatorConfig(min_drafts=0)
    for (d, t, a, pos), got in zip(rows, frame.itertuples(), strict=True):
        e = estimate_counts("c", WindowCounts(d, t, a, pos, len(pos)), now=0.0, config=cfg)
        if e.alpha is None:
            assert math.isnan(got.alpha)
            continue
        assert got.alpha == pytest.approx(e.alpha, rel=1e-9, abs=1e-12)
        assert got.alpha_low == pytest.approx(e.alpha_low, rel=1e-9, abs=1e-12)
        assert got.alpha_high == pytest.approx(e.alpha_high, rel=1e-9, abs=1e-12)


def snapshot_frame_from(rows: list[dict[str, object]], k_max: int) -> pd.DataFrame:
    """A counters frame from plain rows (what every source's frame goes through)."""
    from specwise.reporting.frames import _finish

    frame = _finish(pd.DataFrame(rows))
    assert len(position_columns(frame)) == k_max
    return frame


# -- specwise report writes its frames -------------------------------------------------------


def test_report_writes_the_frames_it_used(
    prom: servers.ManagedProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    before = f"{T0 + HOUR:.0f}..{T0 + 11 * HOUR:.0f}"
    after = f"{T0 + 13 * HOUR:.0f}..{T0 + 23 * HOUR:.0f}"
    argv = ["report", "--prometheus", prom.base_url, "--before", before, "--after", after,
            "--step", "5m", "--cost", "ngram", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    data = json.loads((out / "report.json").read_text())
    series = pd.read_csv(out / "data" / "series-after.csv", parse_dates=["time"])
    # the per-step frame itself: counters, k per row, alpha with its interval
    assert {"drafts", "accepted_pos_1", "k", "alpha_low", "alpha_high", "mixed_k"} <= set(
        series.columns
    )
    chat = series[series["class"] == "chat"]
    assert set(chat["k"]) == {2}  # chat's k changed to 2 at 12 h, before the after window
    # report.json's alpha over time is this frame's alpha, step for step
    code = series[series["class"] == "code"].set_index("time")["alpha"]
    js = data["after"]["alpha_over_time"]["code"]
    by_time = dict(zip(js["times"], js["alphas"], strict=True))
    for t, alpha in code.items():
        assert by_time[t.timestamp()] == pytest.approx(alpha, rel=1e-12)
    classes = pd.read_csv(out / "data" / "classes.csv")
    row = classes[(classes["class"] == "code") & (classes["window"] == "after")].iloc[0]
    (code_json,) = [c for c in data["classes"] if c["class"] == "code"]
    assert row["alpha"] == pytest.approx(code_json["after"]["alpha"], rel=1e-12)
    assert not classes[(classes["class"] == "early") & (classes["window"] == "after")].iloc[0][
        "present"
    ]
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for name in ("classes", "survival", "series-before", "series-after"):
        assert f"(data/{name}.csv)" in md
        assert f'href="data/{name}.csv"' in html


def test_report_alpha_over_time_through_a_k_change(client: PrometheusClient) -> None:
    """chat goes from k = 4 to k = 2 at 12 h, inside the window: the report's alpha over time
    keeps the true 0.5 on both sides (one k for the whole chunk, as before the frames,
    priced the k = 2 steps with two empty positions: about 0.75)."""
    window = TimeRange(T0 + 6 * HOUR, T0 + 23 * HOUR)
    chat = alpha_over_time(PrometheusSource(client), window, step=STEP)["chat"]
    times, alphas = np.asarray(chat.times), np.asarray(chat.alphas)
    change = T0 + 12 * HOUR
    for part in (alphas[times < change], alphas[times >= change + STEP]):
        assert len(part) > 50
        assert abs(float(np.nanmedian(part)) - 0.5) < 0.03
