"""Workload classes: label matchers -> class name (default: one class per ``model_name``).

The same ``ClassConfig`` groups Snapshots client-side and builds the ``by (...)`` clause of the
PromQL the Prometheus collector sends, so server-side sums carry every label a matcher needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from specwise.errors import ConfigError

if TYPE_CHECKING:
    from specwise.config import SpecwiseConfig

__all__ = [
    "CLASS_LABEL",
    "ClassConfig",
    "Matcher",
    "WorkloadClass",
    "default_selector",
    "parse_selector",
    "resolve_classes",
]

#: The label naming a workload class in every grouped record.
CLASS_LABEL = "class"

MatchOp = Literal["=", "!=", "=~", "!~"]

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_MATCHER = re.compile(
    r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|\Z)'
)


@dataclass(frozen=True)
class Matcher:
    """One PromQL-style label matcher; regexes are fully anchored, as in Prometheus."""

    label: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _LABEL_NAME.match(self.label):
            raise ConfigError(
                f"Label name {self.label!r} in a class matcher is not a valid Prometheus label "
                "name; use letters, digits and underscores.",
                field="classes",
            )
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", re.compile(self.value))
            except re.error as exc:
                raise ConfigError(
                    f"Regex {self.value!r} for label {self.label!r} does not compile ({exc}); "
                    "fix the class matcher.",
                    field="classes",
                ) from exc

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfies this matcher (a missing label is the empty string)."""
        actual = labels.get(self.label, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self._regex is not None
        found = self._regex.fullmatch(actual) is not None
        return found if self.op == "=~" else not found

    def promql(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.label}{self.op}"{escaped}"'


def parse_selector(text: str) -> tuple[Matcher, ...]:
    """Parse ``{job="chat",model_name=~"llama.*"}`` (braces optional) into matchers."""
    body = text.strip()
    if body.startswith("{") and body.endswith("}"):
        body = body[1:-1]
    matchers: list[Matcher] = []
    pos = 0
    while pos < len(body) and body[pos:].strip():
        m = _MATCHER.match(body, pos)
        if m is None:
            raise ConfigError(
                f"Class selector {text!r} cannot be read at {body[pos:]!r}; write matchers like "
                '{job="chat", model_name=~"llama.*"}.',
                field="classes",
            )
        raw = m.group(3)
        value = re.sub(r"\\(.)", r"\1", raw)
        op: MatchOp = m.group(2)  # type: ignore[assignment]
        matchers.append(Matcher(m.group(1), op, value))
        pos = m.end()
    return tuple(matchers)


@dataclass(frozen=True)
class WorkloadClass:
    """A named class: a series belongs to it when every matcher matches."""

    name: str
    matchers: tuple[Matcher, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class ClassConfig:
    """Ordered classes (first match wins); series no class matches are grouped by ``group_by``.

    ``classify`` returns the labels that identify a series' class: ``{"class": name}`` for a
    configured class, else ``{"class": "<v1>/<v2>", <group_by labels>...}`` (by default the
    served model name).
    """

    classes: tuple[WorkloadClass, ...] = ()
    group_by: tuple[str, ...] = ("model_name",)

    def __post_init__(self) -> None:
        for name in self.group_by:
            if not _LABEL_NAME.match(name) or name == CLASS_LABEL:
                raise ConfigError(
                    f"group_by label {name!r} is not usable; give Prometheus label names other "
                    f"than {CLASS_LABEL!r}.",
                    field="group_by",
                )
        seen: set[str] = set()
        for cls in self.classes:
            if cls.name in seen:
                raise ConfigError(
                    f"Class name {cls.name!r} is defined twice; give each class one entry.",
                    field="classes",
                )
            seen.add(cls.name)

    @classmethod
    def from_mapping(
        cls, classes: Mapping[str, str], *, group_by: Iterable[str] = ("model_name",)
    ) -> ClassConfig:
        """Build from ``{"chat": '{job="chat"}', ...}`` (order kept: first match wins)."""
        return cls(
            classes=tuple(
                WorkloadClass(name, parse_selector(sel)) for name, sel in classes.items()
            ),
            group_by=tuple(group_by),
        )

    def by_labels(self) -> tuple[str, ...]:
        """Label names a server-side ``sum by (...)`` must keep to classify its rows."""
        names = set(self.group_by)
        for c in self.classes:
            names.update(m.label for m in c.matchers)
        return tuple(sorted(names))

    def classify(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The class labels of one raw series (see the class docstring).

        Only for a source's raw labels: records a source already classified (the Prometheus
        source's per-class rows, ``classified=True``) keep their labels as they are.
        """
        for c in self.classes:
            if c.matches(labels):
                return {CLASS_LABEL: c.name}
        values = {g: labels.get(g, "") for g in self.group_by}
        return {CLASS_LABEL: "/".join(values.values()), **values}


def default_selector(name: str) -> str:
    """The selector of a declared class without ``match``: its served model name."""
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{model_name="{escaped}"}}'


def resolve_classes(config: SpecwiseConfig) -> ClassConfig:
    """The one resolver of ``[[classes]]`` and ``[source] group_by``, used by every command
    (``run``, ``recommend``, ``report``, ``rules``): declared classes in order (first match
    wins), a class without ``match`` matching its ``model_name``; other series grouped by
    ``group_by``."""
    classes = tuple(
        WorkloadClass(c.name, parse_selector(c.match or default_selector(c.name)))
        for c in config.classes
    )
    return ClassConfig(classes=classes, group_by=tuple(config.source.group_by))
