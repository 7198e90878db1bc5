"""The author of a message, read one way: the single mailbox of its From field (RFC 5322 §3.6.2).

What is signed as the author is what DMARC aligns (RFC 7489 §6.6.1) and what
a reader sees.  Parsers differ on unusual From fields: several addresses,
groups, route syntax, quoted local parts holding an ``@``, encoded words that
decode to an address, obsolete syntax inside an address ("Composition
Kills", Chen, Paxson and Jiang, USENIX Security 2020).  So the field is read
by RFC 5322 §3.2-3.4 and accepted only when no two parsers could read it as
different domains:

* ``local@domain``, ``<local@domain>``, or ``display name <local@domain>``;
* comments and whitespace (CFWS) wherever RFC 5322 puts them outside the
  obsolete syntax: around the display name's words, around the angle
  brackets, inside them around the address, around the local part and the
  domain; comments nest and hold quoted pairs (§3.2.2).  They are never read
  for the address: the addr-spec alone chooses the key;
* the display name is words, quoted strings or encoded words (RFC 2047) whose
  decoded text holds no ``@``, ``<``, ``>``, ``,`` or control character; an
  encoded word in a comment is held to the same rule;
* the local part is a dot-atom or a quoted string without ``@``; the domain
  is a dot-atom that passes :func:`ldapdkim.domainname.normalize_domain`.

Anything else (a ``,`` ``:`` or ``;`` outside quotes and comments, a second
``<``, text after the ``>``, whitespace or a comment between the dots of an
address (``obs-local-part``, ``obs-domain``), a domain literal, control
characters, an unterminated quoted string or comment) raises
:class:`~ldapdkim.errors.MessageError` naming what was found.
"""

from __future__ import annotations

import base64
import binascii
import functools
import quopri
import re
from dataclasses import dataclass

from ldapdkim.domainname import normalize_domain
from ldapdkim.errors import MessageError

_UNDECODED = re.compile("[\udc80-\udcff]")
"""What ``surrogateescape`` makes of bytes that are not UTF-8."""
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"
_ATOM = rf"[{_ATEXT}]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*\Z")
_ATOM_RUN = re.compile(rf"[{_ATEXT}.]+")
_SPECIALS_IN_NAME = set("@<>,")


@dataclass(frozen=True)
class _Token:
    """One lexical token of a From field (RFC 5322 §3.2)."""

    kind: str
    """``atom`` (atext and dots), ``quoted``, ``comment``, or the special character itself."""
    text: str


def author_address(value: bytes) -> str:
    """The one author address of a From field value (the bytes after the colon).

    Returns ``local@domain`` with the domain normalized (IDNs as A-labels).
    A sender's From field comes back message after message: the address read
    from a short value is kept (:data:`KEPT_AUTHORS` values; a refusal is not kept).

    Raises:
        MessageError: the field is not one mailbox that every parser reads alike.
        InvalidDomain: its domain is not a valid host name.
    """
    if len(value) <= _KEPT_LENGTH:
        return _kept_author_address(value)
    return _author_address(value)


KEPT_AUTHORS = 4096
"""How many From field values, each at most :data:`_KEPT_LENGTH` octets, keep their address."""
_KEPT_LENGTH = 256


def _author_address(value: bytes) -> str:
    text = value.decode("utf-8", "surrogateescape").replace("\r\n", "")
    if not text.isascii() and _UNDECODED.search(text):
        raise MessageError("From holds bytes that are not UTF-8")
    if _CONTROL.search(text):
        raise MessageError("From holds a control character")
    tokens = _tokens(text)
    for token in tokens:
        if token.kind == "comment":
            _check_encoded_words(token.text, "a comment")
    display, address = _split([t for t in tokens if t.kind != "comment"])
    if display:
        _check_display_name(display, text)
    local, domain = _addr_spec(address)
    return f"{local}@{normalize_domain(domain)}"


_kept_author_address = functools.lru_cache(maxsize=KEPT_AUTHORS)(_author_address)


