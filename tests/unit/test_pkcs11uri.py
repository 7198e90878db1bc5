"""RFC 7512 ``pkcs11:`` URIs of keys in a token, and what a key entry may hold."""

from __future__ import annotations

import pytest

from ldapdkim import pkcs11uri
from ldapdkim.directory.entries import check_stored_key
from ldapdkim.errors import KeyFormatError
from ldapdkim.model import Algorithm
from ldapdkim.pkcs11uri import Pkcs11Uri


def test_the_attributes_of_a_key_uri_are_percent_decoded() -> None:
    uri = pkcs11uri.parse(
        "pkcs11:token=ldap%20dkim;manufacturer=SoftHSM%20project;serial=8f71205e53f57c00;"
        "model=SoftHSM%20v2;object=example.com-s2026;id=%01%02%ff;type=private"
    )
    assert uri == Pkcs11Uri(
        token="ldap dkim",
        manufacturer="SoftHSM project",
        serial="8f71205e53f57c00",
        model="SoftHSM v2",
        label="example.com-s2026",
        key_id=b"\x01\x02\xff",
        object_type="private",
    )
    assert uri.token_part() == Pkcs11Uri(
        token="ldap dkim", manufacturer="SoftHSM project", serial="8f71205e53f57c00",
        model="SoftHSM v2",
    )  # fmt: skip


def test_slot_library_and_vendor_attributes() -> None:
    uri = pkcs11uri.parse(
        "pkcs11:slot-id=7;slot-description=My%20slot;library-manufacturer=SoftHSM%20project;"
        "library-version=2.6;x-vendor=whatever;id=%0A"
    )
    assert (uri.slot_id, uri.slot_description, uri.library_version) == (7, "My slot", "2.6")
    assert uri.library_manufacturer == "SoftHSM project" and uri.key_id == b"\n"
    assert uri.names_token() and not Pkcs11Uri(label="x").names_token()


def test_a_uri_prints_back_as_it_parses() -> None:
    uri = Pkcs11Uri(token="ldapdkim", label="a b;c", key_id=b"\x00\xab", object_type="private")
    text = str(uri)
    assert text == "pkcs11:token=ldapdkim;object=a%20b%3Bc;id=%00%AB;type=private"
    assert pkcs11uri.parse(text) == uri


def test_unknown_query_attributes_are_ignored() -> None:
    assert pkcs11uri.parse("pkcs11:object=k?x-foo=1&bar=2").label == "k"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "pkcs11:object=k?pin-value=1234",
            "'pin-value'; ldapdkim takes that only from PKCS11PinFile",
        ),
        ("pkcs11:object=k?pin-source=file:/etc/pin", "only from PKCS11PinFile"),
        ("pkcs11:object=k?module-path=/tmp/evil.so", "only from PKCS11Module"),
        ("pkcs11:object=k?module-name=evil", "only from PKCS11Module"),
        ("pkcs11:token=ldapdkim", "names no key: give its object= or id="),
        ("pkcs11:", "names no key"),
        ("pkcs11:object=k;type=cert", "names a 'cert' object; it must name the private key"),
        ("pkcs11:object=k;object=l", "gives 'object' twice"),
        ("pkcs11:object=k;colour=blue", "unknown attribute 'colour'"),
        ("pkcs11:object=k;id=%zz", "id has a broken %-escape"),
        ("pkcs11:object=%ff", "object is not UTF-8"),
        ("pkcs11:object", "malformed attribute 'object'"),
        ("pkcs11:object=k;slot-id=one", "slot-id is not a number"),
        ("pkcs12:object=k", "does not start with 'pkcs11:'"),
    ],
)
def test_what_a_key_uri_may_not_be(text: str, says: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        pkcs11uri.parse(text)
    assert says in str(caught.value)
    assert "1234" not in str(caught.value)


def test_a_key_entry_with_a_broken_uri_is_a_key_problem() -> None:
    where = "entry 'dkimSignSelector=s,ou=example.com'"
    check_stored_key(b"pkcs11:token=t;object=k", Algorithm.RSA_SHA256, 1024, where=where)
    with pytest.raises(KeyFormatError, match=r"^entry .*: the pkcs11: URI names no key"):
        check_stored_key(b"pkcs11:token=t", Algorithm.RSA_SHA256, 1024, where=where)
    with pytest.raises(KeyFormatError, match="carries 'pin-value'"):
        check_stored_key(b"pkcs11:object=k?pin-value=1", Algorithm.RSA_SHA256, 1024, where=where)
