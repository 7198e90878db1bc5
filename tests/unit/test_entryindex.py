"""The in-memory index: entries found the way the directory server finds them, held once."""

from __future__ import annotations

import pytest

from ldapdkim.directory.entries import locate, normalize_dn
from ldapdkim.directory.entryindex import EntryIndex, compact

POLICY = {"objectClass": [b"top", b"dkimSignDomainPolicy"], "dkimSignDomainName": [b"Ex.COM"]}
KEY = {"objectClass": [b"top", b"dkimSignKey"], "dkimSignSelector": [b"s1"]}

AWKWARD_DNS = [
    "ou=Example.COM,ou=Domains,dc=Test",
    "ou=a\\,b,ou=domains,dc=test",  # an escaped comma in a value
    "ou=a\\+b+cn=x,ou=domains,dc=test",  # an escaped plus, and a multi-valued RDN
    "ou= lead,ou=domains,dc=test",  # a leading space
    "ou = spaced , dc = test",  # spaces around the separators
    "ou=\\23hash,dc=test",  # a leading hash
]


@pytest.mark.parametrize("dn", AWKWARD_DNS)
def test_a_normalized_dn_normalizes_to_itself(dn: str) -> None:
    """The index's lookups by a DN rely on it: a key is a fixed point."""
    key, parent = locate(dn)
    assert key == normalize_dn(dn) and normalize_dn(key) == key
    assert normalize_dn(parent) == parent


@pytest.mark.parametrize("dn", AWKWARD_DNS)
def test_key_entries_are_found_below_their_parent_however_its_dn_is_written(dn: str) -> None:
    index = EntryIndex()
    index.add(dn, POLICY)
    index.add(f"dkimSignSelector=s1,{dn}", KEY)
    assert [e[0] for e in index.children(dn)] == [f"dkimSignSelector=s1,{dn}"]
    assert len(index.children(dn.upper())) == 1
    assert len(index.children(normalize_dn(dn))) == 1


def test_domain_names_match_without_regard_to_case() -> None:
    index = EntryIndex()
    index.add("ou=ex.com,dc=test", POLICY)
    assert [e[0] for e in index.policies(["ex.com"])] == ["ou=ex.com,dc=test"]
    assert index.policies(["EX.COM", "ex.com"]) == index.policies(["ex.com"])


def test_replacing_an_entry_refiles_it() -> None:
    index = EntryIndex()
    index.add("ou=ex.com,dc=test", POLICY)
    index.add("OU=EX.COM,DC=TEST", {**POLICY, "dkimSignDomainName": [b"other.example"]})
    assert index.policies(["ex.com"]) == []
    assert len(index.policies(["other.example"])) == 1 and len(index) == 1


def test_compact_attributes_are_lowercase_tuples_and_share_enumerated_values() -> None:
    # Two distinct bytes objects, as the server's answers give them.
    first = compact(
        {"objectClass": [bytes(bytearray(b"dkimSignKey"))], "dkimSignSelector": [b"s1"]}
    )
    second = compact(
        {"OBJECTCLASS": [bytes(bytearray(b"dkimSignKey"))], "dkimSignSelector": [b"s2"]}
    )
    assert first == {"objectclass": (b"dkimSignKey",), "dkimsignselector": (b"s1",)}
    assert first["objectclass"][0] is second["objectclass"][0]
    assert next(iter(first)) is next(iter(second))  # one copy of each attribute name
