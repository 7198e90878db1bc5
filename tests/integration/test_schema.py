"""Specification of the ldapdkim directory schema and its access control.

Checked against a real slapd: ``schema/ldapdkim.schema`` and the two forms
generated from it (``schema/ldapdkim.ldif``, ``schema/389ds/99ldapdkim.ldif``),
the access control the test server uses, and the shipped example
``conf/openldap-acl.ldif``.  Entries here are small hand-written LDIF with a
dummy private key; real keys are provisioned by the provisioning tests.
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import ldap
import ldap.filter
import ldap.ldapobject
import ldap.schema.models
import ldif
import pytest
from harness.common import find_binary, skip_or_fail
from harness.slapd import (
    PROJECT_SCHEMA,
    REPO_ROOT,
    SLAPD_BINARIES,
    LdapToolError,
    Slapd,
    SlapdError,
    require_binaries,
    stock_schema_dir,
    wait_for_bind,
)

ARC = "2.25.171264593737752151711171165823736596533"
SCHEMA_SOURCE = REPO_ROOT / "schema" / "ldapdkim.schema"
SCHEMA_389DS = REPO_ROOT / "schema" / "389ds" / "99ldapdkim.ldif"
MAKE_LDIF = REPO_ROOT / "schema" / "make-ldif.sh"
ACL_EXAMPLE = REPO_ROOT / "conf" / "openldap-acl.ldif"
OPENDKIM_SCHEMA = Path("/usr/share/doc/opendkim/opendkim.ldif")

ATTRIBUTES = {
    1: "dkimSignDomainName",
    2: "dkimSignEnabled",
    3: "dkimSignCanonicalization",
    4: "dkimSignHeader",
    5: "dkimSignOversignHeader",
    6: "dkimSignAlgorithm",
    7: "dkimSignIdentity",
    8: "dkimSignSubdomains",
    9: "dkimSignExpireSeconds",
    10: "dkimSignSelector",
    11: "dkimSignPrivateKey",
    12: "dkimSignPublicKey",
    13: "dkimSignKeyState",
    14: "dkimSignNotBefore",
    15: "dkimSignNotAfter",
    16: "dkimSignAllowedSender",
    17: "dkimSignAllowedNetwork",
    18: "dkimSignSenderAlignment",
    19: "dkimSignArcSelector",
    20: "dkimSignArcAddress",
}
CLASSES = {1: "dkimSignDomainPolicy", 2: "dkimSignKey"}

# Not a key: only needs to be recognisable when it comes back.
DUMMY_PRIVATE_KEY = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
DUMMY_PRIVATE_KEY_B64 = base64.b64encode(DUMMY_PRIVATE_KEY).decode()

Summary = tuple[Any, ...]


# ---- helpers ------------------------------------------------------------------


def domain_ldif(parent: str, domain: str, *extra: str) -> str:
    """LDIF for a mail-domain entry ou=<domain> with the policy class."""
    lines = [
        f"dn: ou={domain},{parent}",
        "objectClass: organizationalUnit",
        "objectClass: dkimSignDomainPolicy",
        f"ou: {domain}",
        f"dkimSignDomainName: {domain}",
        *extra,
    ]
    return "\n".join(lines) + "\n\n"


def key_ldif(domain_dn: str, selector: str, *extra: str, state: str = "active") -> str:
    """LDIF for a key entry below *domain_dn* with the dummy private key."""
    lines = [
        f"dn: dkimSignSelector={selector},{domain_dn}",
        "objectClass: dkimSignKey",
        f"dkimSignSelector: {selector}",
        "dkimSignAlgorithm: rsa-sha256",
        f"dkimSignKeyState: {state}",
        f"dkimSignPrivateKey:: {DUMMY_PRIVATE_KEY_B64}",
        "dkimSignPublicKey: MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
        *extra,
    ]
    return "\n".join(lines) + "\n\n"


@contextlib.contextmanager
def bound(server: Slapd, dn: str | None = None) -> Iterator[ldap.ldapobject.LDAPObject]:
    """A python-ldap connection bound as *dn* (None: anonymous), unbound afterwards."""
    conn = server.connect(dn)
    try:
        yield conn
    finally:
        conn.unbind_s()


@contextlib.contextmanager
def as_config_admin(server: Slapd) -> Iterator[ldap.ldapobject.LDAPObject]:
    """A connection over ldapi bound with SASL EXTERNAL as this (root) process."""
    conn = ldap.initialize(server.ldapi_uri)
    try:
        conn.sasl_external_bind_s()
        yield conn
    finally:
        conn.unbind_s()


def run_client(server: Slapd, tool: str, *args: str, user: int | None = None) -> str:
    """Run an OpenLDAP client tool against *server* (optionally as *user*); return stdout."""
    argv = [find_binary(tool) or tool, *args]
    result = subprocess.run(
        argv, capture_output=True, text=True, env=server.tool_env(), user=user, check=False
    )
    if result.returncode != 0:
        raise LdapToolError(argv, result.returncode, result.stderr)
    return result.stdout


def subschema_definitions(conn: ldap.ldapobject.LDAPObject) -> tuple[list[str], list[str]]:
    """The attributeTypes and objectClasses values the server publishes."""
    [(_, entry)] = conn.search_s(
        "cn=subschema", ldap.SCOPE_BASE, "(objectClass=*)", ["attributeTypes", "objectClasses"]
    )
    return (
        [value.decode() for value in entry["attributeTypes"]],
        [value.decode() for value in entry["objectClasses"]],
    )


def summarise(attribute_types: Iterable[str], object_classes: Iterable[str]) -> dict[str, Summary]:
    """Parse RFC 4512 definitions; keep ours, as comparable tuples keyed by OID."""
    summary: dict[str, Summary] = {}
    for text in object_classes:
        oc = ldap.schema.models.ObjectClass(text)
        if oc.oid.startswith(ARC + "."):
            summary[oc.oid] = (
                "class",
                oc.names,
                oc.desc,
                oc.kind,
                tuple(s.lower() for s in oc.sup),
                tuple(sorted(a.lower() for a in oc.must)),
                tuple(sorted(a.lower() for a in oc.may)),
            )
    for text in attribute_types:
        at = ldap.schema.models.AttributeType(text)
        if at.oid.startswith(ARC + "."):
            summary[at.oid] = (
                "attribute",
                at.names,
                at.desc,
                at.syntax,
                at.syntax_len,
                at.single_value,
                at.equality,
                at.ordering,
                at.substr,
                at.sup,
            )
    return summary


def search(
    conn: ldap.ldapobject.LDAPObject, base: str, filterstr: str, attrs: list[str] | None = None
) -> list[tuple[str, dict[str, list[bytes]]]]:
    """search_s over the subtree, with referral-free results only."""
    result: list[tuple[str, dict[str, list[bytes]]]] = conn.search_s(
        base, ldap.SCOPE_SUBTREE, filterstr, attrs
    )
    return [(dn, entry) for dn, entry in result if dn is not None]


def provision_example_domain(server: Slapd, parent: str, *, bind_dn: str | None = None) -> str:
    """Add example.org with two keys below *parent*; return the domain's DN."""
    domain_dn = f"ou=example.org,{parent}"
    server.ldapadd(
        domain_ldif(parent, "example.org", "dkimSignEnabled: TRUE")
        + key_ldif(domain_dn, "s2024")
        + key_ldif(domain_dn, "s2025", state="pending"),
        bind_dn=bind_dn,
    )
    return domain_dn


