"""Every reference resolves inside the repository: no file points at notes outside a clone,
and every link to docs/dependencies.md names a section the page has."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = "docs/dependencies.md"
# written in pieces so that this file does not match itself
SHARED, STACK, TRAP = "../" + "shared", "STACK" + ".md", "trap"
OUTSIDE = re.compile("|".join([re.escape(SHARED), re.escape(STACK), rf"\b{TRAP} \d+\b"]))
LINK = re.compile(re.escape(DOC) + r"#([\w-]+)")


def tracked_text_files(root: Path) -> Dict[str, str]:
    """path -> text of every file git tracks (binary files left out)."""
    names = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    out = {}
    for name in filter(None, names):
        path = root / name
        if not path.is_file():
            continue            # deleted in the work tree, not yet committed
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        try:
            out[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
    return out


def outside_references(files: Dict[str, str]) -> List[str]:
    return [f"{name}:{i}: {m.group(0)!r}" for name, text in files.items()
            for i, line in enumerate(text.splitlines(), 1) for m in OUTSIDE.finditer(line)]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(files: Dict[str, str], doc_text: str) -> List[str]:
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", doc_text, re.M)}
    return [f"{name}:{i}: #{m.group(1)} is no section of {DOC}" for name, text in files.items()
            for i, line in enumerate(text.splitlines(), 1) for m in LINK.finditer(line)
            if m.group(1) not in anchors]


@pytest.fixture(scope="module")
def files():
    try:
        return tracked_text_files(ROOT)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout ({e})")


def test_no_file_points_outside_the_repo(files):
    assert DOC in files and len(files) > 50
    found = outside_references(files)
    assert not found, "references to notes a clone does not have:\n" + "\n".join(found)


def test_links_to_the_dependencies_page_name_its_sections(files):
    links = [m for text in files.values() for m in LINK.finditer(text)]
    assert links, f"nothing links to a section of {DOC}"
    bad = broken_links(files, files[DOC])
    assert not bad, "\n".join(bad)


def test_the_checks_can_fail():
    files = {"a.py": f"x = 1\n# see {SHARED}/notes\n", "b.md": f"as {STACK} says",
             "c.py": f"# {TRAP} 4 again", "d.py": f"# {DOC}#zlib-and-import-order, {DOC}#nowhere"}
    assert outside_references(files) == [f"a.py:2: {SHARED!r}", f"b.md:1: {STACK!r}", f"c.py:1: '{TRAP} 4'"]
    assert broken_links(files, "# Title\n### zlib and import order\n") == [
        f"d.py:1: #nowhere is no section of {DOC}"]
    assert github_anchor("pkg_resources and setuptools") == "pkg_resources-and-setuptools"
    assert github_anchor("Paddle 3 and PaddleSlim") == "paddle-3-and-paddleslim"
