"""The tree stays clean: ruff's lint and format rules over the package, the tests and the
benchmarks, and mypy --strict over the package, the test harness and the benchmarks
(``[tool.mypy] files``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing; install the test extra: pip install -e '.[test]'")
    return found


@pytest.mark.parametrize(
    "argv",
    [
        ["ruff", "check", "ldapdkim", "tests", "bench"],
        ["ruff", "format", "--check", "ldapdkim", "tests", "bench"],
        ["mypy"],
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_tool_is_clean(argv: list[str]) -> None:
    result = subprocess.run([_tool(argv[0]), *argv[1:]], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