def assert_private_key_protected(server: Slapd, domain_dn: str) -> None:
    """The access rules for dkimSignPrivateKey hold for the keys below *domain_dn*."""
    key_filter = "(dkimSignPrivateKey=*)"

    # The milter reads the keys and may select entries by them.
    with bound(server, server.milter_dn) as milter:
        found = search(milter, domain_dn, key_filter, ["dkimSignPrivateKey"])
    assert len(found) == 2
    assert all(entry["dkimSignPrivateKey"] == [DUMMY_PRIVATE_KEY] for _, entry in found)

    # Any other DN sees the key entries, but neither the key nor, through a
    # filter, whether there is one (no presence or equality oracle).
    with bound(server, server.reader_dn) as reader:
        entries = search(reader, domain_dn, "(objectClass=dkimSignKey)")
        assert len(entries) == 2
        assert all("dkimSignPrivateKey" not in entry for _, entry in entries)
        assert all("dkimSignPublicKey" in entry for _, entry in entries)
        assert search(reader, domain_dn, key_filter) == []
        equality = ldap.filter.filter_format(
            "(dkimSignPrivateKey=%s)", [DUMMY_PRIVATE_KEY.decode()]
        )
        assert search(reader, domain_dn, equality) == []

    # Anonymous clients learn nothing, not even that ou=domains exists.
    with bound(server) as anonymous, pytest.raises(ldap.NO_SUCH_OBJECT):
        anonymous.search_s(server.domains_base, ldap.SCOPE_SUBTREE, "(objectClass=*)")

    # ldapi SASL EXTERNAL as uid 65534 is the milter, without a password.
    found_as_uid = run_client(
        server, "ldapsearch", "-Q", "-LLL", "-Y", "EXTERNAL", "-H", server.ldapi_uri,
        "-b", domain_dn, key_filter, "dkimSignSelector",
        user=server.milter_uid,
    )  # fmt: skip
    selectors = [line for line in found_as_uid.splitlines() if line.startswith("dkimSignSelector:")]
    assert sorted(selectors) == ["dkimSignSelector: s2024", "dkimSignSelector: s2025"]


