"""docs/: every citation in the code points at a section that exists, every test a document
names exists, and nothing cites a file the repository does not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Where code and scripts live (the places that cite the docs).
CITING = [ROOT / "mailer", ROOT / "workers", ROOT / "scripts", ROOT / "tests"]
_CITATION = re.compile(r"docs/([a-z-]+\.md)(?: §(\d+))?")


def _sources() -> list[Path]:
    files = [p for folder in CITING for p in folder.rglob("*") if p.is_file()]
    return [
        p
        for p in files
        if p.suffix in ("", ".py", ".md", ".html", ".txt") and "__pycache__" not in p.parts
    ]


def _sections(doc: Path) -> set[str]:
    return set(re.findall(r"^## (\d+)\.", doc.read_text(), re.M))


def test_every_citation_of_the_docs_names_a_file_and_section_that_exist() -> None:
    broken = []
    for path in _sources():
        for name, section in _CITATION.findall(path.read_text(errors="replace")):
            doc = DOCS / name
            if not doc.is_file() or (section and section not in _sections(doc)):
                broken.append(f"{path.relative_to(ROOT)}: docs/{name} §{section}")
    assert broken == []


def test_nothing_cites_documents_outside_the_repository() -> None:
    outside = re.compile(r"\b(STANDARDS|PERF|DESIGN|STYLE|WEBAPP)\.md\b")
    cited = [
        str(p.relative_to(ROOT))
        for p in _sources()
        if outside.search(p.read_text(errors="replace"))
    ]
    assert cited == []


def test_every_test_a_document_names_exists() -> None:
    defined = set(
        re.findall(
            r"def (test_\w+)", "\n".join(p.read_text() for p in (ROOT / "tests").glob("*.py"))
        )
    )
    files = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    missing = [
        f"{doc.name}: {name}"
        for doc in DOCS.glob("*.md")
        for name in re.findall(r"`(test_\w+)`", doc.read_text())
        if name not in defined and name not in files
    ]
    assert missing == []
