"""The replica's bookkeeping, driven through the callbacks python-ldap's consumer makes."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from ldapdkim import config
from ldapdkim.config.ldap import LdapSettings
from ldapdkim.config.secret import Secret
from ldapdkim.directory.replica import statefile
from ldapdkim.directory.replica.statedir import STATE_FILE
from ldapdkim.directory.replica.store import ReplicaStore
from ldapdkim.directory.replica.sync import ReplicaSettings, SyncReplica
from ldapdkim.directory.resolution import Directory
from ldapdkim.directory.resolver import CachedResolver
from ldapdkim.errors import DamagedReplica, DirectoryUnavailable

POLICY = {"objectClass": [b"dkimSignDomainPolicy"], "dkimSignDomainName": [b"example.com"]}


def _key(selector: str) -> dict[str, list[bytes]]:
    return {
        "objectClass": [b"dkimSignKey"],
        "dkimSignSelector": [selector.encode()],
        "dkimSignKeyState": [b"active"],
    }


BASE = "ou=d,dc=test"
DOMAIN = f"ou=example.com,{BASE}"


def _filled() -> ReplicaStore:
    store = ReplicaStore()
    store.begin_refresh()
    store.entry("u-policy", DOMAIN, POLICY)
    store.entry("u-s1", f"dkimSignSelector=s1,{DOMAIN}", _key("s1"))
    store.entry("u-s2", f"dkimSignSelector=s2,{DOMAIN}", _key("s2"))
    for uuid in ("u-policy", "u-s1", "u-s2"):
        store.present([uuid], False)
    store.present(None, False)
    store.refresh_done()
    return store


def _selectors(store: ReplicaStore) -> list[str]:
    return sorted(e[1]["dkimsignselector"][0].decode() for e in store.children(DOMAIN))


def test_entries_are_indexed_by_name_and_parent() -> None:
    store = _filled()
    assert [dn for dn, _ in store.policies(["EXAMPLE.com"])] == [DOMAIN]
    assert _selectors(store) == ["s1", "s2"]
    assert store.loaded and len(store) == 3


def test_a_present_phase_deletes_what_the_server_did_not_present() -> None:
    store = _filled()
    store.set_cookie("rid=000,csn=1")
    before = store.generation
    store.begin_refresh()  # reconnect: the server presents the policy and s2 only
    store.present(["u-policy", "u-s2"], False)
    store.present(None, False)
    assert _selectors(store) == ["s2"]
    assert store.generation > before


def test_a_delete_phase_deletes_only_what_it_names() -> None:
    store = _filled()
    store.set_cookie("rid=000,csn=1")  # resuming: the server names what went
    store.begin_refresh()
    store.delete(["u-s1"])
    store.present(None, True)
    assert _selectors(store) == ["s2"]


def test_a_refresh_without_a_cookie_drops_whatever_the_server_did_not_send() -> None:
    """With no cookie the server sends all it has, however it ends the refresh."""
    store = _filled()
    store.set_cookie(None)  # e.g. the server could not resume from it
    store.begin_refresh()
    store.entry("u-s2", f"dkimSignSelector=s2,{DOMAIN}", _key("s2"))
    store.present(["u-s2"], False)
    store.present(None, True)  # a refreshDelete phase names no deletes
    store.refresh_done()
    assert _selectors(store) == ["s2"]
    assert store.policies(["example.com"]) == []


def test_a_resumed_refresh_keeps_what_a_delete_phase_does_not_name() -> None:
    store = _filled()
    store.set_cookie("rid=000,csn=1")
    store.begin_refresh()
    store.present(None, True)
    store.refresh_done()
    assert _selectors(store) == ["s1", "s2"]


def test_a_rename_moves_the_entry() -> None:
    store = _filled()
    other = f"ou=other.example,{BASE}"
    store.entry("u-s1", f"dkimSignSelector=s1,{other}", _key("s1"))
    assert _selectors(store) == ["s2"]
    assert len(store.children(other)) == 1


def _restored(path: Path) -> ReplicaStore:
    store = ReplicaStore()
    with statefile.SavedReplica(path) as saved:
        store.restore(saved.header.cookie, saved.chunks())
    return store


def test_a_saved_replica_restores_entries_and_cookie(tmp_path: Path) -> None:
    store = _filled()
    store.set_cookie("rid=001,csn=20261128")
    store.save(tmp_path / STATE_FILE, "ldap://x dc=test", 1.0)
    assert not store.changed
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600
    again = _restored(tmp_path / STATE_FILE)
    assert again.loaded and again.cookie == "rid=001,csn=20261128"
    assert _selectors(again) == ["s1", "s2"]
    again.delete(["u-s1"])  # entryUUIDs survive the round trip
    assert _selectors(again) == ["s2"]


def test_a_large_replica_is_saved_in_chunks_and_restored_whole(tmp_path: Path) -> None:
    store = ReplicaStore()
    for n in range(statefile.CHUNK * 2 + 5):
        store.entry(f"u-{n}", f"dkimSignSelector=s{n},{DOMAIN}", _key(f"s{n}"))
    store.refresh_done()
    store.save(tmp_path / STATE_FILE, "ldap://x dc=test", None)
    assert len(_restored(tmp_path / STATE_FILE)) == len(store)


def test_a_cut_short_replica_file_is_refused(tmp_path: Path) -> None:
    store = ReplicaStore()
    for n in range(statefile.CHUNK + 5):
        store.entry(f"u-{n}", f"dkimSignSelector=s{n},{DOMAIN}", _key(f"s{n}"))
    path = tmp_path / STATE_FILE
    store.save(path, "ldap://x dc=test", None)
    os.truncate(path, path.stat().st_size - 10)
    again = ReplicaStore()
    with (
        pytest.raises(DamagedReplica, match="ends early"),
        statefile.SavedReplica(path) as saved,
    ):
        again.restore(saved.header.cookie, saved.chunks())
    assert len(again) == 0 and not again.loaded


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch pwned",))


def test_reading_a_replica_file_never_runs_code(tmp_path: Path) -> None:
    """The file is pickles of plain data; one naming a function is refused, not called."""
    path = tmp_path / STATE_FILE
    with path.open("wb") as stream:
        pickle.dump({"format": 2, "directory": "d", "entries": 1}, stream)
        pickle.dump([_Boom()], stream)
    with (
        pytest.raises(DamagedReplica, match="plain data only"),
        statefile.SavedReplica(path) as saved,
    ):
        list(saved.chunks())
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_replica_file_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    with path.open("wb") as stream:
        pickle.dump({"format": 1, "directory": "d", "entries": 0}, stream)
    with pytest.raises(DamagedReplica, match="not a saved replica of this version"):
        statefile.SavedReplica(path)
    path.write_bytes(b'{"format": 1, "entries": []}')
    with pytest.raises(DamagedReplica, match=r"cannot be read"):
        statefile.SavedReplica(path)


def test_an_entry_deleted_and_recreated_under_the_same_dn_is_not_lost() -> None:
    """A refresh sends the new entry; the old one's absence must not remove it."""
    store = _filled()
    store.begin_refresh()
    store.entry("u-s1-new", f"dkimSignSelector=s1,{DOMAIN}", _key("s1"))
    store.present(["u-policy", "u-s2", "u-s1-new"], False)
    store.present(None, False)  # u-s1 was not presented: gone, but its DN lives on
    assert _selectors(store) == ["s1", "s2"]
    assert len(store) == 3