# ---- the schema is loaded and enforced ----------------------------------------


def test_schema_is_loaded_at_start_up(slapd: Slapd) -> None:
    with bound(slapd) as anonymous:
        ours = summarise(*subschema_definitions(anonymous))
    assert {oid: s[1] for oid, s in ours.items() if s[0] == "attribute"} == {
        f"{ARC}.1.{n}": (name,) for n, name in ATTRIBUTES.items()
    }
    assert {oid: s[1] for oid, s in ours.items() if s[0] == "class"} == {
        f"{ARC}.2.{n}": (name,) for n, name in CLASSES.items()
    }
    with as_config_admin(slapd) as config:
        names = [
            entry["cn"][0]
            for _, entry in config.search_s(
                "cn=schema,cn=config", ldap.SCOPE_ONELEVEL, "(cn=*)", ["cn"]
            )
        ]
    assert any(name.endswith(b"}ldapdkim") for name in names)


def test_a_domain_with_every_attribute_and_its_keys_load(slapd: Slapd, ldap_base: str) -> None:
    domain_dn = f"ou=example.org,{ldap_base}"
    slapd.ldapadd(
        domain_ldif(
            ldap_base,
            "example.org",
            "dkimSignDomainName: mail.example.org",  # an alias
            "dkimSignEnabled: TRUE",
            "dkimSignCanonicalization: relaxed/simple",
            "dkimSignHeader: from",
            "dkimSignHeader: subject",
            "dkimSignHeader: date",
            "dkimSignOversignHeader: from",
            "dkimSignAlgorithm: rsa-sha256",
            "dkimSignAlgorithm: ed25519-sha256",
            "dkimSignIdentity: @example.org",
            "dkimSignSubdomains: FALSE",
            "dkimSignExpireSeconds: 604800",
            "description: signs for example.org",
        )
        + key_ldif(
            domain_dn,
            "s2024",
            "dkimSignNotBefore: 20240101000000Z",
            "dkimSignNotAfter: 20250101000000Z",
            "description: first key",
        )
    )
    with bound(slapd, slapd.milter_dn) as milter:
        [(dn, policy)] = search(milter, ldap_base, "(dkimSignDomainName=MAIL.example.org)")
        [(key_dn, key)] = search(
            milter,
            dn,
            "(&(objectClass=dkimSignKey)(dkimSignKeyState=active)"
            "(dkimSignNotBefore<=20240601000000Z))",
        )
    assert dn == domain_dn
    assert sorted(policy["dkimSignHeader"]) == [b"date", b"from", b"subject"]  # a set
    assert policy["dkimSignExpireSeconds"] == [b"604800"]
    assert key_dn == f"dkimSignSelector=s2024,{domain_dn}"
    assert key["dkimSignPrivateKey"] == [DUMMY_PRIVATE_KEY]


