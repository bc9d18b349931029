"""Collectors: pre-filtered parsing vs a full parse, and queries per tick vs fleet size.

Run: .venv/bin/python bench/bench_collectors.py [--repeat N]

1. On the real vLLM 0.32 /metrics page in tests/fixtures, ``parse_exposition`` (pre-filter
   to the spec-decode families, then prometheus_client's parser) against prometheus_client
   parsing the whole page and picking the same samples: the ratio, and that both read
   identical values.
2. A real Prometheus (Debian's, on 127.0.0.1) backfilled with 10 and with 1,000 simulated
   engines: the queries PrometheusSource sends per tick for each fleet, and its sums.
Prints ratios and counts from the same run; never asserts wall-clock times, but exits 1 if
values differ, the speed-up is under 10x, the query counts differ, or Prometheus or
promtool is missing (a benchmark that measured nothing has not passed).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specwise.collectors.exposition import parse_exposition  # noqa: E402
from specwise.collectors.prometheus import PrometheusClient, PrometheusSource  # noqa: E402
from tests import servers  # noqa: E402

PAGE = ROOT / "tests" / "fixtures" / "vllm" / "metrics-ngram-5-final.txt"
SPEC = {
    "vllm:spec_decode_num_drafts_total": "drafts",
    "vllm:spec_decode_num_draft_tokens_total": "draft_tokens",
    "vllm:spec_decode_num_accepted_tokens_total": "accepted",
}


def full_parse(text: str) -> dict[str, object]:
    """Baseline: parse every family of the page, keep the spec-decode counters."""
    out: dict[str, object] = {}
    per_pos: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter":
            continue
        for s in family.samples:
            if s.name in SPEC:
                out[SPEC[s.name]] = s.value
            elif s.name == "vllm:spec_decode_num_accepted_tokens_per_pos_total":
                per_pos[int(s.labels["position"])] = s.value
    out["per_pos"] = tuple(per_pos[i] for i in sorted(per_pos))
    return out


def filtered_parse(text: str) -> dict[str, object]:
    [snap] = parse_exposition(text, timestamp=0.0)
    return {
        "drafts": snap.drafts,
        "draft_tokens": snap.draft_tokens,
        "accepted": snap.accepted,
        "per_pos": snap.accepted_per_position,
    }


def best_of(fn: Callable[[str], object], text: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - t)
    return best


def fleet_history(engines: int, t0: float) -> str:
    series: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[float, float]]] = {}
    for e in range(engines):
        base = {"engine": str(e % 8), "instance": f"10.0.{e // 250}.{e % 250}:8000",
                "job": "vllm", "model_name": f"model-{e % 3}"}  # fmt: skip
        for n, name in enumerate(("num_drafts", "num_draft_tokens", "num_accepted_tokens")):
            key = (f"vllm:spec_decode_{name}_total", tuple(sorted(base.items())))
            series[key] = [(t0 + 15 * i, float(i * (40 - 10 * n))) for i in range(5)]
        for pos in range(4):
            labels = tuple(sorted({**base, "position": str(pos)}.items()))
            key = ("vllm:spec_decode_num_accepted_tokens_per_pos_total", labels)
            series[key] = [(t0 + 15 * i, float(i * (4 - pos))) for i in range(5)]
    return servers.openmetrics_text(series)


def queries_per_tick(engines: int, work: Path, t0: float) -> tuple[int, float]:
    blocks = servers.backfill_openmetrics(
        fleet_history(engines, t0), work / f"blocks-{engines}", workdir=work / f"bf-{engines}"
    )
    prom = servers.start_prometheus(work / f"prom-{engines}", blocks=blocks)
    try:
        with requests.Session() as session:
            client = PrometheusClient(prom.base_url, session=session)
            source = PrometheusSource(client)
            deltas = source.increase(t0 + 60, 60)
            return client.requests_sent, sum(d.draft_tokens for d in deltas)
    finally:
        prom.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=200, help="timing repeats (default 200)")
    args = parser.parse_args()
    failed = False

    text = PAGE.read_text()
    base, fast = full_parse(text), filtered_parse(text)
    t_full = best_of(full_parse, text, args.repeat)
    t_fast = best_of(filtered_parse, text, args.repeat)
    ratio = t_full / t_fast
    print(f"real vLLM page: {len(text.splitlines())} lines, {len(text) / 1024:.1f} KB")
    print(f"  prometheus_client full parse:  {t_full * 1e3:8.3f} ms")
    print(f"  pre-filter + parse (specwise): {t_fast * 1e3:8.3f} ms")
    print(f"  speed-up: {ratio:.1f}x  (target >= 10x)")
    print(f"  identical values: {base == fast}  {fast}")
    failed |= base != fast or ratio < 10

    missing = [b for b in ("prometheus", "promtool") if shutil.which(b) is None]
    if missing:
        print(
            f"queries per tick: FAILED, {', '.join(missing)} not installed "
            "(Debian: apt-get install --no-install-recommends prometheus)",
            file=sys.stderr,
        )
        return 1
    t0 = (int(time.time()) // 3600 - 3) * 3600.0
    with tempfile.TemporaryDirectory() as tmp:
        counts = {}
        for engines in (10, 1000):
            n, total = queries_per_tick(engines, Path(tmp), t0)
            counts[engines] = n
            print(f"queries per tick, {engines:>5} engines: {n}  (sum of draft tokens {total:g})")
    print(f"  same count: {counts[10] == counts[1000]}")
    failed |= counts[10] != counts[1000]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