def _settings(tmp_path: Path, *lines: str) -> config.Settings:
    text = "\n".join([f"Directory ldap://127.0.0.1:9/{BASE}", f"StateDirectory {tmp_path}", *lines])
    return config.parse(text + "\n", "test.conf")


def test_a_saved_replica_serves_without_a_server(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "DirectorySync yes")
    directory_id = f"ldap://127.0.0.1:9 {BASE}"
    _filled().save(tmp_path / STATE_FILE, directory_id, None)
    replica = SyncReplica(ReplicaSettings.of(settings), start=False)
    assert replica.mode == "sync"
    assert [dn for dn, _ in replica.search_policies(["example.com"])] == [DOMAIN]
    assert replica.searches == 0


def test_sync_yes_without_a_replica_is_unavailable(tmp_path: Path) -> None:
    replica = SyncReplica(ReplicaSettings.of(_settings(tmp_path, "DirectorySync yes")), start=False)
    with pytest.raises(DirectoryUnavailable, match="DirectorySync yes"):
        replica.search_policies(["example.com"])


def test_the_resolver_forgets_its_answers_when_the_generation_moves(tmp_path: Path) -> None:
    replica = SyncReplica(ReplicaSettings.of(_settings(tmp_path, "DirectorySync yes")), start=False)
    replica.store = _filled()
    resolver = CachedResolver(
        Directory(replica, subdomains=False, minimum_key_bits=1024),
        ttl=300,
        negative_ttl=300,
        max_stale=0,
    )
    first = resolver.resolve("example.com")
    assert resolver.resolve("example.com") is first  # cached
    replica.store.delete(["u-s1"])
    second = resolver.resolve("example.com")
    assert [k.selector for k in second.keys] == ["s2"]


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
