"""schema/ad/ldapdkim.ldf defines what schema/ldapdkim.schema defines, in Active Directory's terms.

The Samba DC of the integration tests loads the file; this checks, without a
server, that it has not drifted from the schema source: the same names, the
same attribute and class numbers under the AD arc, the same single-valued
attributes, classes with the same MUST and MAY lists, and an AD syntax that
matches each LDAP syntax.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SCHEMA = Path(__file__).resolve().parents[2] / "schema"
AD_ARC = "1.2.840.113556.1.8000.2554.32984.23655.11295.16542.36336.7214136.10340405"
LDAP_TO_AD = {
    "1.3.6.1.4.1.1466.115.121.1.7": {("2.5.5.8", "1")},  # boolean
    "1.3.6.1.4.1.1466.115.121.1.27": {("2.5.5.9", "2")},  # integer
    "1.3.6.1.4.1.1466.115.121.1.40": {("2.5.5.10", "4")},  # octet string
    "1.3.6.1.4.1.1466.115.121.1.24": {("2.5.5.11", "24")},  # generalized time
    "1.3.6.1.4.1.1466.115.121.1.26": {("2.5.5.12", "64"), ("2.5.5.5", "22")},  # IA5
    "1.3.6.1.4.1.1466.115.121.1.15": {("2.5.5.12", "64")},  # directory string
}


def ldap_definitions() -> dict[str, dict[str, object]]:
    text = (SCHEMA / "ldapdkim.schema").read_text()
    found: dict[str, dict[str, object]] = {}
    definitions = re.split(r"^(?=attributetype|objectclass)", text, flags=re.MULTILINE)[1:]
    for definition in definitions:
        head = re.match(
            r"(attributetype|objectclass) \( ldapdkim\w+:(\d+) NAME '(\w+)'", definition
        )
        assert head is not None, definition
        kind, number, name = head.groups()
        body = definition[head.end() :]
        lists = {
            key: sorted(n for n in re.split(r"[\s$()]+", group or single) if n)
            for key, group, single in re.findall(r"(MUST|MAY) (?:\(([^)]*)\)|(\w+))", body)
        }
        syntax = re.search(r"SYNTAX ([\d.]+)", body)
        found[name] = {
            "oid": f"{AD_ARC}.{1 if kind == 'attributetype' else 2}.{number}",
            "single": "SINGLE-VALUE" in body,
            "syntax": syntax.group(1) if syntax else None,
            "must": lists.get("MUST", []),
            "may": lists.get("MAY", []),
        }
    return found


def ad_definitions() -> dict[str, dict[str, list[str]]]:
    text = (SCHEMA / "ad" / "ldapdkim.ldf").read_text()
    found: dict[str, dict[str, list[str]]] = {}
    for block in text.split("\n\n"):
        values: dict[str, list[str]] = {}
        for line in block.splitlines():
            if ": " in line and not line.startswith("#"):
                key, value = line.split(": ", 1)
                values.setdefault(key, []).append(value)
        if "lDAPDisplayName" in values:
            found[values["lDAPDisplayName"][0]] = values
    return found


LDAP, AD = ldap_definitions(), ad_definitions()


def test_the_same_names_are_defined() -> None:
    assert len(LDAP) == 22
    assert set(AD) == set(LDAP)


@pytest.mark.parametrize("name", sorted(LDAP))
def test_each_definition_matches_the_schema_source(name: str) -> None:
    source, ad = LDAP[name], AD[name]
    if "attributeID" in ad:
        assert ad["attributeID"] == [source["oid"]]
        assert ad["isSingleValued"] == ["TRUE" if source["single"] else "FALSE"]
        assert (ad["attributeSyntax"][0], ad["oMSyntax"][0]) in LDAP_TO_AD[str(source["syntax"])]
    else:
        assert ad["governsID"] == [source["oid"]]
        assert sorted(ad.get("mustContain", [])) == source["must"]
        assert sorted(ad.get("mayContain", [])) == source["may"]


def test_the_private_key_is_confidential_and_the_searched_names_indexed() -> None:
    flags = {name: int(AD[name]["searchFlags"][0]) for name in LDAP if "searchFlags" in AD[name]}
    assert flags["dkimSignPrivateKey"] & 0x80
    assert flags["dkimSignDomainName"] & 0x1 and flags["dkimSignSelector"] & 0x1
