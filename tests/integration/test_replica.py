"""The content-sync replica (RFC 4533) against slapd and 389-DS: live changes, outages, restarts."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import ldap
import pytest
from harness import common
from harness.dnsserver import DnsServer
from harness.ldapserver import LdapServer
from harness.mailsite import MailSite, message
from harness.milterproc import MilterProcess
from harness.postfix import Postfix, header_values, require_postfix
from harness.provisioning import genkey, without_version_line
from harness.slapd import Slapd

from ldapdkim import config
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.replica import sync as replica_module
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.directory.replica.status import STATUS_FILE
from ldapdkim.directory.replica.store import DATABASE, ReplicaStore
from ldapdkim.directory.replica.sync import ReplicaSettings, SyncReplica
from ldapdkim.directory.resolution import Directory
from ldapdkim.errors import DirectoryUnavailable, DomainNotSigned
from ldapdkim.milter.daemon import build_runtime
from ldapdkim.signing.policy import signing_keys

LIVE = 1.0
"""A directory change must reach resolution within this many seconds."""


def _settings(slapd: LdapServer, base: str, state: Path, *lines: str) -> config.Settings:
    text = "\n".join(
        [
            "Mode sv",
            *slapd.milter_lines(base),
            "LDAPTimeout 2",
            f"StateDirectory {state}",
            *lines,
        ]
    )
    return config.parse(text + "\n", "test.conf")


GHOST_POLICY = {
    "objectClass": [b"dkimSignDomainPolicy", b"organizationalUnit"],
    "ou": [b"ghost.example"],
    "dkimSignDomainName": [b"ghost.example"],
}


class Live:
    """A replica with the milter's resolver on top (long TTLs: only the generation flushes)."""

    def __init__(self, settings: config.Settings) -> None:
        self.replica = SyncReplica(ReplicaSettings.of(settings))
        self.resolver = CachedResolver(
            Directory(self.replica, subdomains=False, minimum_key_bits=1024),
            ttl=300,
            negative_ttl=300,
            max_stale=settings.directory_max_stale,
        )

    def selectors(self, domain: str) -> list[str]:
        resolution = self.resolver.resolve(domain)
        return sorted(k.selector for k in signing_keys(resolution, datetime.now(UTC)))

    def close(self) -> None:
        self.replica.close()


@pytest.fixture
def live_factory(tmp_path: Path) -> Iterator[Callable[[config.Settings], Live]]:
    made: list[Live] = []

    def make(settings: config.Settings) -> Live:
        live = Live(settings)
        made.append(live)
        return live

    yield make
    for live in made:
        live.close()


wait_for = functools.partial(
    common.wait_for, interval=0.005, ignoring=(DomainNotSigned, DirectoryUnavailable)
)
"""Seconds until a check held; a resolver still refusing counts as not yet."""


def _provision(
    slapd: LdapServer, base: str, domain: str, *selectors: str, state: str = "active"
) -> None:
    ldif = genkey(domain, selectors[0], base, with_domain=True, bits=1024)
    for selector in selectors[1:]:
        ldif += without_version_line(
            genkey(
                domain, selector, base, state=state, bits=1024, domain_dn=_domain_dn(base, domain)
            )
        )
    slapd.ldapadd(ldif)


def _domain_dn(base: str, domain: str) -> str:
    return f"ou={domain},{base}"


def _key_dn(base: str, domain: str, selector: str) -> str:
    return f"dkimSignSelector={selector},{_domain_dn(base, domain)}"


def _modify(slapd: LdapServer, dn: str, attribute: str, value: str) -> float:
    conn = slapd.connect(slapd.admin_dn)
    try:
        sent = time.monotonic()
        conn.modify_s(dn, [(ldap.MOD_REPLACE, attribute, [value.encode()])])
        return sent
    finally:
        conn.unbind_s()


def _synced(live: Live, entries: int | None = None) -> None:
    wait_for(
        "first refresh",
        lambda: live.replica.loaded and (entries is None or live.replica.view().entries == entries),
        10,
    )


