"""Names: mail domains, DKIM selectors and host names, each validated one way everywhere.

A From domain is chosen by whoever wrote the message.  Escaping (RFC 4515)
alone does not make it safe: OpenLDAP's IA5 matching stops at a NUL, so an
escaped ``example.org\\00.evil`` still equals ``example.org``.  So a domain is
first checked against the host-name syntax of RFC 1035 §2.3.1 / RFC 5890
(ASCII letters, digits and hyphens, IDNs as A-labels, at most 253 characters);
only a name that passes is looked up, and then escaped as well.

Every name is turned into ASCII the same way: IDNA 2008 with the UTS 46
mapping (``faß.de`` is ``xn--fa-hia.de``, never IDNA 2003's ``fass.de``), so
that a domain in the configuration, in the directory and in a From field
compare equal.  Selectors follow RFC 6376 §3.1 (``sub-domain`` labels: letters,
digits and inner hyphens); host names in host lists and URLs may also hold
``_``, which some internal DNS zones use.
"""

from __future__ import annotations

import re

import idna

from ldapdkim.errors import InvalidDomain, InvalidSelector

MAX_DOMAIN_LENGTH = 253
MAX_LABEL_LENGTH = 63

_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


def _shown(text: str) -> str:
    """A short, printable rendering of hostile input for error messages."""
    shown = text if len(text) <= 64 else text[:61] + "..."
    return ascii(shown)


def normalize_domain(text: str) -> str:
    """Return ``text`` as a lowercase ASCII domain name, or raise :class:`InvalidDomain`.

    IDNs are converted to A-labels (IDNA 2008 with UTS 46 mapping).  One
    trailing dot is accepted and dropped.

    >>> normalize_domain("Example.COM.")
    'example.com'
    >>> normalize_domain("bücher.example")
    'xn--bcher-kva.example'
    """
    if not text:
        raise InvalidDomain("empty domain")
    if _FORBIDDEN.search(text):
        raise InvalidDomain(
            f"domain {_shown(text)} contains a control character, space or NUL; "
            "it is not a host name"
        )
    if text.startswith("["):
        raise InvalidDomain(f"address literal {_shown(text)} is not a domain that can be signed")
    name = _ascii(text[:-1] if text.endswith(".") else text, text, "domain")
    if len(name) > MAX_DOMAIN_LENGTH:
        raise InvalidDomain(
            f"domain {_shown(text)} has {len(name)} characters; at most "
            f"{MAX_DOMAIN_LENGTH} are allowed (RFC 1035)"
        )
    for label in name.split("."):
        if not label:
            raise InvalidDomain(f"domain {_shown(text)} has an empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise InvalidDomain(
                f"domain {_shown(text)} has a label of {len(label)} characters; "
                f"at most {MAX_LABEL_LENGTH} are allowed"
            )
        if not _LDH_LABEL.match(label):
            raise InvalidDomain(
                f"domain {_shown(text)}: label {_shown(label)} is not letters, digits "
                "and inner hyphens (RFC 1035 host name)"
            )
    return name


def _ascii(name: str, text: str, what: str) -> str:
    """``name`` in lowercase ASCII, IDNs as A-labels (IDNA 2008, UTS 46 mapping)."""
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as err:
            raise InvalidDomain(f"{what} {_shown(text)} is not a valid IDN: {err}") from None
    return name.lower()


def _is_name_of(name: str, label: re.Pattern[str]) -> bool:
    """Whether ``name`` is at most 253 characters of dot-separated labels that match ``label``."""
    return len(name) <= MAX_DOMAIN_LENGTH and all(label.match(part) for part in name.split("."))


def normalize_selector(text: str) -> str:
    """Return ``text`` as a lowercase ASCII DKIM selector, or raise :class:`InvalidSelector`.

    RFC 6376 §3.1: ``selector = sub-domain *( "." sub-domain )``, IDNs as A-labels.

    >>> normalize_selector("Mail2024.Dept")
    'mail2024.dept'
    """
    try:
        name = _ascii(text, text, "selector") if text else ""
    except InvalidDomain as err:
        raise InvalidSelector(str(err)) from None
    if not _is_name_of(name, _LDH_LABEL):
        raise InvalidSelector(
            f"selector {_shown(text)} is not a DNS name of letters, digits and inner hyphens "
            "(RFC 6376 §3.1); e.g. mail2024"
        )
    return name


def normalize_host_name(text: str) -> str:
    """Return ``text`` as a lowercase ASCII host name without trailing dot (IDNs as A-labels).

    Unlike a mail domain, a host name (of an SMTP client, an LDAP or DNS
    server) may hold ``_``.

    Raises:
        InvalidDomain: not a host name; the message gives the rule.
    """
    name = _ascii(text.strip().rstrip("."), text, "host name")
    if not _is_name_of(name, _HOST_LABEL):
        raise InvalidDomain(
            f"{_shown(text)} is not a host name (labels of letters, digits, '-' and '_', "
            "at most 63 characters each, separated by dots)"
        )
    return name


def parent_domains(domain: str) -> list[str]:
    """The domain and each parent with at least two labels, most specific first.

    >>> parent_domains("a.b.example.com")
    ['a.b.example.com', 'b.example.com', 'example.com']
    """
    labels = domain.split(".")
    if len(labels) < 2:
        return [domain]
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def domain_of_address(address: str) -> str:
    """The normalized domain of ``local@domain``; raise :class:`InvalidDomain` if there is none."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise InvalidDomain(f"address {_shown(address)} has no domain part")
    return normalize_domain(domain)
