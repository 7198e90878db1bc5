"""What the differential tests against OpenDKIM share: keys, a DNS server, messages.

:func:`open_site` makes the keys (in a directory under ``/run``: OpenDKIM
refuses a key file below a directory others can write to, such as ``/tmp``),
publishes them, and signs the messages from outside that the verifying cases
play; :func:`base` is the configuration every case starts from.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.common import skip_or_fail
from harness.dnsserver import DnsServer
from harness.forge import forge, key_record
from harness.milterclient import Transaction
from harness.verifiers import require_opendkim
from ldapdkim import keys
from ldapdkim.model import Algorithm, PrivateKey

OUTSIDE = "198.51.100.7"
"""A client outside every InternalHosts of the cases."""

HEADERS = "From,To,Subject,Date,Message-ID"


def text(
    *,
    domain: str = "example.com",
    subject: str = "a test",
    extra_headers: str = "",
    body: str = "Hello Bob,\r\n\r\nthe figures.\r\n",
) -> bytes:
    return (
        f"{extra_headers}From: Alice <alice@{domain}>\r\nTo: Bob <bob@example.net>\r\n"
        f"Subject: {subject}\r\nDate: Thu, 03 Dec 2026 08:00:00 +0000\r\n"
        f"Message-ID: <{abs(hash(subject))}@{domain}>\r\n\r\n{body}"
    ).encode()


def tx(
    address: str = "127.0.0.1",
    name: str = "localhost",
    *,
    message: bytes | None = None,
    connect: dict[str, str] | None = None,
    mail: dict[str, str] | None = None,
) -> Transaction:
    return Transaction(
        message if message is not None else text(),
        client_address=address,
        client_name=name,
        connect_macros=connect or {},
        mail_macros=mail or {},
    )


@dataclass
class Site:
    """Keys, files and a DNS server that every case can use."""

    root: Path
    dns: DnsServer
    key_file: Path
    small_key_file: Path
    signed: bytes
    """A message from outside, signed by example.org (key published)."""
    signed_small: bytes
    """The same, signed with a 1024-bit key (selector small)."""
    signed_bad: bytes
    """A signature that does not verify (body changed after signing)."""
    signed_no_key: bytes
    """Signed with selector nokey, which the DNS does not have."""
    signed_dns_trouble: bytes
    """Signed with selector slow, whose key query times out."""
    signed_three: bytes
    """Three signatures: example.org s1, example.net s1, example.org small."""

    def file(self, name: str, content: str) -> Path:
        path = self.root / name
        path.write_text(content)
        return path


def private_file(path: Path, pem: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return path


@contextlib.contextmanager
def open_site() -> Iterator[Site]:
    """Keys in a directory under /run (OpenDKIM refuses keys below /tmp), a DNS server."""
    require_opendkim()
    if os.geteuid() != 0:
        skip_or_fail("the OpenDKIM differential tests need root (a directory under /run)")
    root = Path(tempfile.mkdtemp(prefix="ldapdkim-odk-", dir="/run"))
    root.chmod(0o700)
    try:
        with DnsServer() as dns:
            ours = keys.generate(Algorithm.RSA_SHA256)
            small = keys.generate(Algorithm.RSA_SHA256, bits=1024)
            key_file = private_file(root / "example.com.private", keys.private_pem(ours))
            small_file = private_file(root / "small.private", keys.private_pem(small))
            dns.set_txt("s1._domainkey.example.com", key_record(ours).decode())
            dns.set_txt("s1._domainkey.example.org", key_record(ours).decode())
            dns.set_txt("s1._domainkey.example.net", key_record(ours).decode())
            dns.set_txt("small._domainkey.example.org", key_record(small).decode())
            dns.set_timeout("slow._domainkey.example.org")

            def signed(selector: str, key: PrivateKey, domain: str = "example.org") -> bytes:
                tags = (
                    f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s={selector}; "
                    "h=from:to:subject:date:message-id; bh=@; b="
                )
                return forge(tags, key, headers=_headers(), body=BODY).message

            bad = signed("s1", ours).replace(b"the figures", b"new figures")
            three = forge(
                "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=s1; "
                "h=from:to:subject:date:message-id; bh=@; b=",
                ours,
                headers=_headers(signed("small", small)),
                body=BODY,
            )
            three = forge(
                "v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=s1; "
                "h=from:to:subject:date:message-id; bh=@; b=",
                ours,
                headers=three.headers,
                body=BODY,
            )
            yield Site(
                root=root,
                dns=dns,
                key_file=key_file,
                small_key_file=small_file,
                signed=signed("s1", ours),
                signed_small=signed("small", small),
                signed_bad=bad,
                signed_no_key=signed("nokey", ours),
                signed_dns_trouble=signed("slow", ours),
                signed_three=three.message,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


BODY = b"Hello Bob,\r\n\r\nthe figures.\r\n"


def _headers(message: bytes | None = None) -> list[tuple[bytes, bytes]]:
    source = message if message is not None else text(domain="example.org", subject="outside")
    head = source.partition(b"\r\n\r\n")[0]
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            name, value = fields[-1]
            fields[-1] = (name, value + line + b"\r\n")
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value + b"\r\n"))
    return fields


def base(site: Site) -> list[str]:
    """What every case starts from: single-key mode, headers named explicitly."""
    return [
        "Mode sv",
        "Domain example.com",
        "Selector s1",
        f"KeyFile {site.key_file}",
        "Canonicalization relaxed/simple",
        f"SignHeaders {HEADERS}",
        "OversignHeaders From",
        "AuthservID mx.test",
        "AlwaysAddARHeader yes",
        "InternalHosts 127.0.0.1",
    ]
