"""RFC 7512 ``pkcs11:`` URIs: which key in which PKCS #11 token a key entry means.

A key entry whose private key lives in a token holds such a URI in
``dkimSignPrivateKey``, for example::

    pkcs11:token=ldapdkim;object=example.com-s2026;id=%01%02;type=private

The path attributes (RFC 7512 §2.3) select the token (``token``,
``manufacturer``, ``serial``, ``model``; ``slot-id``, ``slot-description``,
``slot-manufacturer``; ``library-*``) and the key in it (``object``, the
CKA_LABEL; ``id``, the CKA_ID; ``type``, which must be ``private`` when
given).  Values are percent-decoded (§2.3: ``id`` is raw bytes, the rest
UTF-8 text).  Vendor attributes (``x-...``) are ignored.

The query part is refused where it would take control from ldapdkim.conf:
``pin-value`` and ``pin-source`` (a PIN is never taken from the directory:
it comes from ``PKCS11PinFile``), ``module-name`` and ``module-path`` (the
module is ``PKCS11Module``; a directory writer must not make the milter load
a library of their choice).  Other query attributes are ignored.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, replace
from urllib.parse import quote, unquote_to_bytes

from ldapdkim.errors import KeyFormatError

SCHEME = "pkcs11:"

_TEXT = {
    "token": "token",
    "manufacturer": "manufacturer",
    "serial": "serial",
    "model": "model",
    "object": "label",
    "type": "object_type",
    "slot-description": "slot_description",
    "slot-manufacturer": "slot_manufacturer",
    "library-manufacturer": "library_manufacturer",
    "library-description": "library_description",
    "library-version": "library_version",
}
"""Textual path attributes and the :class:`Pkcs11Uri` field of each."""
_REFUSED_QUERY = ("pin-value", "pin-source", "module-name", "module-path")
_SAFE = string.ascii_letters + string.digits + "-._~"
_NAME = re.compile(r"\A[a-z][a-z0-9-]*\Z")
_TOKEN_FIELDS = (
    "token", "manufacturer", "serial", "model", "slot_id", "slot_description",
    "slot_manufacturer", "library_manufacturer", "library_description", "library_version",
)  # fmt: skip


@dataclass(frozen=True)
class Pkcs11Uri:
    """The attributes of a ``pkcs11:`` URI (None: not given, so anything matches)."""

    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    slot_id: int | None = None
    slot_description: str | None = None
    slot_manufacturer: str | None = None
    library_manufacturer: str | None = None
    library_description: str | None = None
    library_version: str | None = None
    label: str | None = None
    """``object``: the key's CKA_LABEL."""
    key_id: bytes | None = None
    """``id``: the key's CKA_ID."""
    object_type: str | None = None

    def token_part(self) -> Pkcs11Uri:
        """The attributes that select the token (and slot and library), without the key's."""
        return replace(self, label=None, key_id=None, object_type=None)

    def names_token(self) -> bool:
        """Whether any attribute narrows down the token."""
        return any(getattr(self, name) is not None for name in _TOKEN_FIELDS)

    def __str__(self) -> str:
        parts = []
        for attribute, name in _TEXT.items():
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{attribute}={quote(value, safe=_SAFE)}")
        if self.slot_id is not None:
            parts.append(f"slot-id={self.slot_id}")
        if self.key_id is not None:
            parts.append("id=" + "".join(f"%{byte:02X}" for byte in self.key_id))
        return SCHEME + ";".join(sorted(parts, key=_canonical_order))


def _canonical_order(part: str) -> int:
    order = ["token", "manufacturer", "serial", "model", "slot-", "library-", "object", "id="]
    return next((i for i, prefix in enumerate(order) if part.startswith(prefix)), len(order))


def parse(text: str) -> Pkcs11Uri:
    """The attributes of the ``pkcs11:`` URI ``text``.

    Raises:
        KeyFormatError: not an RFC 7512 URI, an attribute repeated or unknown, a
            broken percent-encoding, ``type`` other than ``private``, a PIN or
            module in the query, or no ``object`` or ``id`` to find the key by.
    """
    uri = text.strip()
    if not uri.startswith(SCHEME):
        raise KeyFormatError("it does not start with 'pkcs11:' (RFC 7512)")
    path, _, query = uri[len(SCHEME) :].partition("?")
    values: dict[str, object] = {}
    seen: set[str] = set()
    for name, raw in _attributes(path, ";"):
        if name.startswith("x-"):
            continue
        if name in seen:
            raise KeyFormatError(f"the pkcs11: URI gives {name!r} twice")
        seen.add(name)
        if name == "id":
            values["key_id"] = _decode(name, raw)
        elif name == "slot-id":
            if not raw.isdigit():
                raise KeyFormatError("the pkcs11: URI's slot-id is not a number")
            values["slot_id"] = int(raw)
        elif name in _TEXT:
            values[_TEXT[name]] = _text(name, raw)
        else:
            raise KeyFormatError(f"the pkcs11: URI has an unknown attribute {name!r} (RFC 7512)")
    for name, _raw in _attributes(query, "&"):
        if name in _REFUSED_QUERY:
            what = "PKCS11PinFile" if name.startswith("pin") else "PKCS11Module"
            raise KeyFormatError(
                f"the pkcs11: URI carries {name!r}; ldapdkim takes that only from {what} "
                f"in ldapdkim.conf: remove '{name}=...' from the URI"
            )
    found = Pkcs11Uri(**values)  # type: ignore[arg-type]
    if found.object_type not in (None, "private"):
        raise KeyFormatError(
            f"the pkcs11: URI names a {found.object_type!r} object; it must name the "
            "private key (type=private)"
        )
    if found.label is None and found.key_id is None:
        raise KeyFormatError("the pkcs11: URI names no key: give its object= or id=")
    return found


def _attributes(part: str, separator: str) -> list[tuple[str, str]]:
    found = []
    for item in part.split(separator) if part else []:
        name, equals, raw = item.partition("=")
        if not equals or _NAME.match(name) is None:
            raise KeyFormatError(f"the pkcs11: URI has a malformed attribute {item!r}")
        found.append((name, raw))
    return found


def _decode(name: str, raw: str) -> bytes:
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise KeyFormatError(f"the pkcs11: URI's {name} has a broken %-escape")
    return unquote_to_bytes(raw)


def _text(name: str, raw: str) -> str:
    try:
        return _decode(name, raw).decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFormatError(f"the pkcs11: URI's {name} is not UTF-8") from None
