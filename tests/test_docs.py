"""Every citation of the wire contract resolves to a section of docs/contract.md."""

from __future__ import annotations

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "docs" / "contract.md"
# Tool caches, the virtualenv, build output and benchmark results: nothing written by hand.
_PRUNED = {".git", ".venv", ".hypothesis", "node_modules", "__pycache__", "build"}
_PRUNED_PATHS = {"bench/results"}
_LARGEST_TEXT_BYTES = 1_000_000
_SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)
# `docs/contract.md §3`, or a range such as `docs/contract.md §1-§3`.
_CITATION = re.compile(r"contract\.md\W{0,2}\s*§\s*(\d+)(?:\s*-\s*§?\s*(\d+))?")
# A section sign after the bare word, which names no document a reader can open.
_BARE_CITATION = re.compile(r"\bcontract\s+§", re.IGNORECASE)
# A path that leaves the repository, which no reader of it can follow.
_OUTSIDE = re.compile(r"\.\./shared\b")


def _kept(folder: pathlib.Path, name: str) -> bool:
    """Whether a folder holds files of the repository itself."""
    if name in _PRUNED or name.endswith(".egg-info"):
        return False
    if name.startswith(".") and name != ".ci":  # caches of tools, and git's own
        return False
    return (folder / name).relative_to(ROOT).as_posix() not in _PRUNED_PATHS


def _texts() -> dict[str, str]:
    """Every text file of the repository by its relative path."""
    texts: dict[str, str] = {}
    for folder, dirs, files in os.walk(ROOT):
        here = pathlib.Path(folder)
        dirs[:] = [name for name in dirs if _kept(here, name)]
        for name in files:
            path = here / name
            if path.stat().st_size > _LARGEST_TEXT_BYTES:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue  # a binary file
            if "\x00" not in text:
                texts[path.relative_to(ROOT).as_posix()] = text
    return texts


def _where(name: str, text: str, offset: int) -> str:
    return f"{name}:{text.count(chr(10), 0, offset) + 1}"


def test_every_cited_section_of_the_contract_exists() -> None:
    sections = {int(number) for number in _SECTION.findall(CONTRACT.read_text(encoding="utf-8"))}
    assert sections, "docs/contract.md has no numbered sections"
    cited, missing = 0, []
    for name, text in _texts().items():
        for match in _CITATION.finditer(text):
            first = int(match.group(1))
            last = int(match.group(2) or first)
            cited += 1
            missing += [
                f"{_where(name, text, match.start())}: §{number}"
                for number in range(first, last + 1)
                if number not in sections
            ]
    assert cited, "no citation of docs/contract.md found: is the pattern still right?"
    assert not missing, f"sections not in docs/contract.md: {missing}"


def test_no_file_cites_a_section_without_naming_the_document() -> None:
    bare = [
        _where(name, text, match.start())
        for name, text in _texts().items()
        for match in _BARE_CITATION.finditer(text)
    ]
    assert not bare, f"cite docs/contract.md by name: {bare}"


def test_no_file_points_outside_the_repository() -> None:
    outside = [
        _where(name, text, match.start())
        for name, text in _texts().items()
        for match in _OUTSIDE.finditer(text)
    ]
    assert not outside, f"paths outside the repository: {outside}"


def test_the_readme_links_the_contract() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/contract.md)" in readme
