"""The replica's bookkeeping, driven through the callbacks python-ldap's consumer makes.

The entries go to an LMDB database in a temporary directory: what one handle
commits, every other handle (another worker) reads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ldapdkim import config
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.secret import Secret
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.replica import store as store_module
from ldapdkim.directory.replica import sync as sync_module
from ldapdkim.directory.replica.feed import ReplicaFeed, WriterRole
from ldapdkim.directory.replica.statedir import OLD_STATE_FILE
from ldapdkim.directory.replica.store import DATABASE, ReplicaStore, encode
from ldapdkim.directory.replica.sync import ReplicaSettings, SyncReplica
from ldapdkim.directory.resolution import Directory
from ldapdkim.errors import DamagedReplica, DirectoryUnavailable

POLICY = {"objectClass": [b"dkimSignDomainPolicy"], "dkimSignDomainName": [b"example.com"]}
DIRECTORY = "ldap://x dc=test"


def _key(selector: str) -> dict[str, list[bytes]]:
    return {
        "objectClass": [b"dkimSignKey"],
        "dkimSignSelector": [selector.encode()],
        "dkimSignKeyState": [b"active"],
    }


BASE = "ou=d,dc=test"
DOMAIN = f"ou=example.com,{BASE}"


def _feed(tmp_path: Path, directory: str = DIRECTORY) -> ReplicaFeed:
    return ReplicaFeed(ReplicaStore(tmp_path / DATABASE, directory))


def _filled(tmp_path: Path, directory: str = DIRECTORY) -> ReplicaFeed:
    feed = _feed(tmp_path, directory)
    feed.begin_refresh()
    feed.entry("u-policy", DOMAIN, POLICY)
    feed.entry("u-s1", f"dkimSignSelector=s1,{DOMAIN}", _key("s1"))
    feed.entry("u-s2", f"dkimSignSelector=s2,{DOMAIN}", _key("s2"))
    for uuid in ("u-policy", "u-s1", "u-s2"):
        feed.present([uuid], False)
    feed.present(None, False)
    feed.refresh_done()
    return feed


def _selectors(feed: ReplicaFeed | ReplicaStore) -> list[str]:
    feed.flush() if isinstance(feed, ReplicaFeed) else None
    store = feed.store if isinstance(feed, ReplicaFeed) else feed
    return sorted(e[1]["dkimsignselector"][0].decode() for e in store.children(DOMAIN))


def test_entries_are_indexed_by_name_and_parent(tmp_path: Path) -> None:
    store = _filled(tmp_path).store
    assert [dn for dn, _ in store.policies(["EXAMPLE.com"])] == [DOMAIN]
    assert _selectors(store) == ["s1", "s2"]
    assert store.meta().loaded and len(store) == 3


def test_a_present_phase_deletes_what_the_server_did_not_present(tmp_path: Path) -> None:
    feed = _filled(tmp_path)
    feed.set_cookie("rid=000,csn=1")
    before = feed.store.meta().generation
    feed.begin_refresh()  # reconnect: the server presents the policy and s2 only
    feed.present(["u-policy", "u-s2"], False)
    feed.present(None, False)
    assert _selectors(feed) == ["s2"]
    assert feed.store.meta().generation > before


def test_a_delete_phase_deletes_only_what_it_names(tmp_path: Path) -> None:
    feed = _filled(tmp_path)
    feed.set_cookie("rid=000,csn=1")  # resuming: the server names what went
    feed.begin_refresh()
    feed.delete(["u-s1"])
    feed.present(None, True)
    assert _selectors(feed) == ["s2"]


def test_a_refresh_without_a_cookie_drops_whatever_the_server_did_not_send(
    tmp_path: Path,
) -> None:
    """With no cookie the server sends all it has, however it ends the refresh."""
    feed = _filled(tmp_path)
    feed.set_cookie(None)  # e.g. the server could not resume from it
    feed.begin_refresh()
    feed.entry("u-s2", f"dkimSignSelector=s2,{DOMAIN}", _key("s2"))
    feed.present(["u-s2"], False)
    feed.present(None, True)  # a refreshDelete phase names no deletes
    feed.refresh_done()
    assert _selectors(feed) == ["s2"]
    assert feed.store.policies(["example.com"]) == []


def test_a_resumed_refresh_keeps_what_a_delete_phase_does_not_name(tmp_path: Path) -> None:
    feed = _filled(tmp_path)
    feed.set_cookie("rid=000,csn=1")
    feed.begin_refresh()
    feed.present(None, True)
    feed.refresh_done()
    assert _selectors(feed) == ["s1", "s2"]


def test_a_rename_moves_the_entry(tmp_path: Path) -> None:
    feed = _filled(tmp_path)
    other = f"ou=other.example,{BASE}"
    feed.entry("u-s1", f"dkimSignSelector=s1,{other}", _key("s1"))
    assert _selectors(feed) == ["s2"]
    assert len(feed.store.children(other)) == 1


def test_an_entry_deleted_and_recreated_under_the_same_dn_is_not_lost(tmp_path: Path) -> None:
    """A refresh sends the new entry; the old one's absence must not remove it."""
    feed = _filled(tmp_path)
    feed.begin_refresh()
    feed.entry("u-s1-new", f"dkimSignSelector=s1,{DOMAIN}", _key("s1"))
    feed.present(["u-policy", "u-s2", "u-s1-new"], False)
    feed.present(None, False)  # u-s1 was not presented: gone, but its DN lives on
    assert _selectors(feed) == ["s1", "s2"]
    assert len(feed.store) == 3