@pytest.mark.parametrize(
    ("entry", "code", "message"),
    [
        pytest.param(
            lambda base: domain_ldif(base, "a.example", "dkimSignEnabled: yes"),
            21,
            "dkimSignEnabled: value #0 invalid per syntax",
            id="Boolean is TRUE or FALSE, not yes",
        ),
        pytest.param(
            lambda base: domain_ldif(base, "a.example", "dkimSignExpireSeconds: a week"),
            21,
            "dkimSignExpireSeconds: value #0 invalid per syntax",
            id="expiry is an integer",
        ),
        pytest.param(
            lambda base: domain_ldif(
                base, "a.example", "dkimSignIdentity: @a.example", "dkimSignIdentity: @b.a.example"
            ),
            19,
            "dkimSignIdentity: multiple values provided",
            id="single-valued policy attribute takes one value",
        ),
        pytest.param(
            lambda base: key_ldif(base, "s1", "dkimSignKeyState: retired"),
            19,
            "dkimSignKeyState: multiple values provided",
            id="a key has one state",
        ),
        pytest.param(
            lambda base: key_ldif(base, "s1").replace("dkimSignKeyState: active\n", ""),
            65,
            "object class 'dkimSignKey' requires attribute 'dkimSignKeyState'",
            id="key without state",
        ),
        pytest.param(
            lambda base: key_ldif(base, "s1").replace("dkimSignAlgorithm: rsa-sha256\n", ""),
            65,
            "object class 'dkimSignKey' requires attribute 'dkimSignAlgorithm'",
            id="key without algorithm",
        ),
        pytest.param(
            lambda base: (
                f"dn: ou=b.example,{base}\nobjectClass: organizationalUnit\n"
                "objectClass: dkimSignDomainPolicy\nou: b.example\n"
                f"dkimSignDomainName:: {base64.b64encode('bücher.example'.encode()).decode()}\n"
            ),
            21,
            "dkimSignDomainName: value #0 invalid per syntax",
            id="domain must be ASCII (A-label)",
        ),
        pytest.param(
            lambda base: key_ldif(base, "s1", "dkimSignNotAfter: 2030-01-01"),
            21,
            "dkimSignNotAfter: value #0 invalid per syntax",
            id="validity is GeneralizedTime",
        ),
        pytest.param(
            lambda base: (
                f"dn: ou=a.example,{base}\nobjectClass: dkimSignDomainPolicy\n"
                "dkimSignDomainName: a.example\n"
            ),
            65,
            "no structural object class provided",
            id="policy class is auxiliary only",
        ),
        pytest.param(
            lambda base: domain_ldif(
                base, "a.example", f"dkimSignPrivateKey:: {DUMMY_PRIVATE_KEY_B64}"
            ),
            65,
            "attribute 'dkimSignPrivateKey' not allowed",
            id="keys live in key entries, not on the domain",
        ),
        pytest.param(
            lambda base: domain_ldif(base, "a.example").replace(
                "dkimSignDomainName: a.example\n", ""
            ),
            65,
            "requires attribute 'dkimSignDomainName'",
            id="policy needs a domain name",
        ),
    ],
)
def test_slapd_rejects_entries_that_break_the_schema(
    slapd: Slapd, ldap_base: str, entry: Callable[[str], str], code: int, message: str
) -> None:
    with pytest.raises(LdapToolError) as failure:
        slapd.ldapadd(entry(ldap_base))
    assert failure.value.returncode == code
    assert message in failure.value.stderr


def test_length_bounds_are_advisory_in_openldap(slapd: Slapd, ldap_base: str) -> None:
    # OpenLDAP does not enforce {253} or {63}: whoever writes entries (and
    # the milter, before it searches) must check domain and selector lengths.
    long_label = "a" * 63
    domain = ".".join([long_label] * 5) + ".example"
    assert len(domain) > 253
    slapd.ldapadd(domain_ldif(ldap_base, "long.example", f"dkimSignDomainName: {domain}"))


