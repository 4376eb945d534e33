"""The README and docs/: the README stays a user's guide of at most 300 lines, and every
file the docs cite exists in the repository (none outside it)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("ebjdat", "docs", "examples", "scripts", "tests", "bench", "csrc", "kernels", "experiments", ".ci")


def test_readme_is_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_every_cited_file_exists():
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for path in re.findall(r"`((?:%s)/[\w./-]+)`" % "|".join(map(re.escape, TOP)), text):
            path = path.rstrip(".")
            if "<" in path or "*" in path:
                continue
            if not (ROOT / path).exists():
                missing.append(f"{doc.name}: {path}")
        for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
            if not (doc.parent / img).exists():
                missing.append(f"{doc.name}: {img}")
    assert not missing, missing


def test_no_file_outside_the_repository_is_cited():
    for doc in DOCS:
        text = doc.read_text()
        for name in ("REFERENCE.md", "DESIGN.md"):
            assert name not in text, (doc.name, name)
