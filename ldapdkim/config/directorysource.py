"""Where keys come from: the ``Directory`` keyword, LDAP URLs or one LDIF file.

``Directory`` names LDAP servers as URLs with the base DN as their path, in
failover order (``ldap://``, ``ldaps://``, ``ldapi://%2Fpath``), or one
``ldif:PATH``.  Every URL must carry the same base DN, since the servers are
replicas of one tree; attributes, scope and filter (as in OpenDKIM's LDAP
table URLs) are refused, so that nothing a URL says is silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ldap.dn

from ldapdkim.config import values
from ldapdkim.config.values import Context
from ldapdkim.domainname import normalize_host_name
from ldapdkim.errors import InvalidDomain


@dataclass(frozen=True)
class DirectorySource:
    """Where keys and per-domain policy are read from: LDAP servers or one LDIF file.

    For ``ldap``, ``uris`` holds each server as ``scheme://host:port`` (or
    ``ldapi://%2Fpath%2Fto%2Fsocket``) in failover order, and ``base_dn`` the
    one base DN all of them share.  For ``ldif``, ``uris`` is empty, ``base_dn``
    is ``""`` and ``ldif_path`` names the file.
    """

    kind: Literal["ldap", "ldif"]
    uris: tuple[str, ...] = ()
    base_dn: str = ""
    ldif_path: Path | None = None


_LDAP_URL = re.compile(r"(ldaps?|ldapi)://([^/?]*)(?:/([^?]*))?(\?.*)?\Z", re.IGNORECASE)
_DIRECTORY_FORMS = (
    "use ldap://HOST[:PORT]/BASE-DN, ldaps://HOST[:PORT]/BASE-DN, "
    "ldapi://%2Fpath%2Fto%2Fsocket/BASE-DN (several servers separated by blanks), "
    "or ldif:PATH"
)
_DEFAULT_PORTS = {"ldap": 389, "ldaps": 636}


def directory(ctx: Context, value: str) -> DirectorySource:
    if value.lower().startswith("ldif:"):
        return _ldif_source(ctx, value[len("ldif:") :].strip())
    uris: list[str] = []
    base_dn = ""
    base_key: object = None
    for url in value.split():
        if url.lower().startswith("ldif:"):
            ctx.fail(
                "Directory mixes an ldif: file with LDAP URLs",
                "give either LDAP URLs or one ldif:PATH",
            )
        uri, dn = _ldap_url(ctx, url)
        key = _dn_key(dn)
        if base_key is None:
            base_dn, base_key = dn, key
        elif key != base_key:
            ctx.fail(
                f"Directory URLs name different base DNs ({base_dn!r} and {dn!r})",
                "all servers are replicas of one tree: give every URL the same base DN",
            )
        if uri in uris:
            ctx.fail(f"Directory names server {uri} twice", "remove the duplicate")
        uris.append(uri)
    return DirectorySource("ldap", tuple(uris), base_dn, None)


def _ldif_source(ctx: Context, path_text: str) -> DirectorySource:
    if not path_text:
        ctx.fail("Directory ldif: names no file", "write ldif:/path/to/keys.ldif")
    path = values.absolute_path(ctx, path_text)
    if not path.is_file():
        problem = "is not a file" if path.exists() else "does not exist"
        ctx.fail(
            f"Directory file {values.shown_path(path_text, path)} {problem}",
            "create the LDIF file (ldapdkim genkey or ldapdkim provision) or fix the path; "
            "relative paths are taken from the directory ldapdkim is started in",
        )
    return DirectorySource("ldif", (), "", path)


def _ldap_url(ctx: Context, url: str) -> tuple[str, str]:
    """Return (``scheme://host:port``, base DN) for one Directory URL."""
    match = _LDAP_URL.match(url)
    if match is None:
        ctx.fail(f"Directory {url!r} is not an LDAP URL", _DIRECTORY_FORMS)
    scheme, hostport, path, query = match.groups()
    scheme = scheme.lower()
    if query:
        ctx.fail(
            f"Directory URL {url!r} has attributes, scope or filter ({query!r})",
            "ldapdkim takes only the base DN from the URL: remove everything from '?' "
            "(OpenDKIM KeyTable/SigningTable URLs do not carry over)",
        )
    base_dn = urllib.parse.unquote(path or "")
    if not base_dn:
        ctx.fail(
            f"Directory URL {url!r} has no base DN",
            f"append the DN under which the DKIM entries live, "
            f"e.g. {scheme}://{hostport}/ou=dkim,dc=example,dc=com",
        )
    if "$" in base_dn:
        ctx.fail(
            f"Directory base DN {base_dn!r} holds an OpenDKIM placeholder ($d/$D)",
            "give the fixed DN under which the DKIM entries live, e.g. ou=dkim,dc=example,dc=com",
        )
    if not ldap.dn.is_dn(base_dn):
        ctx.fail(
            f"Directory base DN {base_dn!r} is not a valid DN",
            "write it like ou=dkim,dc=example,dc=com, with %20 for blanks",
        )
    if scheme == "ldapi":
        socket_path = urllib.parse.unquote(hostport)
        if socket_path and not socket_path.startswith("/"):
            ctx.fail(
                f"Directory URL {url!r} has a relative socket path {socket_path!r}",
                "write the absolute path with / as %2F, e.g. ldapi://%2Frun%2Fslapd%2Fldapi/"
                + path,
            )
        return "ldapi://" + urllib.parse.quote(socket_path, safe=""), base_dn
    return f"{scheme}://{_host_port(ctx, url, scheme, hostport)}", base_dn


def _host_port(ctx: Context, url: str, scheme: str, hostport: str) -> str:
    ipv6 = re.fullmatch(r"\[([^\]]+)\](?::(\d*))?", hostport)
    if ipv6:
        host, port = ipv6.group(1), ipv6.group(2)
    elif hostport.count(":") > 1:
        ctx.fail(
            f"Directory URL {url!r} has an IPv6 address without brackets",
            f"write {scheme}://[2001:db8::1]:PORT/BASE-DN",
        )
    else:
        host, _, port = hostport.partition(":")
    if not host:
        ctx.fail(
            f"Directory URL {url!r} names no server",
            f"write {scheme}://HOST/BASE-DN; for the local socket use ldapi://",
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            host = normalize_host_name(host)
        except InvalidDomain:
            ctx.fail(f"Directory URL {url!r} has a bad host {host!r}", _DIRECTORY_FORMS)
    else:
        if address.version == 4 and ipv6:
            ctx.fail(
                f"Directory URL {url!r} puts an IPv4 address in brackets",
                f"write {scheme}://{address}/BASE-DN",
            )
        host = f"[{address}]" if ipv6 else str(address)
    if port is None or port == "":
        port = str(_DEFAULT_PORTS[scheme])
    if not re.fullmatch(values.PORT, port) or int(port) > 65535:
        ctx.fail(f"Directory URL {url!r} has a bad port {port!r}", "use a port from 1 to 65535")
    return f"{host}:{int(port)}"


def _dn_key(dn: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A DN in a form where equal DNs (as dc/ou/cn compare: case-insensitively) are equal."""
    return tuple(
        tuple((attr.lower(), val.lower()) for attr, val, _ in rdn) for rdn in ldap.dn.str2dn(dn)
    )
