"""Following Active Directory's changes by USN, against a small in-memory directory.

:class:`FakeDc` answers the few searches :class:`UsnPoller` makes the way a
domain controller does (root DSE, uSNChanged filters, tombstones behind the
Show Deleted control); the entries go to a real LMDB replica.  The same
poller runs against a Samba AD domain controller in the integration tests.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import ldap
import pytest

from ldapdkim.directory.replica import usnpoll
from ldapdkim.directory.replica.consumer import SYNC_ATTRIBUTES, SYNC_FILTER
from ldapdkim.directory.replica.feed import ReplicaFeed
from ldapdkim.directory.replica.store import DATABASE, ReplicaStore
from ldapdkim.directory.replica.usnpoll import UsnPoller, parse_cookie, tracks_usn
from ldapdkim.errors import DirectoryUnavailable

BASE = "OU=dkim,DC=corp,DC=test"
NC = "DC=corp,DC=test"
CONFIGURATION = f"CN=Configuration,{NC}"
DC1 = "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=corp,DC=test"  # noqa: E501


class FakeDc:
    """Entries with a GUID and a uSNChanged; deletes leave tombstones."""

    def __init__(self, *, tombstones_readable: bool = True, dc: str = DC1) -> None:
        self.usn = 1000
        self.dc = dc
        self.tombstones_readable = tombstones_readable
        self.entries: dict[str, dict[str, Any]] = {}  # dn -> {guid, usn, attrs}
        self.tombstones: list[tuple[bytes, int]] = []
        self.searches: list[str] = []

    def add(self, dn: str, **attrs: str | list[str]) -> str:
        self.usn += 1
        guid = uuid.uuid4()
        values = {k: [v.encode()] if isinstance(v, str) else [x.encode() for x in v]
                  for k, v in attrs.items()}  # fmt: skip
        self.entries[dn] = {"guid": guid.bytes_le, "usn": self.usn, "attrs": values}
        return str(guid)

    def modify(self, dn: str, name: str, value: str) -> None:
        self.usn += 1
        self.entries[dn]["usn"] = self.usn
        self.entries[dn]["attrs"][name] = [value.encode()]

    def delete(self, dn: str) -> None:
        self.usn += 1
        self.tombstones.append((self.entries.pop(dn)["guid"], self.usn))

    def unrelated_change(self) -> None:
        self.usn += 1  # a user logs on somewhere in the domain

    # -- what python-ldap's connection offers ------------------------------

    def search_st(self, base: str, scope: int, filterstr: str, attrs: list[str],
                  attrsonly: int, timeout: float) -> list[Any]:  # fmt: skip
        assert base == ""
        return [("", {"highestCommittedUSN": [str(self.usn).encode()],
                      "dsServiceName": [self.dc.encode()],
                      "namingContexts": [NC.encode(), CONFIGURATION.encode()]})]  # fmt: skip

    def search_ext(self, base: str, scope: int, filterstr: str, attrs: list[str],
                   serverctrls: list[Any], timeout: float) -> int:  # fmt: skip
        assert base == BASE and scope == ldap.SCOPE_SUBTREE
        self.searches.append(filterstr)
        since = re.search(r"\(uSNChanged>=(\d+)\)", filterstr)
        low = int(since.group(1)) if since else 0
        self._result = [
            (dn, {**e["attrs"], "objectGUID": [e["guid"]]})
            for dn, e in self.entries.items()
            if e["usn"] >= low
        ]
        return 1

    def result3(self, msgid: int, timeout: float) -> tuple[Any, ...]:
        return 101, self._result, msgid, []

    def search_ext_s(self, base: str, scope: int, filterstr: str, attrs: list[str],
                     serverctrls: list[Any], timeout: float,
                     sizelimit: int = 0) -> list[Any]:  # fmt: skip
        """Tombstones, behind the Show Deleted control; an account without the right to
        list them finds none, as on a real DC."""
        assert base == f"CN=Deleted Objects,{NC}" and scope == ldap.SCOPE_ONELEVEL
        assert [c.controlType for c in serverctrls] == ["1.2.840.113556.1.4.417"]
        self.searches.append(f"tombstones {filterstr}")
        if not self.tombstones_readable:
            return []
        since = re.search(r"\(uSNChanged>=(\d+)\)", filterstr)
        low = int(since.group(1)) if since else 0
        return [(f"CN=x\\0ADEL,{base}", {"objectGUID": [g]})
                for g, usn in self.tombstones if usn >= low][: sizelimit or None]  # fmt: skip


def domain(dc: FakeDc, name: str, *selectors: str) -> None:
    dn = f"OU={name},{BASE}"
    dc.add(dn, objectClass=["organizationalUnit", "dkimSignDomainPolicy"],
           dkimSignDomainName=name)  # fmt: skip
    for selector in selectors:
        dc.add(f"CN={selector},{dn}", objectClass=["dkimSignKey"], dkimSignSelector=selector,
               dkimSignKeyState="active", dkimSignAlgorithm="ed25519-sha256")  # fmt: skip


@pytest.fixture
def feed(tmp_path: Path) -> ReplicaFeed:
    return ReplicaFeed(ReplicaStore(tmp_path / DATABASE, f"ldaps://dc1 {BASE}"))


def selectors(feed: ReplicaFeed, name: str) -> list[str]:
    [(policy_dn, _)] = feed.store.policies([name])
    return sorted(
        attrs["dkimsignselector"][0].decode() for _, attrs in feed.store.children(policy_dn)
    )


def poller() -> UsnPoller:
    return UsnPoller(BASE, SYNC_FILTER, SYNC_ATTRIBUTES, timeout=5)


def test_the_first_poll_is_a_full_refresh_and_commits_the_usn_as_cookie(feed: ReplicaFeed) -> None:
    dc = FakeDc()
    domain(dc, "example.com", "s1", "s2")
    domain(dc, "example.org", "s1")
    assert poller().poll(dc, feed) == 5
    assert feed.loaded and feed.store.meta().loaded
    assert selectors(feed, "example.com") == ["s1", "s2"]
    assert parse_cookie(feed.store.meta().cookie) == (dc.usn, DC1)


def test_a_poll_fetches_only_what_changed_and_nothing_when_the_usn_stands_still(
    feed: ReplicaFeed,
) -> None:
    dc = FakeDc()
    domain(dc, "example.com", "s1")
    follow = poller()
    follow.poll(dc, feed)
    dc.searches.clear()
    assert follow.poll(dc, feed) == 0 and dc.searches == []  # only the root DSE was read

    dc.add(f"CN=s2,OU=example.com,{BASE}", objectClass=["dkimSignKey"], dkimSignSelector="s2",
           dkimSignKeyState="active", dkimSignAlgorithm="ed25519-sha256")  # fmt: skip
    dc.modify(f"CN=s1,OU=example.com,{BASE}", "dkimSignKeyState", "retired")
    assert follow.poll(dc, feed) == 2
    # No deletion ever, so no tombstone to see: the entries are listed to find
    # deletions (the tombstone tests below show the search it saves).
    assert dc.searches == [
        f"(&{SYNC_FILTER}(uSNChanged>={dc.usn - 1}))",
        "tombstones (isDeleted=TRUE)",
        SYNC_FILTER,
    ]
    [(policy_dn, _)] = feed.store.policies(["example.com"])
    states = {a["dkimsignselector"][0]: a["dkimsignkeystate"][0]
              for _, a in feed.store.children(policy_dn)}  # fmt: skip
    assert states == {b"s1": b"retired", b"s2": b"active"}
    assert parse_cookie(feed.store.meta().cookie) == (dc.usn, DC1)


def test_deletions_come_from_tombstones(feed: ReplicaFeed) -> None:
    dc = FakeDc()
    domain(dc, "example.com", "s1", "s2", "s3")
    follow = poller()
    follow.poll(dc, feed)
    dc.delete(f"CN=s3,OU=example.com,{BASE}")
    follow.poll(dc, feed)
    dc.delete(f"CN=s2,OU=example.com,{BASE}")
    dc.searches.clear()
    follow.poll(dc, feed)
    assert selectors(feed, "example.com") == ["s1"]
    assert follow.tombstones_readable is True
    assert dc.searches == [
        f"(&{SYNC_FILTER}(uSNChanged>={dc.usn}))",
        f"tombstones (&(isDeleted=TRUE)(uSNChanged>={dc.usn}))",
    ]  # no listing of the whole base


def test_without_access_to_tombstones_deletions_are_found_by_listing(feed: ReplicaFeed) -> None:
    dc = FakeDc(tombstones_readable=False)
    domain(dc, "example.com", "s1", "s2")
    domain(dc, "example.org", "s1")
    follow = poller()
    follow.poll(dc, feed)
    dc.delete(f"CN=s2,OU=example.com,{BASE}")
    dc.delete(f"CN=s1,OU=example.org,{BASE}")
    dc.delete(f"OU=example.org,{BASE}")
    dc.searches.clear()
    follow.poll(dc, feed)
    assert follow.tombstones_readable is False
    assert f"(&{SYNC_FILTER}(uSNChanged>={dc.usn - 2}))" in dc.searches
    assert SYNC_FILTER in dc.searches  # the listing
    assert selectors(feed, "example.com") == ["s1"]
    assert feed.store.policies(["example.org"]) == []
    assert feed.store.meta().entries == 2


def test_changes_elsewhere_in_the_domain_move_the_cookie_only(feed: ReplicaFeed) -> None:
    dc = FakeDc()
    domain(dc, "example.com", "s1")
    follow = poller()
    follow.poll(dc, feed)
    dc.unrelated_change()
    assert follow.poll(dc, feed) == 0
    assert parse_cookie(feed.store.meta().cookie) == (dc.usn, DC1)
    assert selectors(feed, "example.com") == ["s1"]


@pytest.mark.parametrize(
    "cookie",
    [
        None,
        "rid=000,csn=20261201000000.000000Z#000000#000#000000",  # from content sync
        f"usn:5#{DC1.replace('DC1', 'DC2')}",  # another domain controller
        f"usn:999999#{DC1}",  # ahead of this DC: restored from a backup
    ],
    ids=["none", "content sync", "another DC", "ahead of the DC"],
)
def test_a_cookie_that_does_not_fit_brings_a_full_refresh(
    feed: ReplicaFeed, cookie: str | None
) -> None:
    ghost = {"objectClass": [b"dkimSignDomainPolicy"], "dkimSignDomainName": [b"ghost.example"]}
    feed.entry("ghost", f"OU=ghost.example,{BASE}", ghost)
    feed.set_cookie(cookie)
    feed.refresh_done()
    dc = FakeDc()
    domain(dc, "example.com", "s1")
    assert poller().poll(dc, feed) == 2
    assert feed.store.policies(["ghost.example"]) == []
    assert selectors(feed, "example.com") == ["s1"]


def test_only_a_server_with_update_sequence_numbers_is_polled() -> None:
    assert tracks_usn({"highestCommittedUSN": [b"4711"]})
    assert not tracks_usn({"supportedControl": [b"1.3.6.1.4.1.4203.1.9.1.1"]})


def test_an_entry_moved_out_of_the_base_is_dropped_by_the_hourly_listing(
    feed: ReplicaFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    dc = FakeDc()
    domain(dc, "example.com", "s1")
    domain(dc, "example.org", "s1")
    dc.delete(f"CN=s1,OU=example.org,{BASE}")  # a tombstone exists: the account sees them
    follow = poller()
    follow.poll(dc, feed)

    def move_out(dn: str) -> None:
        dc.usn += 1
        del dc.entries[dn]  # moved elsewhere: no tombstone

    move_out(f"CN=s1,OU=example.com,{BASE}")
    follow.poll(dc, feed)
    assert follow.tombstones_readable is True
    assert selectors(feed, "example.com") == ["s1"]  # nothing tells of it yet
    monkeypatch.setattr(usnpoll, "LISTING_INTERVAL", 0.0)
    dc.unrelated_change()
    follow.poll(dc, feed)
    assert selectors(feed, "example.com") == []


def test_a_server_without_update_sequence_numbers_is_unavailable_not_a_crash(
    feed: ReplicaFeed,
) -> None:
    """Failover may reach a server that is not Active Directory: the sync thread reconnects."""
    dc = FakeDc()
    dc.search_st = lambda *args: [("", {"namingContexts": [NC.encode()]})]  # type: ignore[method-assign]
    with pytest.raises(DirectoryUnavailable, match="no highestCommittedUSN"):
        poller().poll(dc, feed)
