"""Turn directory entries into typed policies and keys.

An entry is ``(dn, attributes)`` with attribute names lowercased and values as
bytes, as both directory backends return them.  Bad values never raise out of
here for a key: the key is returned with ``problem`` set, so one broken key
entry cannot stop a domain's other keys from signing.  A broken policy value
raises :class:`DirectoryError` naming the entry, attribute and fix.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone

import ldap.dn

from ldapdkim import keys, pkcs11uri, schema, sealing
from ldapdkim.errors import DirectoryError, KeyFormatError
from ldapdkim.model import (
    Algorithm,
    Alignment,
    Canonicalization,
    DomainPolicy,
    KeyState,
    SigningKey,
)

log = logging.getLogger(__name__)

Attributes = Mapping[str, Sequence[bytes]]
Entry = tuple[str, Attributes]


def normalize_dn(dn: str) -> str:
    """A DN in a form fit for comparison: parsed, lowercased, re-serialized."""
    return str(ldap.dn.dn2str(ldap.dn.str2dn(dn.lower())))


def parent_dn(dn: str) -> str:
    """The normalized DN of the entry above ``dn``."""
    return str(ldap.dn.dn2str(ldap.dn.str2dn(dn.lower())[1:]))


def locate(dn: str) -> tuple[str, str]:
    """The normalized DNs of ``dn`` and of the entry above it, from one parse."""
    rdns = ldap.dn.str2dn(dn.lower())
    return str(ldap.dn.dn2str(rdns)), str(ldap.dn.dn2str(rdns[1:]))


def lower_keys(attrs: Mapping[str, Sequence[bytes]]) -> dict[str, Sequence[bytes]]:
    """Attribute names are case-insensitive in LDAP; we index them in lowercase."""
    return {name.lower(): values for name, values in attrs.items()}


def _values(attrs: Attributes, name: str) -> list[str]:
    return [v.decode("utf-8", "replace").strip() for v in attrs.get(name.lower(), ())]


def _single(attrs: Attributes, name: str) -> str | None:
    values = _values(attrs, name)
    return values[0] if values else None


def _boolean(dn: str, attrs: Attributes, name: str) -> bool | None:
    value = _single(attrs, name)
    if value is None:
        return None
    if value.upper() in ("TRUE", "FALSE"):
        return value.upper() == "TRUE"
    raise DirectoryError(f"entry {dn!r}: {name} is {value!r}; use TRUE or FALSE")


_GENERALIZED_TIME = re.compile(r"(\d{10}|\d{12}|\d{14})(?:[.,]\d+)?(Z|[+-]\d{4})\Z")


def parse_generalized_time(value: str) -> datetime:
    """Parse RFC 4517 GeneralizedTime (``YYYYMMDDHH[MM[SS]][.f](Z|+hhmm)``) as an aware datetime.

    >>> parse_generalized_time("20261128120000Z").isoformat()
    '2026-11-28T12:00:00+00:00'
    """
    match = _GENERALIZED_TIME.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a GeneralizedTime such as 20261128120000Z")
    digits, zone = match.groups()
    digits = digits.ljust(14, "0")
    # The constructor checks the ranges; strptime would also import a module
    # lazily, which a milter that has dropped its privileges may not be able to read.
    year, month, day, hour, minute, second = (
        int(digits[i : i + width])
        for i, width in ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2))
    )
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a GeneralizedTime ({err})") from None
    if zone == "Z":
        return moment.replace(tzinfo=UTC)
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[3:5]))
    return moment.replace(tzinfo=timezone(sign * offset))


def policy_from_entry(entry: Entry) -> DomainPolicy:
    """The :class:`DomainPolicy` held on a ``dkimSignDomainPolicy`` entry."""
    dn, attrs = entry
    canon = _single(attrs, schema.CANONICALIZATION)
    expire = _single(attrs, schema.EXPIRE_SECONDS)
    algorithms = _values(attrs, schema.ALGORITHM)
    alignment = _single(attrs, schema.SENDER_ALIGNMENT)
    senders = [v for v in _values(attrs, schema.ALLOWED_SENDER) if v]
    arc_selector = _single(attrs, schema.ARC_SELECTOR)
    try:
        return DomainPolicy(
            dn=dn,
            names=tuple(sorted(v.lower() for v in _values(attrs, schema.DOMAIN_NAME))),
            enabled=_boolean(dn, attrs, schema.ENABLED),
            canonicalization=Canonicalization.parse(canon) if canon else None,
            sign_headers=tuple(v.lower() for v in _values(attrs, schema.SIGN_HEADER)) or None,
            oversign_headers=(
                tuple(v.lower() for v in _values(attrs, schema.OVERSIGN_HEADER)) or None
            ),
            algorithms=tuple(Algorithm.parse(a) for a in algorithms) or None,
            identity=_single(attrs, schema.IDENTITY),
            subdomains=_boolean(dn, attrs, schema.SUBDOMAINS),
            expire_seconds=int(expire) if expire else None,
            allowed_senders=tuple(v.lower() for v in senders if not is_dn(v)),
            allowed_groups=tuple(v for v in senders if is_dn(v)),
            allowed_networks=tuple(
                ipaddress.ip_network(v.strip(), strict=False)
                for v in _values(attrs, schema.ALLOWED_NETWORK)
            ),
            sender_alignment=Alignment.parse(alignment) if alignment else None,
            arc_selector=arc_selector.strip().lower() or None if arc_selector else None,
            arc_addresses=tuple(
                v.strip().lower() for v in _values(attrs, schema.ARC_ADDRESS) if v.strip()
            ),
        )
    except ValueError as err:
        raise DirectoryError(f"entry {dn!r}: {err}") from None


def key_from_entry(entry: Entry, minimum_bits: int) -> SigningKey:
    """The :class:`SigningKey` of a ``dkimSignKey`` entry; problems go into ``problem``."""
    dn, attrs = entry
    selector = (_single(attrs, schema.SELECTOR) or "").lower()
    problem: str | None = None
    try:
        algorithm = Algorithm.parse(_single(attrs, schema.ALGORITHM) or "")
    except ValueError as err:
        algorithm, problem = Algorithm.RSA_SHA256, f"{schema.ALGORITHM}: {err}"
    try:
        state = KeyState.parse(_single(attrs, schema.KEY_STATE) or "")
    except ValueError as err:
        state, problem = KeyState.REVOKED, problem or f"{schema.KEY_STATE}: {err}"
    not_before = not_after = None
    try:
        text = _single(attrs, schema.NOT_BEFORE)
        not_before = parse_generalized_time(text) if text else None
        text = _single(attrs, schema.NOT_AFTER)
        not_after = parse_generalized_time(text) if text else None
    except ValueError as err:
        problem = problem or str(err)
    key_data = None
    raw = attrs.get(schema.PRIVATE_KEY.lower())
    if raw:
        try:
            check_stored_key(raw[0], algorithm, minimum_bits, where=f"entry {dn!r}")
            key_data = raw[0]
        except KeyFormatError as err:
            problem = problem or str(err)
    elif state is KeyState.ACTIVE:
        problem = problem or (
            f"entry {dn!r} has no {schema.PRIVATE_KEY} that the milter's bind DN can read; "
            "check the ACL (conf/openldap-acl.ldif)"
        )
    if not selector:
        problem = problem or f"entry {dn!r} has no {schema.SELECTOR}"
    try:
        created_text = _single(attrs, "createtimestamp")
        created = parse_generalized_time(created_text) if created_text else None
    except ValueError:
        created = None  # an operational attribute: the audit does without it
    return SigningKey(
        dn=dn,
        selector=selector,
        algorithm=algorithm,
        state=state,
        key_data=key_data,
        public_key=_single(attrs, schema.PUBLIC_KEY),
        not_before=not_before,
        not_after=not_after,
        created=created,
        problem=problem,
    )


def check_stored_key(stored: bytes, algorithm: Algorithm, minimum_bits: int, *, where: str) -> None:
    """Check what ``dkimSignPrivateKey`` holds, as far as can be done without secrets.

    A plaintext key is parsed and checked against the entry's algorithm and
    MinimumKeyBits.  A sealed value is checked for its syntax only: it opens
    where it signs, with that host's key-encryption keys (:mod:`ldapdkim.sealing`).
    A ``pkcs11:`` URI names a key in a token, checked where it signs.

    Raises:
        KeyFormatError: the value cannot be a usable key; the message starts with ``where``.
    """
    form = keys.stored_form(stored)
    if form == "sealed":
        try:
            sealing.parse(stored)
        except KeyFormatError as err:
            raise KeyFormatError(f"{where}: {err}") from None
        return
    if form == "token":
        if not stored.isascii():
            raise KeyFormatError(f"{where}: the pkcs11: URI is not ASCII; see RFC 7512")
        try:
            pkcs11uri.parse(stored.decode("ascii"))
        except KeyFormatError as err:
            raise KeyFormatError(f"{where}: {err}") from None
        return
    private_key = keys.load_private_key(stored, where=where)
    keys.check_key(private_key, algorithm, minimum_bits, where=where)


def is_dn(value: str) -> bool:
    """Whether a ``dkimSignAllowedSender`` value names a group (a DN) rather than a login."""
    if "=" not in value:
        return False
    try:
        rdns = ldap.dn.str2dn(value)
    except ldap.DECODING_ERROR:
        return False
    return bool(rdns) and all(value for rdn in rdns for _, value, _ in rdn)