def test_the_cookie_is_committed_with_the_entries_it_covers(tmp_path: Path) -> None:
    """Entries wait in memory; the cookie that covers them commits them, in one transaction."""
    feed = _filled(tmp_path)
    reader = ReplicaStore(tmp_path / DATABASE, DIRECTORY)
    feed.entry("u-s3", f"dkimSignSelector=s3,{DOMAIN}", _key("s3"))
    assert _selectors(reader) == ["s1", "s2"] and reader.meta().cookie is None
    feed.set_cookie(b"rid=000,csn=2")
    assert _selectors(reader) == ["s1", "s2", "s3"]
    assert reader.meta().cookie == "rid=000,csn=2"
    assert (tmp_path / DATABASE).stat().st_mode & 0o777 == 0o600


def test_a_database_keeps_entries_and_cookie_for_the_next_start(tmp_path: Path) -> None:
    feed = _filled(tmp_path)
    feed.set_cookie("rid=001,csn=20261128")
    again = _feed(tmp_path)  # as a restarted writer finds it
    assert again.loaded and again.cookie == "rid=001,csn=20261128"
    again.delete(["u-s1"])  # entryUUIDs survive the restart
    assert _selectors(again) == ["s2"]


def test_a_database_of_another_directory_is_not_served_and_is_emptied_by_its_writer(
    tmp_path: Path,
) -> None:
    _filled(tmp_path, "ldap://other dc=test").set_cookie("rid=000,csn=1")
    feed = _feed(tmp_path)
    assert not feed.loaded and feed.cookie is None and len(feed.store) == 0
    feed.entry("u-s9", f"dkimSignSelector=s9,{DOMAIN}", _key("s9"))
    feed.flush()
    assert _selectors(feed) == ["s9"]


def test_the_map_grows_when_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAP_START", 64 << 10)
    feed = _feed(tmp_path)
    blob = b"k" * 3000
    for n in range(400):  # 1.2 MB of key material in a 64 KB map
        feed.entry(f"u-{n}", f"dkimSignSelector=s{n},{DOMAIN}", {**_key(f"s{n}"), "k": [blob]})
    feed.refresh_done()
    assert len(feed.store) == 400 and feed.waiting == 0


