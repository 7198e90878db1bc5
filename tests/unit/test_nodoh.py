"""dnspython is imported without its DNS-over-HTTPS clients, which only slow the start down.

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
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(path), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )


def test_dns_query_imported_after_ldapdkim_loads_no_http_client(stand_ins: Path) -> None:
    result = run("import ldapdkim, dns.query; print(dns.query.have_doh)", stand_ins)
    assert result.stdout.strip() == "False"
    assert "imported" not in result.stderr


def test_the_http_clients_stay_importable_afterwards(stand_ins: Path) -> None:
    result = run("import ldapdkim, dns.query, httpx, requests", stand_ins)
    assert result.stderr.splitlines() == ["imported httpx", "imported requests"]


def test_without_ldapdkim_dnspython_would_load_them(stand_ins: Path) -> None:
    """The stand-ins are found: what the first test shows is ldapdkim's doing."""
    result = run("import dns.query", stand_ins)
    assert "imported requests" in result.stderr
