"""389 Directory Server: the shipped schema and access control, on a real instance.

Resolution, signing and the content-sync replica run against 389-DS in
test_resolution.py, test_sign_verify_end_to_end.py and test_replica.py (the
``ds389`` cases); this module covers what only 389-DS has: the schema file
of ``schema/389ds/``, the ACIs of ``conf/389ds-aci.ldif`` and the limits
they lift.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import ldap
import ldap.filter
import ldif as ldif_module
import pytest
from harness.ds389 import PROJECT_SCHEMA, Ds389
from harness.ldapserver import LdapToolError
from harness.provisioning import genkey, without_version_line

from ldapdkim import schema

PRIVATE_KEY_FILTER = "(dkimSignPrivateKey=*)"


def schema_names() -> set[str]:
    """Every attribute type and object class name that the 389-DS schema file defines."""
    return set(re.findall(r"NAME '([^']+)'", PROJECT_SCHEMA.read_text()))


def provision(server: Ds389, base: str) -> tuple[str, bytes]:
    """Add example.org with two keys (as ``ldapdkim genkey`` prints them); return
    the domain's DN and the active key's private key as stored."""
    domain_dn = f"ou=example.org,{base}"
    ldif = genkey("example.org", "s2026", base, with_domain=True, bits=1024)
    ldif += without_version_line(
        genkey(
            "example.org", "s2027", base, algorithm="ed25519-sha256", state="pending",
            domain_dn=domain_dn,
        )
    )  # fmt: skip
    server.ldapadd(ldif)
    records = ldif_module.LDIFRecordList(io.StringIO(ldif))
    records.parse()
    [active] = [
        entry for dn, entry in records.all_records if dn.startswith("dkimSignSelector=s2026")
    ]
    return domain_dn, active["dkimSignPrivateKey"][0]


def search(
    conn: ldap.ldapobject.LDAPObject, base: str, filterstr: str, attrs: list[str] | None = None
) -> list[tuple[str, dict[str, list[bytes]]]]:
    return [
        (dn, entry)
        for dn, entry in conn.search_s(base, ldap.SCOPE_SUBTREE, filterstr, attrs)
        if dn is not None
    ]


@pytest.fixture
def bound(ds389: Ds389) -> Iterator[dict[str, ldap.ldapobject.LDAPObject]]:
    """Connections to the session's 389-DS as the milter, another DN and anonymous."""
    conns = {
        "milter": ds389.connect(ds389.milter_dn),
        "reader": ds389.connect(ds389.reader_dn),
        "anonymous": ds389.connect(),
    }
    yield conns
    for conn in conns.values():
        conn.unbind_s()


def test_the_schema_file_loads_and_defines_every_name(ds389: Ds389) -> None:
    conn = ds389.connect(ds389.reader_dn)
    try:
        [(_, subschema)] = conn.search_s(
            "cn=schema", ldap.SCOPE_BASE, "(objectClass=*)", ["attributeTypes", "objectClasses"]
        )
    finally:
        conn.unbind_s()
    loaded = {
        name
        for value in subschema["attributeTypes"] + subschema["objectClasses"]
        if b"X-ORIGIN 'ldapdkim'" in value
        for name in re.findall(r"NAME '([^']+)'", value.decode())
    }
    assert loaded == schema_names()
    assert {schema.POLICY_CLASS, schema.KEY_CLASS} <= loaded


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param(
            lambda ldif: ldif.replace("dkimSignKeyState: active\n", ""),
            65,
            id="a key needs its state",
        ),
        pytest.param(
            lambda ldif: ldif.replace("objectClass: organizationalUnit\n", "", 1),
            65,
            id="the policy class is auxiliary",
        ),
        pytest.param(
            lambda ldif: ldif.replace("dkimSignKeyState: active\n", "dkimSignNotAfter: 2030\n"),
            65,
            id="validity is GeneralizedTime",
        ),
    ],
)
def test_389ds_rejects_entries_that_break_the_schema(
    ds389: Ds389, change: object, code: int
) -> None:
    base = ds389.new_container()
    ldif = genkey("example.org", "s1", base, with_domain=True, bits=1024)
    broken = change(ldif)  # type: ignore[operator]
    assert broken != ldif
    with pytest.raises(LdapToolError) as failure:
        ds389.ldapadd(broken)
    assert failure.value.returncode in (code, 21), failure.value.stderr  # 21: invalid syntax