def test_a_commit_that_fails_keeps_its_changes_for_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "MAP_START", 64 << 10)
    feed = _filled(tmp_path)
    monkeypatch.setattr(store_module, "MAP_CEILING", 0)  # the map cannot grow
    big = {**_key("s3"), "k": [b"k" * (256 << 10)]}  # more than the 64 KB map
    feed.entry("u-s3", f"dkimSignSelector=s3,{DOMAIN}", big)
    feed.entry("u-s4", f"dkimSignSelector=s4,{DOMAIN}", _key("s4"))
    assert not feed.flush()
    assert "cannot write the replica database" in caplog.text
    assert feed.waiting == 2 and _selectors(feed.store) == ["s1", "s2"]  # served as it was
    monkeypatch.setattr(store_module, "MAP_CEILING", 1 << 40)
    assert feed.flush() and _selectors(feed.store) == ["s1", "s2", "s3", "s4"]


def test_a_refresh_counts_as_loaded_only_once_its_last_entries_are_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lookups turn to the database when it is loaded: before the commit of the refresh's
    end they would find its last entries missing and sign nothing."""
    monkeypatch.setattr(store_module, "MAP_START", 64 << 10)
    monkeypatch.setattr(store_module, "MAP_CEILING", 0)  # the map cannot grow
    feed = _feed(tmp_path)
    feed.begin_refresh()
    feed.entry("u-policy", DOMAIN, POLICY)
    feed.entry("u-s1", f"dkimSignSelector=s1,{DOMAIN}", {**_key("s1"), "k": [b"k" * (256 << 10)]})
    feed.present(["u-policy", "u-s1"], False)
    feed.refresh_done()  # its commit fails: the map is full
    assert not feed.loaded and not feed.store.meta().loaded
    monkeypatch.setattr(store_module, "MAP_CEILING", 1 << 40)
    assert feed.flush()
    assert feed.loaded and feed.store.meta().loaded and _selectors(feed.store) == ["s1"]


def test_a_damaged_entry_is_an_error_naming_it_not_a_crash() -> None:
    from ldapdkim.directory.replica.store import decode

    attrs = {"k": (b"\x00\xff", b""), "objectclass": (b"dkimSignKey",)}
    blob = encode("cn=a,dc=t", "cn=a,dc=t", "dc=t", attrs)
    assert decode(blob) == ("cn=a,dc=t", "cn=a,dc=t", "dc=t", attrs)
    for junk in (blob[:-1], blob[:7], blob + b"\x00", b"\x00\x00\x00\x02\xff\xfe" * 3):
        with pytest.raises(DamagedReplica):
            decode(junk)


def test_one_process_at_a_time_holds_the_writer_role(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from ldapdkim.directory.replica.feed import WriterRole
            assert WriterRole(Path({str(tmp_path)!r})).take()
            print("taken", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    ) as held:  # fmt: skip
        try:
            assert held.stdout is not None and held.stdout.readline() == "taken\n"
            role = WriterRole(tmp_path)
            assert not role.take()
            held.send_signal(signal.SIGKILL)  # the kernel lets go of a dead holder's lock
            held.wait(5)
            assert role.take() and role.held
        finally:
            held.kill()


_WRITER = """
import sys
from pathlib import Path
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.directory.replica.store import ReplicaStore
feed = ReplicaFeed(ReplicaStore(Path(sys.argv[1]), "ldap://x dc=test"))
feed.begin_refresh()
for csn in range(1, 1_000_000):
    for n in range(50):
        uuid = f"u-{csn}-{n}"
        feed.entry(uuid, f"dkimSignSelector={uuid},ou=example.com,ou=d,dc=test",
                   {"objectClass": [b"dkimSignKey"], "csn": [str(csn).encode()]})
    feed.set_cookie(f"csn={csn}")
    if csn == 3:
        print("going", flush=True)
