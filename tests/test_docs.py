"""Every ``docs/<file>.md#anchor`` the tree cites resolves to a heading of that file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/([a-z0-9-]+\.md)(?:#([a-z0-9-]+))?")
SEARCHED = ["specwise", "tests", "bench", "e2e", "config", "docs", "scripts"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _citations() -> list[tuple[str, str, str | None]]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    for folder in SEARCHED:
        files += [
            p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".yml", ".toml"}
        ]
    found = []
    for path in files:
        if ".cache" in path.parts:
            continue
        for m in CITATION.finditer(path.read_text(encoding="utf-8")):
            found.append((str(path.relative_to(ROOT)), m.group(1), m.group(2)))
    return found


def test_the_tree_cites_the_docs() -> None:
    cited = {doc for _, doc, _ in _citations()}
    assert {"design.md", "vllm-metrics.md", "runbook.md"} <= cited


@pytest.mark.parametrize(("where", "doc", "anchor"), _citations())
def test_citation_resolves(where: str, doc: str, anchor: str | None) -> None:
    path = ROOT / "docs" / doc
    assert path.is_file(), f"{where} cites docs/{doc}, which does not exist"
    if anchor is None:
        return
    headings = [
        line.lstrip("#").strip() for line in path.read_text().splitlines() if line.startswith("#")
    ]
    anchors = {_slug(h) for h in headings}
    assert anchor in anchors, (
        f"{where} cites docs/{doc}#{anchor}; its headings give {sorted(anchors)}"
    )
