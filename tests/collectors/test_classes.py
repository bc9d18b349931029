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