"""


def test_a_writer_killed_mid_refresh_leaves_entries_and_cookie_consistent(tmp_path: Path) -> None:
    """kill -9 at any moment: every batch of entries is there with its cookie, or neither."""
    with subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path / DATABASE)],
        stdout=subprocess.PIPE,
        text=True,
    ) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "going\n"
            time.sleep(0.3)
            os.kill(writer.pid, signal.SIGKILL)
            writer.wait(5)
        finally:
            writer.kill()
    store = ReplicaStore(tmp_path / DATABASE, DIRECTORY)
    meta = store.meta()
    assert meta.cookie is not None
    last = int(meta.cookie.removeprefix("csn="))
    assert last >= 3 and meta.entries == 50 * last
    feed = ReplicaFeed(store)  # the next writer resumes from that cookie
    assert feed.cookie == meta.cookie


def test_a_replica_state_file_of_an_earlier_version_is_removed(tmp_path: Path) -> None:
    (tmp_path / OLD_STATE_FILE).write_bytes(b"old")
    SyncReplica(ReplicaSettings.of(_settings(tmp_path)), start=False)
    assert not (tmp_path / OLD_STATE_FILE).exists()


def test_an_unwritable_state_directory_keeps_the_database_elsewhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "missing"
    replica = SyncReplica(ReplicaSettings.of(_settings(missing)), start=False)
    assert replica.store is not None and replica.store.path.parent != missing
    assert "create the directory, writable by UserID" in caplog.text
    fallback = replica.store.path.parent
    assert fallback.is_dir()
    replica.close()
    assert not fallback.exists()  # nothing left behind in the temporary directory


def _settings(tmp_path: Path, *lines: str) -> config.Settings:
    text = "\n".join([f"Directory ldap://127.0.0.1:9/{BASE}", f"StateDirectory {tmp_path}", *lines])
    return config.parse(text + "\n", "test.conf")


def test_a_replica_database_serves_without_a_server(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "DirectorySync yes")
    _filled(tmp_path, f"ldap://127.0.0.1:9 {BASE}")
    replica = SyncReplica(ReplicaSettings.of(settings), start=False)
    assert replica.mode == "sync"
    assert [dn for dn, _ in replica.search_policies(["example.com"])] == [DOMAIN]
    assert replica.searches == 0


def test_sync_yes_without_a_replica_is_unavailable(tmp_path: Path) -> None:
    replica = SyncReplica(ReplicaSettings.of(_settings(tmp_path, "DirectorySync yes")), start=False)
    with pytest.raises(DirectoryUnavailable, match="DirectorySync yes"):
        replica.search_policies(["example.com"])


def test_the_resolver_forgets_its_answers_when_the_generation_moves(tmp_path: Path) -> None:
    _filled(tmp_path, f"ldap://127.0.0.1:9 {BASE}")
    replica = SyncReplica(ReplicaSettings.of(_settings(tmp_path, "DirectorySync yes")), start=False)
    assert replica.take_writer_role() and replica.feed is not None
    resolver = CachedResolver(
        Directory(replica, subdomains=False, minimum_key_bits=1024),
        ttl=300,
        negative_ttl=300,
        max_stale=0,
    )
    first = resolver.resolve("example.com")
    assert resolver.resolve("example.com") is first  # cached
    replica.feed.delete(["u-s1"])
    replica.commit()
    second = resolver.resolve("example.com")
    assert [k.selector for k in second.keys] == ["s2"]


def test_what_the_replica_says_of_itself_follows_the_feeds_own_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end of a refresh and a new cookie are committed by the feed itself, not through
    the facade: the entries and generation it reports (status.json, metrics) follow at once,
    not up to META_FRESH later (made long here, so that only a commit can refresh them)."""
    monkeypatch.setattr(sync_module, "META_FRESH", 3600.0)
    replica = SyncReplica(ReplicaSettings.of(_settings(tmp_path, "DirectorySync yes")), start=False)
    assert replica.take_writer_role() and replica.feed is not None
    feed = replica.feed
    assert (replica.view().entries, replica.generation) == (0, 0)
    feed.begin_refresh()
    feed.entry("u-policy", DOMAIN, POLICY)
    feed.entry("u-s1", f"dkimSignSelector=s1,{DOMAIN}", _key("s1"))
    feed.present(["u-policy", "u-s1"], False)
    feed.present(None, False)
    feed.refresh_done()  # commits by itself
    assert replica.view().entries == 2 and replica.generation == 1
    feed.entry("u-s2", f"dkimSignSelector=s2,{DOMAIN}", _key("s2"))
    feed.set_cookie("csn=2")  # commits by itself, with the entry before it
    assert replica.view().entries == 3 and replica.generation == 2
    replica.close()