@pytest.mark.parametrize(
    "structural_entry",
    [
        "objectClass: organizationalUnit\nou: {name}\n",
        "objectClass: domain\ndc: {name}\n",
        "objectClass: dcObject\nobjectClass: organization\ndc: {name}\no: Example Org\n",
    ],
    ids=["organizationalUnit", "domain", "dcObject+organization"],
)
def test_policy_class_can_be_added_to_an_existing_entry(
    slapd: Slapd, ldap_base: str, structural_entry: str
) -> None:
    rdn_attr = "ou" if "ou: " in structural_entry else "dc"
    dn = f"{rdn_attr}=exampleorg,{ldap_base}"
    slapd.ldapadd(f"dn: {dn}\n" + structural_entry.format(name="exampleorg"))

    slapd.ldapmodify(
        f"dn: {dn}\nchangetype: modify\n"
        "add: objectClass\nobjectClass: dkimSignDomainPolicy\n-\n"
        "add: dkimSignDomainName\ndkimSignDomainName: example.org\n-\n"
        "add: dkimSignEnabled\ndkimSignEnabled: TRUE\n-\n"
    )

    with bound(slapd, slapd.milter_dn) as milter:
        [(found_dn, _)] = search(
            milter,
            ldap_base,
            "(&(objectClass=dkimSignDomainPolicy)(dkimSignDomainName=example.org))",
        )
    assert found_dn == dn

    # ... and removed again, leaving the entry as it was.
    slapd.ldapmodify(
        f"dn: {dn}\nchangetype: modify\n"
        "delete: objectClass\nobjectClass: dkimSignDomainPolicy\n-\n"
        "delete: dkimSignDomainName\n-\n"
        "delete: dkimSignEnabled\n-\n"
    )
    with bound(slapd, slapd.milter_dn) as milter:
        assert search(milter, ldap_base, "(objectClass=dkimSignDomainPolicy)") == []
        assert len(search(milter, dn, "(objectClass=*)")) == 1


def test_schema_loads_online_into_a_running_server(tmp_path: Path) -> None:
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path / "slapd", with_project_schema=False) as server:
        entry = domain_ldif(server.domains_base, "example.org")
        with pytest.raises(LdapToolError) as before:
            server.ldapadd(entry)
        # slapd does not know the class yet (it checks the classes first).
        assert before.value.returncode == 21
        assert "objectClass: value #1 invalid per syntax" in before.value.stderr

        # Exactly the command the schema file's header documents.
        run_client(
            server, "ldapadd", "-Q", "-Y", "EXTERNAL", "-H", server.ldapi_uri,
            "-f", str(PROJECT_SCHEMA),
        )  # fmt: skip
        server.ldapadd(entry + key_ldif(f"ou=example.org,{server.domains_base}", "s1"))

        # The schema was stored in slapd.d: it survives a restart.
        server.restart()
        with bound(server, server.milter_dn) as milter:
            assert len(search(milter, server.domains_base, "(dkimSignSelector=s1)")) == 1
            assert len(summarise(*subschema_definitions(milter))) == len(ATTRIBUTES) + len(CLASSES)


# ---- next to OpenDKIM's contrib schema ----------------------------------------


def _require_opendkim_schema() -> None:
    if not OPENDKIM_SCHEMA.is_file():
        skip_or_fail(f"{OPENDKIM_SCHEMA} not found (Debian: apt-get install opendkim)")


