"""After a timed-out attempt the LDAP backend fails fast for LDAPTimeout seconds.

With a frozen server each attempt costs up to two timeouts; without the
quiet period, sessions queued on the shared connection would pay those
timeouts one after the other (``tests/integration/test_outage_load.py``
measures the whole effect against a SIGSTOPped slapd).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from ldapdkim import config
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.directory import ldapbackend
from ldapdkim.errors import DirectoryUnavailable


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    # The module's own view of time only, not the time module of the whole process.
    monkeypatch.setattr(ldapbackend, "time", SimpleNamespace(monotonic=fake, time=fake))
    return fake


def _ldap(settings: config.Settings) -> LdapSettings:
    assert settings.ldap is not None
    return settings.ldap


def _backend(
    monkeypatch: pytest.MonkeyPatch, opened: list[float], clock: _Clock, *, takes: float
) -> Any:
    """A backend whose connection attempts fail after *takes* seconds (on *clock*)."""
    settings = config.parse("Directory ldap://127.0.0.1:1/dc=example,dc=test\nLDAPTimeout 2\n")
    backend = ldapbackend.LdapBackend(_ldap(settings))

    def refuse() -> Any:
        opened.append(clock.now)
        clock.now += takes
        raise DirectoryUnavailable("cannot reach ldap://127.0.0.1:1 (Timed out)")

    monkeypatch.setattr(backend, "_open", refuse)
    return backend


def test_a_timeout_is_not_retried_for_ldap_timeout_seconds(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock
) -> None:
    opened: list[float] = []
    backend = _backend(monkeypatch, opened, clock, takes=2.0)
    with pytest.raises(DirectoryUnavailable, match="Timed out"):
        backend.execute(lambda conn: conn)
    assert (opened, clock.now) == ([1000.0], 1002.0)

    clock.now += 1.5
    with pytest.raises(DirectoryUnavailable, match=r"Timed out.*\(asking again in 0\.5 s\)"):
        backend.execute(lambda conn: conn)
    assert opened == [1000.0]  # not asked

    clock.now += 0.6
    with pytest.raises(DirectoryUnavailable):
        backend.execute(lambda conn: conn)
    assert opened == [1000.0, 1004.1]  # asked again, and quiet again from here


def test_a_quick_refusal_is_retried_every_time(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock
) -> None:
    opened: list[float] = []
    backend = _backend(monkeypatch, opened, clock, takes=0.001)
    for _ in range(3):
        with pytest.raises(DirectoryUnavailable):
            backend.execute(lambda conn: conn)
    assert len(opened) == 3


def test_success_needs_no_quiet_period(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    settings = config.parse("Directory ldap://127.0.0.1:1/dc=example,dc=test\n")
    backend = ldapbackend.LdapBackend(_ldap(settings))
    monkeypatch.setattr(backend, "_open", lambda: "connection")
    assert backend.execute(lambda conn: f"{conn} used") == "connection used"
    assert backend.execute(lambda conn: f"{conn} again") == "connection again"
