"""Every RFC clause in tests/data/rfc-clauses.tsv (DKIM) and rfc8617-clauses.tsv (ARC) names a
test that exists, or why not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TABLES = [REPO / "tests" / "data" / name for name in ("rfc-clauses.tsv", "rfc8617-clauses.tsv")]
COLUMNS = ["id", "rfc", "section", "level", "party", "requirement", "test"]


def _rows(tables: list[Path] = TABLES) -> list[dict[str, str]]:
    rows = []
    for line in (row for table in tables for row in table.read_text().splitlines()):
        if line.strip() and not line.startswith("#"):
            cells = line.split("\t")
            assert len(cells) == len(COLUMNS), f"{line[:40]}: {len(cells)} columns"
            rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_the_table_is_well_formed() -> None:
    rows = _rows()
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert {r["party"] for r in rows} <= {"signer", "verifier"}
    assert {r["level"] for r in rows} <= {"MUST", "MUST NOT", "SHOULD", "SHOULD NOT", "MAY", "n/a"}


def test_every_section_the_issue_names_has_clauses() -> None:
    seen = {(r["rfc"], r["section"].split(".")[0] + "." + r["section"].split(".")[1]
             if r["section"].count(".") else r["section"]) for r in _rows()}  # fmt: skip
    for section in ("3.2", "3.3", "3.4", "3.5", "3.6", "3.7"):
        assert ("6376", section) in seen, section
    assert any(rfc == "6376" and s.startswith("5") for rfc, s in seen)
    assert any(rfc == "6376" and s.startswith("6") for rfc, s in seen)
    assert any(rfc == "8463" for rfc, _ in seen) and any(rfc == "8301" for rfc, _ in seen)


def test_every_section_of_arc_the_issue_names_has_clauses() -> None:
    sections = {r["section"] for r in _rows(TABLES[1:]) if r["rfc"] == "8617"}
    for section in ("4.1.1", "4.1.2", "4.1.3", "4.2.1", "5.1", "5.1.1", "5.1.2", "5.2"):
        assert section in sections, section


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r["id"])
def test_the_clause_has_a_test_that_exists_or_says_why_not(row: dict[str, str]) -> None:
    reference = row["test"]
    if reference.startswith("n/a:"):
        assert len(reference) > len("n/a: ") + 10, "say why the clause does not apply"
        return
    path, _, name = reference.partition("::")
    assert (REPO / path).is_file(), f"{row['id']}: no file {path}"
    assert name in _test_names(REPO / path), f"{row['id']}: no test {name} in {path}"
