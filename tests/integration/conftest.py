"""Shared fixtures of the LDAP integration tests: one server of each kind per test session.

``slapd`` is the session's OpenLDAP server (see :mod:`slapd`), ``ds389`` its
389 Directory Server (see :mod:`ds389`) and ``samba_ad`` its Active Directory
domain controller (see :mod:`samba_ad`), each started only if a test asks for it;
``ldap_base`` gives each test its own empty container under ``ou=domains`` of
slapd so that tests never see each other's entries.  ``directory_server``
runs a test once against each server, with ``server_base`` as its container.

Every test in this directory is marked ``integration``, so
``pytest -m "not integration"`` runs without servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.ds389 import Ds389, require_389ds
from harness.ldapserver import LdapServer
from harness.samba_ad import SambaDC, require_samba
from harness.slapd import SLAPD_BINARIES, Slapd, require_binaries

_HERE = Path(__file__).resolve().parent


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


@pytest.fixture(scope="session")
def ds389(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ds389]:
    """A started 389 Directory Server with the project schema and ACIs, for the whole session."""
    require_389ds()
    with Ds389(tmp_path_factory.mktemp("ds389")) as server:
        yield server


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaDC]:
    """A started Samba AD domain controller with the project's schema extension, for the
    whole session."""
    require_samba()
    with SambaDC(tmp_path_factory.mktemp("samba-ad")) as server:
        yield server


@pytest.fixture
def ldap_base(slapd: Slapd) -> str:
    """DN of a new, empty ``ou=t<N>,ou=domains,dc=example,dc=test`` in slapd for this test."""
    return slapd.new_container()


@pytest.fixture(params=["slapd", "ds389", "samba_ad"])
def directory_server(request: pytest.FixtureRequest) -> LdapServer:
    """The session's slapd, its 389 Directory Server and its Active Directory domain
    controller (Samba): the test runs against each."""
    server: LdapServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def server_base(directory_server: LdapServer) -> str:
    """A new, empty container under ``ou=domains`` of ``directory_server``."""
    return directory_server.new_container()
