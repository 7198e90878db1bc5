"""Shared fixtures of the LDAP integration tests: one slapd per test session.

``slapd`` is the session's server (see :mod:`slapd`); ``ldap_base`` gives each
test its own empty container under ``ou=domains`` so that tests never see
each other's entries.  Every test in this directory is marked
``integration``, so ``pytest -m "not integration"`` runs without servers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries

_HERE = Path(__file__).resolve().parent
_container_numbers = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (slapd, ...)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A started slapd with the project schema, shared by the whole session."""
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@pytest.fixture
def ldap_base(slapd: Slapd) -> str:
    """DN of a new, empty ``ou=t<N>,ou=domains,dc=example,dc=test`` for this test.

    The container is left in place afterwards; it is unique per test, and the
    server is thrown away at the end of the session.
    """
    name = f"t{next(_container_numbers)}"
    dn = f"ou={name},{slapd.domains_base}"
    conn = slapd.connect(slapd.admin_dn)
    try:
        conn.add_s(dn, [("objectClass", [b"organizationalUnit"]), ("ou", [name.encode()])])
    finally:
        conn.unbind_s()
    return dn