def test_initial_refresh_loads_every_entry_and_lookups_stay_local(
    directory_server: LdapServer,
    server_base: str,
    tmp_path: Path,
    live_factory: Callable[[config.Settings], Live],
) -> None:
    slapd, ldap_base = directory_server, server_base
    for domain in ("a.example", "b.example", "c.example"):
        _provision(slapd, ldap_base, domain, "s1")
    live = live_factory(_settings(slapd, ldap_base, tmp_path))
    _synced(live, 6)
    searches = live.replica.searches
    for domain in ("a.example", "b.example", "c.example"):
        assert live.selectors(domain) == ["s1"]
    assert live.replica.searches == searches
    assert live.replica.mode == "sync"
    saved = tmp_path / DATABASE
    wait_for("replica database", saved.exists, 5)
    assert saved.stat().st_mode & 0o777 == 0o600
    status_file = tmp_path / STATUS_FILE
    # The writer writes it after the commit that ends the refresh, which is when the
    # replica counts as loaded: the file may not be there yet (a USN poller writes
    # none before its first poll is done).
    wait_for(
        "status.json",
        lambda: json.loads(status_file.read_text())["mode"] == "sync",
        5,
        ignoring=(FileNotFoundError,),
    )
    status = json.loads(status_file.read_text())
    assert status["servers"][0]["uri"] == slapd.ldap_uri
    assert status["servers"][0]["entries"] == 6


def test_directory_changes_reach_signing_within_a_second(
    directory_server: LdapServer,
    server_base: str,
    tmp_path: Path,
    live_factory: Callable[[config.Settings], Live],
) -> None:
    slapd, ldap_base = directory_server, server_base
    _provision(slapd, ldap_base, "example.com", "s1", "s2", state="pending")
    live = live_factory(_settings(slapd, ldap_base, tmp_path))
    _synced(live, 3)
    assert live.selectors("example.com") == ["s1"]
    searches = live.replica.searches

    # A key's state: s2 becomes active, s1 retired.
    _modify(slapd, _key_dn(ldap_base, "example.com", "s2"), "dkimSignKeyState", "active")
    sent = _modify(slapd, _key_dn(ldap_base, "example.com", "s1"), "dkimSignKeyState", "retired")
    wait_for("state change", lambda: live.selectors("example.com") == ["s2"], LIVE)
    assert time.monotonic() - sent < LIVE

    # A new key entry.
    sent = time.monotonic()
    slapd.ldapadd(
        genkey(
            "example.com",
            "s3",
            ldap_base,
            bits=1024,
            domain_dn=_domain_dn(ldap_base, "example.com"),
        )
    )
    wait_for("new key", lambda: live.selectors("example.com") == ["s2", "s3"], LIVE)
    assert time.monotonic() - sent < LIVE

    # A deleted key entry.
    conn = slapd.connect(slapd.admin_dn)
    sent = time.monotonic()
    conn.delete_s(_key_dn(ldap_base, "example.com", "s3"))
    conn.unbind_s()
    wait_for("deleted key", lambda: live.selectors("example.com") == ["s2"], LIVE)
    assert time.monotonic() - sent < LIVE

    # A policy attribute.
    sent = _modify(slapd, _domain_dn(ldap_base, "example.com"), "dkimSignEnabled", "FALSE")

    def switched_off() -> bool:
        try:
            live.resolver.resolve("example.com")
        except DomainNotSigned:
            return True
        return False

    wait_for("policy change", switched_off, LIVE)
    assert time.monotonic() - sent < LIVE
    assert live.replica.searches == searches  # all from the replica


@pytest.fixture(params=["slapd", "ds389", "samba_ad"])
def server_to_stop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LdapServer]:
    """A server the test may stop and start: a new slapd, or the session's 389-DS or
    Samba AD DC (started again afterwards if the test left it stopped)."""
    if request.param == "slapd":
        with Slapd(tmp_path / "slapd") as server:
            yield server
        return
    shared: LdapServer = request.getfixturevalue(request.param)
    try:
        yield shared
    finally:
        if not shared.running:
            shared.start()


