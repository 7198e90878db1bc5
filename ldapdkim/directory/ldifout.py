"""Render provisioning LDIF (RFC 2849) for domain and key entries.

Domain entries are ``organizationalUnit`` entries named after the domain with
the auxiliary ``dkimSignDomainPolicy`` class; key entries sit beneath them,
named by selector.  DNs are built structurally from validated names, never by
string formatting.  No directory connection is made here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import ldap.dn
import ldif

from ldapdkim import keys, schema
from ldapdkim.model import Algorithm, KeyState, PrivateKey

Record = tuple[str, dict[str, list[bytes]]]


def child_dn(attribute: str, value: str, parent: str) -> str:
    """The DN ``attribute=value,parent`` with ``value`` escaped per RFC 4514.

    >>> child_dn("ou", "a,b", "dc=example,dc=com")
    'ou=a\\\\,b,dc=example,dc=com'
    """
    rdn = [[(attribute, value, ldap.AVA_STRING)]]
    return str(ldap.dn.dn2str(rdn + ldap.dn.str2dn(parent)))


def domain_dn(domain: str, base: str) -> str:
    """Where ``ldapdkim`` puts the entry of ``domain`` below ``base``."""
    return child_dn("ou", domain, base)


@dataclass(frozen=True)
class Delegation:
    """Who may sign for a domain (docs/howto/sender-authorization.md); empty: no rule."""

    senders: tuple[str, ...] = ()
    """Logins or group DNs (``dkimSignAllowedSender``)."""
    networks: tuple[str, ...] = ()
    """Networks (``dkimSignAllowedNetwork``)."""
    alignment: str | None = None
    """``dkimSignSenderAlignment``: none, exact or organizational."""
    arc_selector: str | None = None
    """``dkimSignArcSelector``: the key that seals ARC sets for the domain (docs/arc.md)."""


def domain_record(domain: str, base: str, delegation: Delegation | None = None) -> Record:
    """A new domain entry for ``domain`` with the default policy (and ``delegation``)."""
    attrs: dict[str, list[bytes]] = {
        "objectClass": [b"organizationalUnit", schema.POLICY_CLASS.encode()],
        "ou": [domain.encode()],
        schema.DOMAIN_NAME: [domain.encode()],
    }
    if delegation is not None:
        if delegation.senders:
            attrs[schema.ALLOWED_SENDER] = [s.encode() for s in delegation.senders]
        if delegation.networks:
            attrs[schema.ALLOWED_NETWORK] = [n.encode() for n in delegation.networks]
        if delegation.alignment:
            attrs[schema.SENDER_ALIGNMENT] = [delegation.alignment.encode()]
        if delegation.arc_selector:
            attrs[schema.ARC_SELECTOR] = [delegation.arc_selector.encode()]
    return domain_dn(domain, base), attrs


def generalized_time(moment: datetime) -> bytes:
    """RFC 4517 GeneralizedTime in UTC with a tenth of a second, e.g. ``20261128120000.0Z``.

    Active Directory accepts GeneralizedTime only with the fraction; OpenLDAP
    and 389-DS take either form, so the one written is the one all three read.
    """
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S.0Z").encode()


def key_record(
    parent_dn: str,
    selector: str,
    key: PrivateKey,
    *,
    state: KeyState = KeyState.ACTIVE,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    description: str | None = None,
    private_value: bytes | None = None,
) -> Record:
    """A key entry for ``key`` named ``dkimSignSelector=selector`` below ``parent_dn``;
    ``private_value`` is what ``dkimSignPrivateKey`` holds when not the PEM (a sealed value)."""
    return stored_key_record(
        parent_dn,
        selector,
        keys.algorithm_of(key),
        private_value or keys.private_pem(key),
        keys.public_key_b64(key),
        state=state,
        not_before=not_before,
        not_after=not_after,
        description=description,
    )


def stored_key_record(
    parent_dn: str,
    selector: str,
    algorithm: Algorithm,
    stored: bytes,
    public_b64: str,
    *,
    state: KeyState = KeyState.ACTIVE,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    description: str | None = None,
) -> Record:
    """A key entry whose ``dkimSignPrivateKey`` is ``stored`` as it is (a PEM key, a sealed
    value, or the ``pkcs11:`` URI of a key in a token) and whose public key is ``public_b64``."""
    attrs: dict[str, list[bytes]] = {
        "objectClass": [schema.KEY_CLASS.encode()],
        schema.SELECTOR: [selector.encode()],
        schema.ALGORITHM: [algorithm.value.encode()],
        schema.KEY_STATE: [state.value.encode()],
        schema.PRIVATE_KEY: [stored],
        schema.PUBLIC_KEY: [public_b64.encode()],
    }
    if not_before is not None:
        attrs[schema.NOT_BEFORE] = [generalized_time(not_before)]
    if not_after is not None:
        attrs[schema.NOT_AFTER] = [generalized_time(not_after)]
    if description:
        attrs["description"] = [description.encode()]
    return child_dn(schema.SELECTOR, selector, parent_dn), attrs


class LdifStream:
    """Writes records as LDIF to a text stream, with a version line first."""

    def __init__(self, out: IO[str]) -> None:
        out.write("version: 1\n\n")
        self._writer = ldif.LDIFWriter(out, base64_attrs=[schema.PRIVATE_KEY], cols=76)

    def write(self, record: Record) -> None:
        dn, attrs = record
        self._writer.unparse(dn, attrs)

    def write_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.write(record)


def render(records: Sequence[Record] | Iterable[Record]) -> str:
    """All ``records`` as one LDIF document."""
    out = io.StringIO()
    LdifStream(out).write_all(records)
    return out.getvalue()


def parse(text: str | bytes) -> list[tuple[str, Mapping[str, list[bytes]]]]:
    """Parse an LDIF document of content records (used by tests and the ldif: backend)."""
    data = text.encode() if isinstance(text, str) else text
    parser = ldif.LDIFRecordList(io.BytesIO(data))
    parser.parse()
    return [(dn, entry) for dn, entry in parser.all_records]
