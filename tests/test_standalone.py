"""The repository stands alone: a clone with nothing beside it holds every file its tests read
and its code and documents cite.  ``make bare-clone`` proves it end to end (a fresh clone passes
``make test``); these checks name the line that would break it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import DEFAULT_VECTORS, ROOT, all_vectors

FACTS = ROOT / "docs" / "uni-ts-11291.md"
# a checkout beside this one, where the vectors and the facts used to be (spelt in two pieces
# so that this file does not cite it)
OUTSIDE = re.compile("\\.\\./" + "shared|" + "shared/" + "(spec|design)")
OLD_CITATION = re.compile(r"\bspec(?:'s)? (?:sections?|§)|\[U in the spec\]|\bspec \d")
SECTION = re.compile(r"§(\d+(?:\.\d+)?)")


def repository_files() -> list[Path]:
    """The files a clone gets (and the new ones not yet committed), else every file but the
    virtual environment and the build."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "build", ".git", "__pycache__", ".hypothesis"}
        return [
            p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def text_lines() -> list[tuple[str, int, str]]:
    lines = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(ROOT).as_posix()
        lines += [(rel, n, line) for n, line in enumerate(text.splitlines(), 1)]
    return lines


def test_nothing_reads_or_cites_a_checkout_beside_the_repository() -> None:
    offenders = [
        f"{rel}:{n}: {line.strip()}" for rel, n, line in text_lines() if OUTSIDE.search(line)
    ]
    assert offenders == []


def test_the_vectors_are_in_the_repository() -> None:
    assert DEFAULT_VECTORS.is_relative_to(ROOT) and DEFAULT_VECTORS.is_file()
    assert DEFAULT_VECTORS in repository_files()
    assert len(all_vectors()) == 82


def test_citations_of_the_facts_name_sections_of_docs_uni_ts_11291() -> None:
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\. ", FACTS.read_text(), re.M))
    old = [
        f"{rel}:{n}: {line.strip()}" for rel, n, line in text_lines() if OLD_CITATION.search(line)
    ]
    assert old == [], "cite docs/uni-ts-11291.md §N instead"
    cited = {
        (f"{rel}:{n}", section)
        for rel, n, line in text_lines()
        if "uni-ts-11291.md" in line and rel != "tests/vectors/vectors.json"
        for section in SECTION.findall(line)
    }
    assert cited, "no citation found: the pattern is broken"
    assert sorted(c for c in cited if c[1] not in headings) == []