def test_a_reload_keeps_the_replica_only_when_nothing_it_is_made_from_changed(
    tmp_path: Path,
) -> None:
    bind = ["LDAPBindUser cn=milter", "LDAPBindPassword s3cret"]
    before = ReplicaSettings.of(_settings(tmp_path, *bind))
    admin_password = tmp_path / "admin.password"
    admin_password.write_text("4dm1n\n")
    admin_password.chmod(0o600)
    admin = ["LDAPAdminBindUser cn=admin", f"LDAPAdminBindPasswordFile {admin_password}"]
    same = [*bind, "LDAPCacheTTL 10", "LDAPNegativeCacheTTL 5", *admin]
    assert ReplicaSettings.of(_settings(tmp_path, *same)) == before
    for changed in [
        "LDAPBindPassword other",
        "LDAPTimeout 9",
        "LDAPUseTLS yes",
        "LDAPAuthRealm EXAMPLE.COM",
        "DirectorySync no",
        "DirectoryMaxStale 60",
    ]:
        after = ReplicaSettings.of(_settings(tmp_path, *bind, changed))
        assert after != before, changed


def test_every_ldap_connection_keyword_reaches_the_connection_value(tmp_path: Path) -> None:
    """The backend sees only LdapSettings: a keyword missing from it would be ignored."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    settings = _settings(
        tmp_path,
        "LDAPBindUser cn=milter,dc=example,dc=com",
        "LDAPBindPassword s3cret",
        "LDAPAuthMechanism DIGEST-MD5",
        "LDAPAuthName milter",
        "LDAPAuthUser dn:cn=proxy",
        "LDAPAuthRealm EXAMPLE.COM",
        "LDAPUseTLS yes",
        f"LDAPTLSCACertFile {ca}",
        "LDAPTimeout 7",
    )
    assert settings.ldap == LdapSettings(
        uris=("ldap://127.0.0.1:9",),
        base_dn=BASE,
        bind_dn="cn=milter,dc=example,dc=com",
        password=Secret("s3cret"),
        sasl_mechanism="DIGEST-MD5",
        sasl_authcid="milter",
        sasl_authzid="dn:cn=proxy",
        sasl_realm="EXAMPLE.COM",
        start_tls=True,
        ca_cert_file=ca,
        timeout=7.0,
    )
    ldap_keywords = {name for name, _, _ in config.keyword_reference() if name.startswith("LDAP")}
    not_connection = {"LDAPCacheTTL", "LDAPNegativeCacheTTL"}  # the resolver's
    admin = {"LDAPAdminBindUser", "LDAPAdminBindPasswordFile"}  # see settings.ldap_admin
    password_file = {"LDAPBindPasswordFile"}  # the same field as LDAPBindPassword
    given = {
        "LDAPBindUser", "LDAPBindPassword", "LDAPAuthMechanism", "LDAPAuthName",
        "LDAPAuthUser", "LDAPAuthRealm", "LDAPUseTLS", "LDAPTLSCACertFile", "LDAPTimeout",
    }  # fmt: skip
    assert ldap_keywords - not_connection - admin - password_file == given


def test_private_keys_are_kept_as_der_and_sign_as_the_pem_they_came_as(tmp_path: Path) -> None:
    """A PEM key costs a third more room; the replica keeps what signs and nothing more."""
    from ldapdkim import keys
    from ldapdkim.directory.replica.consumer import SYNC_ATTRIBUTES
    from ldapdkim.model import Algorithm

    feed = _feed(tmp_path)
    key = keys.generate(Algorithm.RSA_SHA256)
    pem = keys.private_pem(key)
    feed.entry("u-r", f"dkimSignSelector=r,{DOMAIN}", {**_key("r"), "dkimSignPrivateKey": [pem]})
    feed.flush()
    ((_dn, attrs),) = feed.store.children(DOMAIN)
    (stored,) = attrs["dkimsignprivatekey"]
    assert len(stored) < len(pem) and not stored.startswith(b"-----")
    assert keys.public_key_b64(keys.load_private_key(stored, where="x")) == keys.public_key_b64(key)
    assert "dkimSignPublicKey" not in SYNC_ATTRIBUTES and "dkimSignPrivateKey" in SYNC_ATTRIBUTES