def test_only_the_milter_reads_or_filters_on_private_keys(
    ds389: Ds389, bound: dict[str, ldap.ldapobject.LDAPObject]
) -> None:
    domain_dn, private_key = provision(ds389, ds389.new_container())
    milter, reader, anonymous = bound["milter"], bound["reader"], bound["anonymous"]

    keys = search(milter, domain_dn, PRIVATE_KEY_FILTER, ["dkimSignPrivateKey"])
    assert len(keys) == 2
    assert private_key in [entry["dkimSignPrivateKey"][0] for _, entry in keys]

    # Another bound DN reads the policy and the public keys, not the private
    # ones, and learns nothing about them through a filter.
    entries = search(reader, domain_dn, f"(objectClass={schema.KEY_CLASS})")
    assert len(entries) == 2
    assert all("dkimSignPublicKey" in entry for _, entry in entries)
    assert all("dkimSignPrivateKey" not in entry for _, entry in entries)
    assert search(reader, domain_dn, f"(objectClass={schema.POLICY_CLASS})")
    assert search(reader, domain_dn, PRIVATE_KEY_FILTER) == []
    equality = ldap.filter.filter_format("(dkimSignPrivateKey=%s)", [private_key.decode()])
    assert search(reader, domain_dn, equality) == []
    key_dn = f"dkimSignSelector=s2026,{domain_dn}"
    assert reader.compare_s(key_dn, "dkimSignKeyState", b"active")
    with pytest.raises(ldap.INSUFFICIENT_ACCESS):
        reader.compare_s(key_dn, "dkimSignPrivateKey", private_key)
    assert milter.compare_s(key_dn, "dkimSignPrivateKey", private_key)

    # Anonymous clients see nothing below ou=domains.
    assert search(anonymous, ds389.domains_base, "(objectClass=*)") == []


def test_a_broader_allow_on_the_suffix_does_not_expose_the_keys(
    ds389: Ds389, bound: dict[str, ldap.ldapobject.LDAPObject]
) -> None:
    """An ACI letting everyone read every attribute, as some sample set-ups have, is
    overruled by the shipped deny."""
    domain_dn, _ = provision(ds389, ds389.new_container())
    broad = (
        '(targetattr = "*")(version 3.0; acl "everyone reads everything"; '
        'allow (read, search, compare) userdn = "ldap:///all";)'
    )
    ds389.ldapmodify(
        f"dn: {ds389.suffix}\nchangetype: modify\nadd: aci\naci: {broad}\n-\n",
        bind_dn=ds389.root_dn,
    )
    try:
        reader = bound["reader"]
        assert search(reader, domain_dn, PRIVATE_KEY_FILTER) == []
        entries = search(reader, domain_dn, f"(objectClass={schema.KEY_CLASS})", ["*"])
        assert len(entries) == 2 and all("dkimSignPrivateKey" not in e for _, e in entries)
        assert len(search(bound["milter"], domain_dn, PRIVATE_KEY_FILTER)) == 2
    finally:
        ds389.ldapmodify(
            f"dn: {ds389.suffix}\nchangetype: modify\ndelete: aci\naci: {broad}\n-\n",
            bind_dn=ds389.root_dn,
        )


def test_the_admin_writes_keys_and_no_one_else_does(ds389: Ds389) -> None:
    domain_dn, _ = provision(ds389, ds389.new_container())
    change = (
        f"dn: dkimSignSelector=s2027,{domain_dn}\nchangetype: modify\n"
        "replace: dkimSignKeyState\ndkimSignKeyState: active\n-\n"
    )
    ds389.ldapmodify(change)  # as the admin
    for dn in (ds389.milter_dn, ds389.reader_dn):
        with pytest.raises(LdapToolError) as failure:
            ds389.ldapmodify(change, bind_dn=dn)
        assert failure.value.returncode == 50  # insufficientAccess


def test_the_milter_has_no_size_limit(ds389: Ds389) -> None:
    """Content sync returns every domain and key at once; the server-wide limit
    (2000 entries by default, 5 here) must not cut the milter's search short."""
    base = ds389.new_container()
    ds389.ldapadd(
        "".join(
            f"dn: ou=d{i}.example,{base}\nobjectClass: top\nobjectClass: organizationalUnit\n"
            f"objectClass: dkimSignDomainPolicy\nou: d{i}.example\n"
            f"dkimSignDomainName: d{i}.example\n\n"
            for i in range(6)
        )
    )
    policy = f"(objectClass={schema.POLICY_CLASS})"
    limit = "dn: cn=config\nchangetype: modify\nreplace: nsslapd-sizelimit\nnsslapd-sizelimit: {}\n"
    ds389.ldapmodify(limit.format(5), bind_dn=ds389.root_dn)
    try:
        milter = ds389.connect(ds389.milter_dn)
        reader = ds389.connect(ds389.reader_dn)
        assert len(search(milter, base, policy, ["1.1"])) == 6
        with pytest.raises(ldap.SIZELIMIT_EXCEEDED):
            reader.search_s(base, ldap.SCOPE_SUBTREE, policy, ["1.1"])
        milter.unbind_s()
        reader.unbind_s()
    finally:
        ds389.ldapmodify(limit.format(2000), bind_dn=ds389.root_dn)


def test_the_server_offers_content_sync_to_the_milter(ds389: Ds389) -> None:
    conn = ds389.connect(ds389.milter_dn)
    try:
        [(_, root)] = conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["supportedControl"])
    finally:
        conn.unbind_s()
    assert b"1.3.6.1.4.1.4203.1.9.1.1" in root["supportedControl"]