def _tokens(text: str) -> list[_Token]:
    """The tokens of ``text``; whitespace (FWS) separates them and is dropped."""
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char in " \t":
            position += 1
        elif char == '"':
            end = _closing(text, position, '"', "quoted string")
            tokens.append(_Token("quoted", text[position : end + 1]))
            position = end + 1
        elif char == "(":
            end = _closing(text, position, ")", "comment")
            tokens.append(_Token("comment", text[position : end + 1]))
            position = end + 1
        elif char == ")":
            raise MessageError("From has a ')' that closes no comment")
        else:
            run = _ATOM_RUN.match(text, position)
            if run:
                tokens.append(_Token("atom", run.group()))
                position = run.end()
            else:
                tokens.append(_Token(char, char))
                position += 1
    return tokens


def _closing(text: str, start: int, close: str, what: str) -> int:
    """The index of what ends the quoted string or comment at ``start`` (§3.2.2, §3.2.4).

    Comments nest; both honour quoted pairs (``\\`` and the next character).
    """
    depth = 0
    position = start + 1
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == close:
            if depth == 0:
                return position
            depth -= 1
        elif close == ")" and char == "(":
            depth += 1
        position += 1
    raise MessageError(f"From has an unterminated {what}")


def _split(tokens: list[_Token]) -> tuple[list[_Token], list[_Token]]:
    """(display name, addr-spec) tokens: at most one ``<...>``, nothing after it."""
    kinds = [t.kind for t in tokens]
    if "," in kinds:
        raise MessageError("From holds several addresses (',' outside quotes)")
    for special in ":;":
        if special in kinds:
            raise MessageError(f"From holds a group or route ({special!r} outside quotes)")
    opens, closes = kinds.count("<"), kinds.count(">")
    if opens == closes == 0:
        return [], tokens
    if opens != 1 or closes != 1 or kinds.index("<") > kinds.index(">"):
        raise MessageError("From holds unbalanced or repeated angle brackets")
    start, end = kinds.index("<"), kinds.index(">")
    if tokens[end + 1 :]:
        raise MessageError("From has text after the '>'")
    return tokens[:start], tokens[start + 1 : end]


def _check_display_name(display: list[_Token], text: str) -> None:
    """Words (atoms, with the dots of ``obs-phrase``) and quoted strings only."""
    if any(t.kind not in ("atom", "quoted") for t in display):
        shown = text.split("<", 1)[0].strip(" \t")
        raise MessageError(f"From has a display name that is not words: {shown[:40]!r}")
    for token in display:
        _check_encoded_words(token.text, "an encoded word")


def _check_encoded_words(text: str, where: str) -> None:
    for match in _ENCODED_WORD.finditer(text):
        decoded = _decode_word(match)
        if _CONTROL.search(decoded) or _SPECIALS_IN_NAME & set(decoded):
            raise MessageError(
                f"From has {where} whose encoded word decodes to an address or control"
            )


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


def _addr_spec(address: list[_Token]) -> tuple[str, str]:
    """local-part ``@`` domain, each one token: CFWS may surround them, not their dots."""
    kinds = [t.kind for t in address]
    shown = "".join(t.text for t in address)[:60]
    if kinds.count("@") > 1:
        raise MessageError(f"From address {shown!r} is not local@domain")
    at = kinds.index("@") if "@" in kinds else 0
    local, domain = address[:at], address[at + 1 :]
    if not local or not domain:
        raise MessageError(f"From address {shown!r} has no local part or no domain")
    if any("=?" in t.text for t in address):
        raise MessageError("From has an encoded word in the address itself")
    if "[" in kinds:
        raise MessageError(f"From address {shown!r} has a domain literal, which names no key")
    if len(local) > 1 or len(domain) > 1:
        # obs-local-part and obs-domain (RFC 5322 §4.4): parsers that do not know
        # them read another local part or domain.
        raise MessageError(
            f"From address {shown!r} has whitespace or a comment inside its local part "
            "or domain (obsolete syntax)"
        )
    local_text, domain_text = local[0].text, domain[0].text
    if local[0].kind == "quoted":
        if "@" in local_text:
            raise MessageError("From has a quoted local part holding '@'")
    elif local[0].kind != "atom" or not _DOT_ATOM.match(local_text):
        raise MessageError(f"From address {shown!r} has a malformed local part")
    if domain[0].kind != "atom" or not _DOT_ATOM.match(domain_text):
        raise MessageError(f"From address {shown!r} is not local@domain")
    return local_text, domain_text