def test_outage_restart_and_resume_with_the_cookie(
    server_to_stop: LdapServer, tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    server = server_to_stop
    base = server.new_container()
    for number in range(10):
        _provision(server, base, f"d{number}.example", "s1")
    _provision(server, base, "example.com", "s1", "s2", state="pending")
    settings = _settings(server, base, tmp_path / "state")
    (tmp_path / "state").mkdir()
    live = live_factory(settings)
    _synced(live, 23)
    assert live.selectors("example.com") == ["s1"]

    # slapd stops under the consumer: the replica keeps answering.
    server.stop()
    time.sleep(0.3)
    assert live.selectors("example.com") == ["s1"]
    assert live.selectors("d3.example") == ["s1"]
    # ... and catches up once it is back.
    server.start()
    _modify(server, _key_dn(base, "example.com", "s2"), "dkimSignKeyState", "active")
    wait_for("change after the restart", lambda: live.selectors("example.com") == ["s1", "s2"], 40)

    # Changes made while no consumer runs arrive on resume, deletes included.
    live.close()
    conn = server.connect(server.admin_dn)
    conn.delete_s(_key_dn(base, "d1.example", "s1"))
    conn.delete_s(_domain_dn(base, "d1.example"))
    conn.unbind_s()
    _modify(server, _key_dn(base, "example.com", "s1"), "dkimSignKeyState", "retired")
    again = live_factory(settings)
    assert again.replica.loaded  # from the database, at once
    assert again.selectors("example.com") == ["s1", "s2"]
    start = again.replica.generation
    wait_for("resume", lambda: again.selectors("example.com") == ["s2"], 5)
    wait_for("delete while away", lambda: again.replica.view().entries == 21, 5)
    # Only the changes came, not a full reload of 21 entries.
    assert again.replica.generation - start < 10
    again.close()

    # A restart with the server down answers at once from the saved replica.
    server.stop()
    third = live_factory(settings)
    searches = third.replica.searches
    assert third.selectors("example.com") == ["s2"]
    assert third.selectors("d5.example") == ["s1"]
    assert third.replica.searches == searches
    assert third.replica.status()["servers"][0]["connected"] is False


def test_a_cookie_the_server_cannot_honour_brings_a_full_refresh(
    directory_server: LdapServer,
    server_base: str,
    tmp_path: Path,
    live_factory: Callable[[config.Settings], Live],
) -> None:
    """e-syncRefreshRequired (RFC 4533 §2.3): start again without the cookie.

    slapd answers so when a consumer's cookie is newer than its own state
    (here: a saved replica from a server whose database was since restored
    from an older backup), 389-DS when a cookie is not one of its own or its
    retro changelog no longer reaches back to it.  The saved replica's entry
    that the server no longer has must go.
    """
    slapd, ldap_base = directory_server, server_base
    _provision(slapd, ldap_base, "example.com", "s1")
    saved = ReplicaFeed(ReplicaStore(tmp_path / DATABASE, f"{slapd.ldap_uri} {ldap_base}"))
    saved.entry("0000-ghost", f"ou=ghost.example,{ldap_base}", dict(GHOST_POLICY))
    saved.set_cookie("rid=000,csn=20991231000000.000000Z#000000#000#000000")
    saved.refresh_done()
    live = live_factory(_settings(slapd, ldap_base, tmp_path, "DirectorySync yes"))
    store = live.replica.store
    assert store is not None
    assert [dn for dn, _ in store.policies(["ghost.example"])]  # loaded
    wait_for("full refresh", lambda: store.policies(["example.com"]) != [], 10)
    wait_for("ghost gone", lambda: store.policies(["ghost.example"]) == [], 10)
    assert live.selectors("example.com") == ["s1"]
    cookie = store.meta().cookie
    assert cookie is not None and "2099" not in cookie  # the server's own state now


def test_replica_older_than_directory_max_stale_is_unavailable(
    tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    with Slapd(tmp_path / "slapd") as server:
        _provision(server, server.domains_base, "example.com", "s1")
        live = live_factory(_settings(server, server.domains_base, tmp_path, "DirectoryMaxStale 1"))
        _synced(live, 2)
        server.stop()
        wait_for("disconnected", lambda: live.replica.staleness() not in (None, 0.0), 10)
        time.sleep(1.2)
        with pytest.raises(DirectoryUnavailable, match="DirectoryMaxStale"):
            live.replica.search_policies(["example.com"])


def test_directory_sync_no_means_plain_lookups(
    slapd: Slapd, ldap_base: str, tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    _provision(slapd, ldap_base, "example.com", "s1")
    live = live_factory(_settings(slapd, ldap_base, tmp_path, "DirectorySync no"))
    assert live.selectors("example.com") == ["s1"]
    assert live.replica.searches == 2
    assert live.replica.mode == "lookup"
    assert not (tmp_path / DATABASE).exists()


def test_status_in_lookup_mode_shows_the_server_connected_before_any_mail(
    slapd: Slapd, ldap_base: str, tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    """An idle milter is not reported disconnected just because no mail needed a lookup."""
    live = live_factory(_settings(slapd, ldap_base, tmp_path, "DirectorySync no"))
    status_file = tmp_path / STATUS_FILE

    def connected() -> bool:
        return bool(json.loads(status_file.read_text())["servers"][0]["connected"])

    wait_for("status.json", status_file.exists, 5)
    wait_for("connected in status.json", connected, 5)
    assert json.loads(status_file.read_text())["mode"] == "lookup"
    assert live.replica.searches == 0  # a probe, not a search


class _SlapdWithoutSyncprov(Slapd):
    """The test server minus its syncprov overlay (as Active Directory: no RFC 4533)."""

    def _config_ldif(self) -> str:
        text = super()._config_ldif()
        return text[: text.index("dn: olcOverlay={0}syncprov")]


def test_without_syncprov_auto_falls_back_and_yes_refuses(
    tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    with _SlapdWithoutSyncprov(tmp_path / "slapd") as server:
        _provision(server, server.domains_base, "example.com", "s1")
        auto = live_factory(_settings(server, server.domains_base, tmp_path))
        wait_for("fallback", lambda: auto.replica.link.refused, 10)
        assert auto.replica.mode == "lookup"
        assert auto.selectors("example.com") == ["s1"]
        assert auto.replica.searches == 2

        strict = live_factory(_settings(server, server.domains_base, tmp_path, "DirectorySync yes"))
        time.sleep(1.0)
        with pytest.raises(DirectoryUnavailable, match="DirectorySync yes"):
            strict.resolver.resolve("example.com")


def test_auto_asks_again_and_syncs_once_the_server_offers_it(
    tmp_path: Path,
    live_factory: Callable[[config.Settings], Live],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replica_module, "REFUSED_RETRY", 1.0)
    with _SlapdWithoutSyncprov(tmp_path / "slapd") as server:
        _provision(server, server.domains_base, "example.com", "s1")
        live = live_factory(_settings(server, server.domains_base, tmp_path))
        wait_for("fallback", lambda: live.replica.link.refused, 10)
        assert live.replica.mode == "lookup"
        server.ldapadd(
            "dn: olcOverlay=syncprov,olcDatabase={1}mdb,cn=config\n"
            "objectClass: olcOverlayConfig\n"
            "objectClass: olcSyncProvConfig\n"
            "olcOverlay: syncprov\n",
            external=True,
        )
        wait_for("content sync", lambda: live.replica.mode == "sync", 15)
        searches = live.replica.searches
        assert live.selectors("example.com") == ["s1"]
        assert live.replica.searches == searches  # answered from the replica


def test_the_running_milter_signs_the_next_message_with_the_changed_key(
    directory_server: LdapServer, server_base: str, tmp_path: Path
) -> None:
    require_postfix()
    slapd, ldap_base = directory_server, server_base
    _provision(slapd, ldap_base, "example.com", "s1", "s2", state="pending")
    with DnsServer() as dns, Postfix(tmp_path / "postfix") as postfix:
        site = MailSite(slapd, ldap_base, dns, tmp_path)
        lines = site.milter_config(f"StateDirectory {tmp_path}")
        with MilterProcess(tmp_path / "milter", lines) as milter:
            postfix.set_milter(milter.postfix_address)
            postfix.reload()

            def selector_of(subject: str) -> str:
                reply = postfix.send(
                    message(subject=subject),
                    mail_from="alice@example.com",
                    rcpt_to=["bob@example.net"],
                )
                assert reply.accepted, (reply, milter.log())
                signatures = header_values(postfix.wait_for_message(subject), "DKIM-Signature")
                found = re.search(r"\bs=([^;\s]+)", " ".join(signatures))
                assert found is not None, signatures
                return found.group(1)

            assert selector_of("before") == "s1"
            sent = _modify(
                slapd, _key_dn(ldap_base, "example.com", "s2"), "dkimSignKeyState", "active"
            )
            _modify(slapd, _key_dn(ldap_base, "example.com", "s1"), "dkimSignKeyState", "retired")
            # Usually the very next message; under a loaded machine, within a second.
            selectors = [selector_of("right after")]
            while selectors[-1] != "s2" and time.monotonic() - sent < 1.0:
                selectors.append(selector_of(f"after {len(selectors)}"))
            assert selectors[-1] == "s2", (selectors, milter.log())
            stats = milter.stats_line()
            assert stats is not None and "directory_mode=sync" in stats, milter.log()
            assert "ldap_searches=0" in stats, stats
            assert "Traceback" not in milter.log(), milter.log()


def test_the_replica_follows_the_directory_through_a_consumer_while_the_provider_is_down(
    tmp_path: Path, live_factory: Callable[[config.Settings], Live]
) -> None:
    """``Directory PROVIDER CONSUMER`` with content sync: failover keeps changes coming.

    ``DirectoryMaxStale 0`` makes lookups fail the moment no server is synced
    with, so every answer below comes from a live sync connection.
    """
    with (
        Slapd(tmp_path / "provider") as provider,
        Slapd(tmp_path / "consumer", provider=provider) as consumer,
    ):
        base = provider.domains_base
        _provision(provider, base, "example.com", "s1")
        consumer.wait_in_sync()
        text = "\n".join(
            [
                f"Directory {provider.ldap_uri}/{base} {consumer.ldap_uri}/{base}",
                f"LDAPBindUser {provider.milter_dn}",
                f"LDAPBindPassword {provider.milter_pw}",
                "LDAPTimeout 2",
                "DirectorySync yes",
                "DirectoryMaxStale 0",
                f"StateDirectory {tmp_path}",
            ]
        )
        live = live_factory(config.parse(text + "\n", "test.conf"))
        _synced(live, 2)

        def synced_with(uri: str) -> bool:
            return any(s["uri"] == uri and s["connected"] for s in live.replica.status()["servers"])

        wait_for("synced with the provider", lambda: synced_with(provider.ldap_uri), 5)
        provider.stop()
        wait_for("synced with the consumer", lambda: synced_with(consumer.ldap_uri), 15)
        assert live.selectors("example.com") == ["s1"]

        provider.start()
        _provision(provider, base, "example.org", "s1")  # written on the provider ...
        # ... it reaches the replica through the consumer, which we stay with.
        wait_for("change through the consumer", lambda: live.selectors("example.org") == ["s1"], 15)
        assert synced_with(consumer.ldap_uri)
        assert live.replica.searches == 0


def test_a_reload_keeps_the_replica_unless_its_settings_change(
    slapd: Slapd, ldap_base: str, tmp_path: Path
) -> None:
    """SIGHUP builds a new runtime; reading the saved replica again would double memory."""
    _provision(slapd, ldap_base, "example.com", "s1")
    first = build_runtime(_settings(slapd, ldap_base, tmp_path, "DirectorySync yes"))
    directory = first.resolver.directory
    try:
        assert isinstance(directory.backend, SyncReplica)  # a test of the replica itself
        _synced_replica(directory.backend, 2)
        same = build_runtime(
            _settings(slapd, ldap_base, tmp_path, "DirectorySync yes", "LDAPCacheTTL 5"), first
        )
        assert same.resolver.directory.shares_backend_with(directory)
        assert same.resolver is not first.resolver  # the caches are new all the same
        other = build_runtime(
            _settings(slapd, ldap_base, tmp_path, "DirectorySync yes", "LDAPTimeout 3"), same
        )
        try:
            assert not other.resolver.directory.shares_backend_with(directory)
        finally:
            other.resolver.directory.close()
    finally:
        directory.close()


def _synced_replica(replica: SyncReplica, entries: int) -> None:
    wait_for("first refresh", lambda: replica.loaded and replica.view().entries == entries, 10)
