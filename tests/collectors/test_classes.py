"""Workload classes from label matchers."""

from __future__ import annotations

import pytest

from specwise.collectors.classes import ClassConfig, Matcher, WorkloadClass, parse_selector
from specwise.errors import ConfigError


def test_parse_selector_all_operators() -> None:
    ms = parse_selector('{job="chat", model_name=~"llama.*",ns!="dev",x!~"a|b",q="say \\"hi\\""}')
    assert [(m.label, m.op, m.value) for m in ms] == [
        ("job", "=", "chat"),
        ("model_name", "=~", "llama.*"),
        ("ns", "!=", "dev"),
        ("x", "!~", "a|b"),
        ("q", "=", 'say "hi"'),
    ]
    assert ms[4].promql() == 'q="say \\"hi\\""'


def test_regex_is_anchored_like_prometheus() -> None:
    m = Matcher("model_name", "=~", "llama")
    assert m.matches({"model_name": "llama"})
    assert not m.matches({"model_name": "llama-3"})
    assert Matcher("x", "!~", "a.*").matches({})
    assert Matcher("x", "=", "").matches({})


def test_first_match_wins_and_default_groups_by_model() -> None:
    cfg = ClassConfig.from_mapping(
        {"code": '{job="code"}', "chat": '{model_name=~"llama.*"}'}, group_by=["model_name"]
    )
    assert cfg.classify({"job": "code", "model_name": "llama-3"}) == {"class": "code"}
    assert cfg.classify({"job": "x", "model_name": "llama-3"}) == {"class": "chat"}
    assert cfg.classify({"model_name": "qwen"}) == {"class": "qwen", "model_name": "qwen"}
    assert cfg.by_labels() == ("job", "model_name")
    assert ClassConfig().by_labels() == ("model_name",)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: parse_selector("{job=chat}"), "cannot be read"),
        (lambda: Matcher("x", "=~", "("), "does not compile"),
        (lambda: Matcher("bad-name", "=", "v"), "not a valid Prometheus label"),
        (lambda: ClassConfig(group_by=("class",)), "group_by label"),
        (
            lambda: ClassConfig(classes=(WorkloadClass("a", ()), WorkloadClass("a", ()))),
            "defined twice",
        ),
    ],
)
def test_config_errors(build: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build()  # type: ignore[operator]


def test_classified_deltas_keep_their_class_in_sum_by_class() -> None:
    """The Prometheus source's rows are already per class: summing them again must not
    classify ``{class="code"}`` against the matchers (it matches none: class "")."""
    from specwise.collectors.deltas import sum_by_class
    from specwise.collectors.snapshot import CounterDelta

    classes = ClassConfig.from_mapping({"code": '{model_name="code"}'})
    pre = CounterDelta({"class": "code"}, 0.0, 60.0, 10.0, 30.0, 20.0, (9.0, 7.0, 4.0), 3,
                       classified=True)  # fmt: skip
    raw = CounterDelta({"model_name": "code", "engine": "0"}, 0.0, 60.0, 10.0, 30.0, 20.0)
    (a,) = sum_by_class([pre], classes)
    (b,) = sum_by_class([raw], classes)
    assert dict(a.labels) == dict(b.labels) == {"class": "code"}
    assert a.classified
    assert a.accepted_per_position == (9.0, 7.0, 4.0)
