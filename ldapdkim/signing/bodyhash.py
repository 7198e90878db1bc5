"""Body canonicalization and hashing in one pass over chunks (RFC 6376 §3.4.3, §3.4.4, §3.7).

The milter hands the body over in chunks; hashing them as they come keeps a
20 MB message from being held in memory.  The result equals dkimpy's
canonicalization of the whole body (a test compares them over random bodies
and random chunk boundaries).

simple:  ignore empty lines at the end of the body; an empty body is one CRLF.
relaxed: also reduce runs of WSP to one SP and drop WSP at line ends; an empty
         body stays empty.
Bare LF line ends are taken as CRLF, as the message travels with CRLF.
"""

from __future__ import annotations

import hashlib

_TAB_TO_SPACE = bytes.maketrans(b"\t", b" ")


def crlf_line_ends(data: bytes) -> bytes:
    """``data`` with every bare LF made CRLF; a CR alone stays as it is.

    Most mail has no bare LF.  Looking for one with ``replace`` (a two-byte
    search that skips ahead) costs half of counting LFs byte by byte, and a
    twentieth of a look-behind regex: about 30 µs for 64 KB here.
    """
    if b"\n" not in data.replace(b"\r\n", b""):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _compress_wsp(data: bytes) -> bytes:
    """Runs of SP and HTAB become one SP (relaxed, RFC 6376 §3.4.4).

    Repeated ``replace`` passes run in C and beat a regex several times over.
    """
    if b"\t" in data:  # memchr: far cheaper than translating 64 KB without need
        data = data.translate(_TAB_TO_SPACE)
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def _trailing_crlfs(data: bytes) -> int:
    """Where the run of CRLFs that ends ``data`` starts.

    (An end-anchored regex would try every position of a 64 KB chunk.)
    """
    end = len(data)
    while end >= 2 and data[end - 2 : end] == b"\r\n":
        end -= 2
    return end


class BodyHasher:
    """Feed chunks with :meth:`update`; :meth:`digest` gives the body hash."""

    def __init__(self, relaxed: bool, algorithm: str = "sha256") -> None:
        self.relaxed = relaxed
        self._hash = hashlib.new(algorithm)
        self._pending = b""
        """Bytes that may change meaning with the next chunk (a CR, trailing WSP)."""
        self._blank = b""
        """CRLFs at the end of what was seen: dropped if nothing follows them."""
        self._content = False

    def update(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        if self.relaxed:
            cut = len(data.rstrip(b" \t\r"))
        else:
            cut = len(data) - data.endswith(b"\r")
        self._pending, data = data[cut:], data[:cut]
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if not data:
            return
        data = crlf_line_ends(data)
        if self.relaxed:
            data = _compress_wsp(data).replace(b" \r\n", b"\r\n")
        start = _trailing_crlfs(data)
        body, crlfs = data[:start], data[start:]
        if body:
            self._emit(self._blank + body)
            self._blank = b""
            self._content = True
        self._blank += crlfs

    def _emit(self, data: bytes) -> None:
        self._hash.update(data)

    def _finish(self) -> None:
        rest = self._pending
        if self.relaxed:
            rest = rest.rstrip(b" \t")
        self._pending = b""
        self._feed(rest)
        if self._content:
            self._emit(b"\r\n")
        elif not self.relaxed:
            self._emit(b"\r\n")

    def digest(self) -> bytes:
        """The hash of the canonical body; call once, after the last chunk."""
        self._finish()
        return self._hash.digest()


class _Collector(BodyHasher):
    """Keeps the canonical body instead of hashing it."""

    def __init__(self, relaxed: bool) -> None:
        super().__init__(relaxed)
        self.parts: list[bytes] = []

    def _emit(self, data: bytes) -> None:
        self.parts.append(data)


def canonical_body(body: bytes, *, relaxed: bool) -> bytes:
    """The whole canonical body, for a verifier that hashes several prefixes of it (``l=``)."""
    collector = _Collector(relaxed)
    collector.update(body)
    collector._finish()
    return b"".join(collector.parts)
