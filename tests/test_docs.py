"""docs/robustness.md and the tests agree row for row: every row names tests, and every named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "robustness.md"
TEST_ID = re.compile(r"`(test_\w+\.py)::(test_\w+)`")
# Files whose every test is about bad input, interruption, determinism or safety: each must be in a row.
ROBUSTNESS_FILES = ("test_checks.py", "test_cli.py", "test_security.py", "test_robustness.py")


def _tests_in(file: str) -> set[str]:
    tree = ast.parse((REPO / "tests" / file).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def _table_rows(text: str) -> list[str]:
    """The data rows of every Markdown table (header and separator rows left out)."""
    rows, previous = [], ""
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            if previous.startswith("|"):
                rows.append(line)
        previous = line if line.startswith("|") else ""
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line):
            previous = line
    return rows


def test_every_row_names_tests_that_exist() -> None:
    text = DOC.read_text()
    rows = _table_rows(text)
    assert len(rows) > 60
    missing_ids, rows_without_tests = [], []
    for row in rows:
        last_cell = row.rstrip().rstrip("|").rsplit("|", 1)[-1]
        ids = TEST_ID.findall(last_cell)
        if not ids:
            rows_without_tests.append(row[:80])
        for file, name in ids:
            if not (REPO / "tests" / file).is_file() or name not in _tests_in(file):
                missing_ids.append(f"{file}::{name}")
    assert rows_without_tests == [], "rows that name no test"
    assert missing_ids == [], "tests named in docs/robustness.md that do not exist"
    named = set(TEST_ID.findall(text))
    for file in ROBUSTNESS_FILES:
        absent = sorted(name for name in _tests_in(file) if (file, name) not in named)
        assert absent == [], f"tests of {file} missing from docs/robustness.md"


def test_the_row_parser_reads_a_table() -> None:
    table = "text\n\n| a | b |\n|---|---|\n| x | `test_cli.py::t` |\n| y | z |\n\nafter\n"
    assert _table_rows(table) == ["| x | `test_cli.py::t` |", "| y | z |"]
