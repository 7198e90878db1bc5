"""The command imports dnspython without its DNS-over-HTTPS clients, which slow its start.

Each case runs in a fresh interpreter, with stand-ins named ``requests`` and
``httpx`` first on its path that note when they are imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STAND_IN = "import sys\nsys.stderr.write('imported {name}\\n')\n"


@pytest.fixture
def stand_ins(tmp_path: Path) -> Path:
    for name in ("requests", "httpx"):
        (tmp_path / f"{name}.py").write_text(STAND_IN.format(name=name))
    return tmp_path


def run(code: str, path: Path) -> subprocess.CompletedProcess[str]:
    return python(["-c", code], path)


def python(arguments: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), *sys.path])}
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, env=env, check=True
    )


# ``verify`` imports dns.query as the parser is built; ``--help`` stops right after.
COMMAND = (
    "from ldapdkim.cli import main\n"
    "try:\n    main(['verify', '--help'])\nexcept SystemExit:\n    pass\n"
)


def test_the_command_loads_no_http_client(stand_ins: Path) -> None:
    result = python(["-m", "ldapdkim", "verify", "--help"], stand_ins)
    assert "usage: ldapdkim verify" in result.stdout
    assert "imported" not in result.stderr


def test_dns_query_imported_after_the_command_started_has_no_doh(stand_ins: Path) -> None:
    result = run(COMMAND + "import dns.query\nprint(dns.query.have_doh)", stand_ins)
    assert result.stdout.splitlines()[-1] == "False"
    assert "imported" not in result.stderr


def test_the_http_clients_stay_importable_afterwards(stand_ins: Path) -> None:
    result = run(COMMAND + "import dns.query, httpx, requests", stand_ins)
    assert result.stderr.splitlines() == ["imported httpx", "imported requests"]


def test_a_bare_import_of_ldapdkim_changes_nothing(stand_ins: Path) -> None:
    """Only the command installs it: ``import ldapdkim`` leaves dnspython as it is."""
    result = run(
        "import sys\nbefore = list(sys.meta_path)\nimport ldapdkim\n"
        "print(sys.meta_path == before)\nimport dns.query",
        stand_ins,
    )
    assert result.stdout.strip() == "True"
    assert "imported requests" in result.stderr


def test_without_ldapdkim_dnspython_would_load_them(stand_ins: Path) -> None:
    """The stand-ins are found: what the first tests show is ldapdkim's doing."""
    result = run("import dns.query", stand_ins)
    assert "imported requests" in result.stderr
