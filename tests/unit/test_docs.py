"""The documentation holds together: its links lead somewhere, and its policy is valid.

Every relative link in README.md, docs/*.md and ansible/README.md must name a
file that exists and, when it points into a Markdown page (``page.md#part``),
a heading of that page, with GitHub's anchors.  Moving a page cannot leave a
dead link behind.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from sipshield.core.policy import parse_policy
from tests.conftest import REPO

PAGES = sorted([REPO / "README.md", REPO / "ansible" / "README.md", *REPO.glob("docs/*.md")])
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def prose(text: str) -> str:
    """The page without code, where a bracket is not a link."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings (duplicates numbered -1, -2, ...)."""
    found: set[str] = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def relative_links(page: Path) -> list[str]:
    return [
        link
        for link in _LINK.findall(prose(page.read_text()))
        if not re.match(r"^[a-z][a-z0-9+.-]*:", link)  # http:, https:, mailto:
    ]


def test_the_pages_exist_and_have_links():
    assert (REPO / "ansible" / "README.md").is_file()
    assert not (REPO / "docs" / "ansible.md").exists()  # moved to ansible/README.md
    assert sum(len(relative_links(page)) for page in PAGES) > 50


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path):
    dead = []
    for link in relative_links(page):
        target, _, anchor = unquote(link).partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            dead.append(f"{link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            dead.append(f"{link}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert dead == []


def test_the_anchors_follow_githubs_rules(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# What it protects against, and why MPLS does not\n"
        "## `sipshield dropin check`: exit 0/2\n## Notes\n## Notes\n"
        "```\n# not a heading\n```\n"
    )
    assert anchors(page) == {
        "what-it-protects-against-and-why-mpls-does-not",
        "sipshield-dropin-check-exit-02",
        "notes",
        "notes-1",
    }


def test_the_readme_policy_is_the_starter_file_and_is_valid():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A policy to start with", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.DOTALL)
    starter = REPO / "kamailio-cfg" / "policy.monitor.yaml"
    assert block == starter.read_text()
    assert len(block.splitlines()) == 10
    policy = parse_policy(block, "README.md")
    assert [(m.name, m.mode) for m in policy.modules] == [
        ("validation", "monitor"),
        ("flood", "monitor"),
        ("scanner", "monitor"),
        ("brute_force", "monitor"),
    ]


def test_every_page_of_the_manual_is_linked_from_the_readme():
    readme = set(relative_links(REPO / "README.md"))
    unlinked = [
        f"docs/{page.name}" for page in REPO.glob("docs/*.md") if f"docs/{page.name}" not in readme
    ]
    assert unlinked == []
