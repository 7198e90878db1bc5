"""The author of a message, read one way: the single mailbox of its From field (RFC 5322 §3.6.2).

What is signed as the author is what DMARC aligns (RFC 7489 §6.6.1) and what
a reader sees.  Parsers differ on unusual From fields: comments next to the
address, several addresses, groups, route syntax, quoted local parts holding
an ``@``, encoded words that decode to an address ("Composition Kills",
Chen, Paxson and Jiang, USENIX Security 2020).  So only a From field that no
two parsers could read as different domains is accepted:

* ``local@domain``, ``<local@domain>``, or ``display name <local@domain>``;
* the display name is words, quoted strings or encoded words (RFC 2047) whose
  decoded text holds no ``@``, ``<``, ``>``, ``,`` or control character;
* the local part is a dot-atom or a quoted string without ``@``; the domain
  passes :func:`ldapdkim.domainname.normalize_domain`.

Anything else (a comment, a second ``<``, a ``,`` ``:`` or ``;`` outside quotes,
control characters, text after the ``>``) raises
:class:`~ldapdkim.errors.MessageError` naming what was found.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

from ldapdkim.domainname import normalize_domain
from ldapdkim.errors import MessageError

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"\Z', re.DOTALL)
_PHRASE_WORD = re.compile(rf'(?:{_ATOM}|"(?:[^"\\]|\\.)*")', re.DOTALL)
_SPECIALS_IN_NAME = set("@<>,")


def author_address(value: bytes) -> str:
    """The one author address of a From field value (the bytes after the colon).

    Returns ``local@domain`` with the domain normalized (IDNs as A-labels).

    Raises:
        MessageError: the field is not one mailbox that every parser reads alike.
        InvalidDomain: its domain is not a valid host name.
    """
    text = value.decode("utf-8", "surrogateescape").replace("\r\n", "")
    if any("\udc80" <= c <= "\udcff" for c in text):
        raise MessageError("From holds bytes that are not UTF-8")
    if _CONTROL.search(text):
        raise MessageError("From holds a control character")
    display, address = _split(text.strip(" \t"))
    if display:
        _check_display_name(display)
    local, domain = _addr_spec(address)
    return f"{local}@{normalize_domain(domain)}"


def _split(text: str) -> tuple[str, str]:
    """(display name, addr-spec): the text outside quotes has at most one ``<...>``."""
    outside = _outside_quotes(text)
    for special, what in (("(", "a comment"), (")", "a comment"), (",", "several addresses")):
        if special in outside:
            raise MessageError(f"From holds {what} ({special!r} outside quotes)")
    for special in ":;":
        if special in outside:
            raise MessageError(f"From holds a group or route ({special!r} outside quotes)")
    opens, closes = outside.count("<"), outside.count(">")
    if opens == closes == 0:
        return "", text
    if opens != 1 or closes != 1 or outside.index("<") > outside.index(">"):
        raise MessageError("From holds unbalanced or repeated angle brackets")
    start, end = outside.index("<"), outside.index(">")
    if text[end + 1 :].strip(" \t"):
        raise MessageError("From has text after the '>'")
    return text[:start].strip(" \t"), text[start + 1 : end].strip(" \t")


def _outside_quotes(text: str) -> str:
    """``text`` with every quoted string's content blanked (escapes honoured)."""
    out: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
            out.append(" ")
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
            out.append(" " if char != '"' else '"')
        else:
            if char == '"':
                quoted = True
            out.append(char)
    if quoted:
        raise MessageError("From has an unterminated quoted string")
    return "".join(out)


def _check_display_name(display: str) -> None:
    rest = _ENCODED_WORD.sub(" ", display)
    if _PHRASE_WORD.sub(" ", rest).strip(" \t."):
        raise MessageError(f"From has a display name that is not words: {display[:40]!r}")
    for match in _ENCODED_WORD.finditer(display):
        decoded = _decode_word(match)
        if _CONTROL.search(decoded) or _SPECIALS_IN_NAME & set(decoded):
            raise MessageError("From has an encoded word that decodes to an address or control")


def _decode_word(match: re.Match[str]) -> str:
    charset, encoding, payload = match.groups()
    try:
        if encoding in "bB":
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
        else:
            raw = quopri.decodestring(payload.replace("_", " ").encode("ascii"), header=True)
        return raw.decode(charset.split("*")[0], "replace")
    except (LookupError, binascii.Error, ValueError, UnicodeEncodeError):
        raise MessageError("From has an encoded word that cannot be decoded") from None


def _addr_spec(address: str) -> tuple[str, str]:
    if "=?" in address:
        raise MessageError("From has an encoded word in the address itself")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise MessageError(f"From address {address[:60]!r} has no local part or no domain")
    if local.startswith('"'):
        if not _QUOTED.match(local):
            raise MessageError("From has a malformed quoted local part")
        if "@" in local:
            raise MessageError("From has a quoted local part holding '@'")
    elif not _DOT_ATOM.match(local):
        raise MessageError(f"From address {address[:60]!r} has a malformed local part")
    if "@" in local.strip('"') or not _DOT_ATOM.match(domain):
        raise MessageError(f"From address {address[:60]!r} is not local@domain")
    return local, domain