def test_loads_side_by_side_with_opendkim_contrib_schema(tmp_path: Path) -> None:
    require_binaries(*SLAPD_BINARIES)
    _require_opendkim_schema()
    with Slapd(tmp_path / "slapd", extra_schemas=[OPENDKIM_SCHEMA]) as server:
        dn = f"ou=example.org,{server.domains_base}"
        server.ldapadd(
            f"dn: {dn}\n"
            "objectClass: organizationalUnit\nobjectClass: dkimSignDomainPolicy\n"
            "objectClass: DKIM\n"
            "ou: example.org\n"
            "dkimSignDomainName: example.org\ndkimSignIdentity: @example.org\n"
            "DKIMDomain: example.org\nDKIMSelector: old\nDKIMIdentity: @example.org\n"
            "DKIMKey: not-a-key\n"
        )
        with bound(server, server.milter_dn) as milter:
            [(_, entry)] = search(
                milter, dn, "(&(DKIMSelector=old)(dkimSignDomainName=example.org))"
            )
            attribute_types, _ = subschema_definitions(milter)
    assert {
        "DKIMDomain",
        "DKIMSelector",
        "DKIMIdentity",
        "DKIMKey",
        "dkimSignDomainName",
        "dkimSignIdentity",
    } <= set(entry)
    opendkim_names = {
        name.lower()
        for text in attribute_types
        if "1.3.6.1.4.1.29426.2.2." in text
        for name in ldap.schema.models.AttributeType(text).names
    }
    assert opendkim_names == {"dkimselector", "dkimkey", "dkimidentity", "dkimdomain"}
    assert not opendkim_names & {name.lower() for name in ATTRIBUTES.values()}


def test_a_name_without_the_prefix_would_clash_with_opendkim(tmp_path: Path) -> None:
    # Why every name starts with dkimSign: LDAP names are case-insensitive.
    require_binaries(*SLAPD_BINARIES)
    _require_opendkim_schema()
    clash = tmp_path / "clash.ldif"
    clash.write_text(
        "dn: cn=clash,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: clash\n"
        f"olcAttributeTypes: ( {ARC}.99.1 NAME 'dkimDomain' "
        "SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 )\n"
    )
    server = Slapd(tmp_path / "slapd", extra_schemas=[OPENDKIM_SCHEMA, clash])
    with pytest.raises(SlapdError, match="Inconsistent duplicate attributeType"):
        server.start()


# ---- the three forms agree --------------------------------------------------


@pytest.fixture(scope="module")
def reference(slapd: Slapd) -> dict[str, Summary]:
    """Our definitions as the session server (loaded from ldapdkim.ldif) publishes them."""
    with bound(slapd) as anonymous:
        return summarise(*subschema_definitions(anonymous))


def test_ldif_defines_the_assigned_oids_names_and_syntaxes(reference: dict[str, Summary]) -> None:
    ia5_string = "1.3.6.1.4.1.1466.115.121.1.26"  # IA5 String
    # (syntax, single-valued) by attribute number; the rest: single-valued IA5.
    expected_syntax = {
        2: ("1.3.6.1.4.1.1466.115.121.1.7", True),  # Boolean
        8: ("1.3.6.1.4.1.1466.115.121.1.7", True),
        9: ("1.3.6.1.4.1.1466.115.121.1.27", True),  # Integer
        11: ("1.3.6.1.4.1.1466.115.121.1.40", True),  # Octet String
        14: ("1.3.6.1.4.1.1466.115.121.1.24", True),  # Generalized Time
        15: ("1.3.6.1.4.1.1466.115.121.1.24", True),
        16: ("1.3.6.1.4.1.1466.115.121.1.15", False),  # Directory String: logins, DNs
        17: (ia5_string, False),
        20: (ia5_string, False),  # ARC addresses
        1: (ia5_string, False),
        4: (ia5_string, False),
        5: (ia5_string, False),
        6: (ia5_string, False),
    }
    for number, name in ATTRIBUTES.items():
        kind, names, _, syntax, _, single, *_ = reference[f"{ARC}.1.{number}"]
        assert (kind, names) == ("attribute", (name,))
        assert (syntax, single) == expected_syntax.get(number, (ia5_string, True)), name

    kind, _, _, oc_kind, sup, must, may = reference[f"{ARC}.2.1"]
    assert (kind, sup, must) == ("class", ("top",), ("dkimsigndomainname",))
    assert oc_kind == 2  # AUXILIARY
    policy_attributes = [*range(2, 10), 16, 17, 18, 19, 20]
    assert may == tuple(
        sorted([ATTRIBUTES[n].lower() for n in policy_attributes] + ["description"])
    )

    kind, _, _, oc_kind, sup, must, may = reference[f"{ARC}.2.2"]
    assert (kind, sup) == ("class", ("top",))
    assert oc_kind == 0  # STRUCTURAL
    assert must == ("dkimsignalgorithm", "dkimsignkeystate", "dkimsignselector")
    assert may == (
        "description",
        "dkimsignnotafter",
        "dkimsignnotbefore",
        "dkimsignprivatekey",
        "dkimsignpublickey",
    )


