"""RFC 4533's Sync State Control, read without pyasn1.

Content sync sends one Sync State Control with every entry.  python-ldap
decodes it with pyasn1, which costs about 70 µs an entry here: most of a
300 000-entry refresh.  Its value is small and fixed in shape (RFC 4533
§2.2)::

    syncStateValue ::= SEQUENCE {
        state ENUMERATED { present (0), add (1), modify (2), delete (3) },
        entryUUID syncUUID,               -- OCTET STRING (SIZE(16))
        cookie    syncCookie OPTIONAL }   -- OCTET STRING

:class:`SyncStateControl` reads exactly that, in definite-length BER, and
hands anything else (another encoding of the same value, or a broken one) to
python-ldap's own decoder, which accepts or refuses it as before.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ldap.controls import KNOWN_RESPONSE_CONTROLS
from ldap.syncrepl import SyncStateControl as _Pyasn1SyncStateControl

_SEQUENCE, _ENUMERATED, _OCTET_STRING = 0x30, 0x0A, 0x04


class _Unusual(Exception):
    """Not the plain encoding: leave the value to pyasn1."""


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A definite BER length at ``pos``: (length, position after it)."""
    if pos >= len(data):
        raise _Unusual
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 1 <= count <= 4 or pos + 1 + count > len(data):
        raise _Unusual  # indefinite, or absurdly long
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _element(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The contents of a primitive element with ``tag`` at ``pos``, and where it ends."""
    if pos >= len(data) or data[pos] != tag:
        raise _Unusual
    size, start = _length(data, pos + 1)
    end = start + size
    if end > len(data):
        raise _Unusual
    return data[start:end], end


def parse_sync_state(value: bytes) -> tuple[str, str, str | None]:
    """(state, entryUUID as text, cookie or None), as python-ldap's control gives them.

    Raises:
        ValueError: ``value`` is not in the plain encoding (the caller then
            asks pyasn1).
    """
    try:
        body, end = _element(value, 0, _SEQUENCE)
        if end != len(value):
            raise _Unusual
        state, pos = _element(body, 0, _ENUMERATED)
        uuid, pos = _element(body, pos, _OCTET_STRING)
        cookie: bytes | None = None
        if pos < len(body):
            cookie, pos = _element(body, pos, _OCTET_STRING)
        if pos != len(body) or len(state) != 1 or state[0] > 3 or len(uuid) != 16:
            raise _Unusual
    except _Unusual:
        raise ValueError("not the plain encoding of a syncStateValue") from None
    return (
        _Pyasn1SyncStateControl.opnames[state[0]],
        str(UUID(bytes=uuid)),
        # pyasn1 reads an OCTET STRING as text in ISO 8859-1, byte for byte.
        None if cookie is None else cookie.decode("latin-1"),
    )


class SyncStateControl(_Pyasn1SyncStateControl):  # type: ignore[misc]
    """python-ldap's control with a decoder of its plain encoding; same name, since
    python-ldap's consumer tells its controls apart by class name."""

    def decodeControlValue(self, encodedControlValue: bytes) -> None:
        try:
            self.state, self.entryUUID, self.cookie = parse_sync_state(encodedControlValue)
        except ValueError:
            super().decodeControlValue(encodedControlValue)


class _ResponseControls(dict[str, Any]):
    """python-ldap's registry of response controls, as it stands, with ours first."""

    def __missing__(self, control_type: str) -> Any:
        return KNOWN_RESPONSE_CONTROLS[control_type]


RESPONSE_CONTROLS = _ResponseControls({SyncStateControl.controlType: SyncStateControl})
"""For ``result4(resp_ctrl_classes=...)``: :class:`SyncStateControl` for the sync state,
python-ldap's classes for every other control."""
