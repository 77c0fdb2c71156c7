"""Tracked files speak to the project's users: no path of the machine they were written on, and no
reference to documents outside the repository (code comments cite ``docs/``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# absolute paths of a developer machine: home folders, the root's home, work folders, lock files in /tmp
MACHINE_PATH = re.compile(r"(?<![\w.])(/root/|/home/\w+|/work/\w|/Users/\w+|/tmp/[\w./-]*\.lock)")
# documents that live outside the repository
OUTSIDE_DOCUMENT = re.compile(r"DESIGN(\.md| ?§)|\.\./shared/DESIGN|\b[Ii]ssue ?#\d+|\bissue \d+\b")


def tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    files = []
    for name in out.splitlines():
        path = REPO / name
        if path.is_file() and path.suffix not in {".png", ".jpg", ".parquet", ".ubj"}:
            files.append(path)
    return files


def offending_lines(pattern: re.Pattern, files: list[Path]) -> list[str]:
    found = []
    for path in files:
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for no, line in enumerate(text.splitlines(), 1):
            if pattern.search(line) and path.name != Path(__file__).name:
                found.append(f"{path.relative_to(REPO)}:{no}: {line.strip()[:120]}")
    return found


def test_patterns_catch_what_they_name():
    assert MACHINE_PATH.search("flock /tmp/heavy.lock python -m x")
    assert MACHINE_PATH.search("--plan-root /work/atha_run")
    assert MACHINE_PATH.search("see /root/.cache")
    assert not MACHINE_PATH.search("--dataset ../shared/data/atha_chr1 --out data/run")
    assert OUTSIDE_DOCUMENT.search("(DESIGN §4)") and OUTSIDE_DOCUMENT.search("see issue #6")
    assert not OUTSIDE_DOCUMENT.search("docs/architecture.md#data-contract")


def test_no_tracked_file_names_a_machine_path():
    found = offending_lines(MACHINE_PATH, tracked_text_files())
    assert not found, "machine paths in tracked files:\n" + "\n".join(found)


def test_no_tracked_file_cites_a_document_outside_the_repository():
    found = offending_lines(OUTSIDE_DOCUMENT, tracked_text_files())
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)