def test_schema_source_and_ldif_define_the_same(
    reference: dict[str, Summary], tmp_path: Path
) -> None:
    # slapd.conf form: slapd itself parses ldapdkim.schema (no database needed).
    require_binaries(*SLAPD_BINARIES)
    stock = stock_schema_dir() / "core.schema"
    conf = tmp_path / "slapd.conf"
    conf.write_text(f'include "{stock}"\ninclude "{SCHEMA_SOURCE}"\n')
    socket_path = tmp_path / "ldapi"
    uri = "ldapi://" + urllib.parse.quote(str(socket_path), safe="")
    log_path = tmp_path / "slapd.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [find_binary("slapd") or "slapd", "-d", "none", "-f", str(conf), "-h", uri],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_bind(uri, process, log_path)
        conn = ldap.initialize(uri)
        try:
            from_source = summarise(*subschema_definitions(conn))
        finally:
            conn.unbind_s()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert from_source == reference


def test_389ds_form_defines_the_same(reference: dict[str, Summary], tmp_path: Path) -> None:
    with SCHEMA_389DS.open("rb") as stream:
        records = ldif.LDIFRecordList(stream)
        records.parse()
    [(dn, entry)] = records.all_records
    assert dn == "cn=schema"
    assert set(entry) == {"attributeTypes", "objectClasses"}
    attribute_types = [value.decode() for value in entry["attributeTypes"]]
    object_classes = [value.decode() for value in entry["objectClasses"]]

    # Parsed as RFC 4512 text, the way 389-DS reads it ...
    assert summarise(attribute_types, object_classes) == reference
    models: list[Any] = [ldap.schema.models.AttributeType(t) for t in attribute_types]
    models += [ldap.schema.models.ObjectClass(t) for t in object_classes]
    for model in models:
        assert model.oid.replace(".", "").isdigit(), f"not a numeric OID: {model.oid}"
        assert model.x_origin == ("ldapdkim",)

    # ... and as slapd parses it, in place of the project schema.
    require_binaries(*SLAPD_BINARIES)
    converted = tmp_path / "ldapdkim-389ds.ldif"
    converted.write_text(
        "dn: cn=ldapdkim389ds,cn=schema,cn=config\nobjectClass: olcSchemaConfig\n"
        "cn: ldapdkim389ds\n"
        + "".join(f"olcAttributeTypes: {v.decode()}\n" for v in entry["attributeTypes"])
        + "".join(f"olcObjectClasses: {v.decode()}\n" for v in entry["objectClasses"])
    )
    with Slapd(tmp_path / "slapd", with_project_schema=False, extra_schemas=[converted]) as server:
        with bound(server) as anonymous:
            assert summarise(*subschema_definitions(anonymous)) == reference


def test_generated_files_are_up_to_date(tmp_path: Path) -> None:
    require_binaries(*SLAPD_BINARIES)
    shell = shutil.which("sh") or "/bin/sh"
    subprocess.run([shell, str(MAKE_LDIF), str(tmp_path)], check=True, capture_output=True)
    assert (tmp_path / "ldapdkim.ldif").read_bytes() == PROJECT_SCHEMA.read_bytes(), (
        "schema/ldapdkim.ldif is stale or was edited by hand: run sh schema/make-ldif.sh"
    )
    assert (tmp_path / "389ds" / "99ldapdkim.ldif").read_bytes() == SCHEMA_389DS.read_bytes(), (
        "schema/389ds/99ldapdkim.ldif is stale or was edited by hand: run sh schema/make-ldif.sh"
    )


# ---- access control -----------------------------------------------------------


