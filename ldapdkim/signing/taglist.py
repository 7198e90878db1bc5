"""Tag lists (RFC 6376 §3.2): the ``name=value;`` syntax of signatures and key records.

Values keep their folding white space as written; helpers take it out where
a value may be folded (base64, colon-separated lists).
"""

from __future__ import annotations

import re

_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
FWS = re.compile(rb"(?:[ \t]*\r\n)?[ \t]+")
# tag-value = [ tval *( 1*(WSP / FWS) tval ) ]: between values any run of blanks
# and folds, each fold a CRLF followed by a blank (RFC 6376 §3.2).
_VALUE = re.compile(rb"[\x21-\x3a\x3c-\x7e]+(?:(?:[ \t]|\r\n[ \t])+[\x21-\x3a\x3c-\x7e]+)*\Z")


def parse_tag_list(
    value: bytes, known: frozenset[str] | None = None, *, strict_values: bool = True
) -> dict[str, bytes]:
    """The tags of a tag list, each value with its FWS as written.

    ``known``: the tags the caller reads.  Any other tag is ignored (RFC 6376
    §3.2, §3.6.1: unrecognized tags MUST be ignored) once it has a name and an
    ``=``, however its name is spelt (``x-note=``, ``9z=``), as at the other
    verifiers; with ``strict_values`` False its value may hold anything but
    ``;`` too (a key record's ``n=café`` does not revoke its key).  Without
    ``known`` every tag follows the grammar.

    Raises:
        ValueError: not a tag list: a bad tag name, a character a tag value
            may not hold, a tag without ``=``, or a tag given twice.
    """
    tags: dict[str, bytes] = {}
    specs = value.split(b";")
    if specs and not specs[-1].strip(b" \t\r\n"):
        specs.pop()  # tag-list = tag-spec *(";" tag-spec) [";"]
    read = known or frozenset()
    for spec in specs:
        name, equals, text = spec.partition(b"=")
        # strip_fws, with its common case (no fold) written out: a signature has a dozen tags.
        name = name.strip(b" \t")
        if b"\n" in name:
            name = strip_fws(name)
        text = text.strip(b" \t")
        if b"\n" in text:
            text = strip_fws(text)
        key = name.decode("latin-1")
        checked = strict_values or key in read
        if text and checked and not _VALUE.match(text):
            shown = name[:20].decode("ascii", "backslashreplace")  # it may reach a header
            raise ValueError(f"tag {shown}= holds a character a tag value may not hold")
        if equals and name and known is not None and key not in known:
            if not _TAG_NAME.match(name):
                continue  # not even a tag name: nothing anyone could read as a known tag
        if not equals or not _TAG_NAME.match(name):
            shown = name[:20].decode("ascii", "replace")
            raise ValueError(f"{shown!r} is not a tag (name=value)")
        if key in tags:
            raise ValueError(f"tag {key}= is given twice")
        tags[key] = text
    return tags


def strip_fws(text: bytes) -> bytes:
    text = text.strip(b" \t")
    if b"\n" not in text:  # most tags are not folded
        return text
    while text.startswith(b"\r\n") and text[2:3] in (b" ", b"\t"):
        text = text[2:].lstrip(b" \t")
    while text.endswith(b"\r\n"):
        text = text[:-2].rstrip(b" \t")
    return text


def unfolded(value: bytes) -> bytes:
    """``value`` without FWS; most values have none, and a long b= need not be scanned.

    The same as ``FWS.sub(b"", value)``, without a regular expression: FWS
    takes every blank, and a CRLF exactly when a blank follows it.
    """
    if b" " not in value and b"\t" not in value:
        return value
    if b"\r" in value:
        value = value.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t")
    return value.translate(None, b" \t")


def plain(value: bytes) -> str:
    """A tag value with its FWS removed (base64 and colon lists may be folded)."""
    return unfolded(value).decode("ascii")


def colon_list(value: bytes) -> list[str]:
    """A colon-separated list of ABNF literals, lowercased (they match case-insensitively)."""
    return [item for item in plain(value).lower().split(":") if item]