def test_only_the_milter_reads_private_keys(slapd: Slapd, ldap_base: str) -> None:
    domain_dn = provision_example_domain(slapd, ldap_base)
    assert_private_key_protected(slapd, domain_dn)


def test_admin_writes_keys_but_no_one_else_does(slapd: Slapd, ldap_base: str) -> None:
    domain_dn = provision_example_domain(slapd, ldap_base)
    change = (
        f"dn: dkimSignSelector=s2024,{domain_dn}\nchangetype: modify\n"
        f"replace: dkimSignPrivateKey\ndkimSignPrivateKey:: {DUMMY_PRIVATE_KEY_B64}\n-\n"
    )
    slapd.ldapmodify(change)
    for dn in (slapd.milter_dn, slapd.reader_dn):
        with pytest.raises(LdapToolError) as failure:
            slapd.ldapmodify(change, bind_dn=dn)
        assert failure.value.returncode == 50  # insufficientAccess


def test_milter_search_has_no_size_limit(slapd: Slapd, ldap_base: str) -> None:
    # slapd's default size limit is 500 entries; content sync returns all.
    slapd.ldapadd("".join(domain_ldif(ldap_base, f"d{i}.example") for i in range(501)))
    policy = "(objectClass=dkimSignDomainPolicy)"
    with bound(slapd, slapd.milter_dn) as milter:
        assert len(search(milter, ldap_base, policy, ["1.1"])) == 501
    with bound(slapd, slapd.reader_dn) as reader, pytest.raises(ldap.SIZELIMIT_EXCEEDED):
        reader.search_s(ldap_base, ldap.SCOPE_SUBTREE, policy, ["1.1"])


def example_acl_for(server: Slapd) -> str:
    """conf/openldap-acl.ldif with its placeholders replaced by the test server's DNs."""
    text = ACL_EXAMPLE.read_text()
    for placeholder, actual in [
        ("cn=ldapdkim,ou=services,dc=example,dc=com", server.milter_dn),
        ("cn=admin,dc=example,dc=com", server.admin_dn),
        ("ou=domains,dc=example,dc=com", server.domains_base),
        ("dc=example,dc=com", server.suffix),
    ]:
        text = text.replace(placeholder, actual)
    return text


def test_shipped_acl_example_applies_and_protects_keys(tmp_path: Path) -> None:
    require_binaries(*SLAPD_BINARIES)
    with Slapd(tmp_path / "slapd") as server:
        database = "olcDatabase={1}mdb,cn=config"
        # Start from a Debian-like database: everyone reads everything, no limits.
        server.ldapmodify(
            f"dn: {database}\nchangetype: modify\n"
            "replace: olcAccess\n"
            "olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none\n"
            "olcAccess: {1}to * by * read\n-\n"
            "delete: olcLimits\n-\n",
            external=True,
        )
        domain_dn = provision_example_domain(server, server.domains_base, bind_dn=server.root_dn)
        with bound(server, server.reader_dn) as reader:
            exposed = search(reader, domain_dn, "(dkimSignPrivateKey=*)")
        assert len(exposed) == 2, "precondition: without the example ACL the keys are readable"

        server.ldapmodify(example_acl_for(server), external=True)

        assert_private_key_protected(server, domain_dn)
        # The admin provisions without being the rootdn.
        server.ldapadd(key_ldif(domain_dn, "s2026", state="pending"))
        with as_config_admin(server) as config:
            [(_, db)] = config.search_s(
                database, ldap.SCOPE_BASE, "(objectClass=*)", ["olcAccess", "olcLimits"]
            )
        rules = [rule.decode() for rule in db["olcAccess"]]
        assert rules[0].startswith("{0}to attrs=dkimSignPrivateKey ")
        assert rules[1].startswith(f'{{1}}to dn.subtree="{server.domains_base}" ')
        assert rules[2].startswith("{2}to attrs=userPassword ")  # the old rules follow
        assert db["olcLimits"] == [
            f'{{0}}dn.exact="{server.milter_dn}" size=unlimited time=unlimited'.encode()
        ]
