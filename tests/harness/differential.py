"""Differential testing of the verifier: ldapdkim, Perl Mail::DKIM and OpenDKIM on the same cases.

:func:`cases` generates signed messages and key records, each a mutation of
a valid one (tags reordered, duplicated, re-cased or folded; canonicalization
edge cases; truncations; duplicated or changed header fields; key-record
variants), from a seed, so a run can be repeated.  :func:`run` publishes the
key records on a loopback :class:`~harness.dnsserver.DnsServer`, has the
three verifiers judge every case, and groups the cases where they disagree by
(mutation, ldapdkim, Mail::DKIM, OpenDKIM).  ``EXPLAINED`` gives each known
class of disagreement its RFC clause and says which verifier is wrong; a
class not in it is new and must be fixed or explained.
"""

from __future__ import annotations

import base64
import random
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from harness import verifiers
from harness.dnsserver import DnsServer
from harness.forge import HEADERS, body_hash, ed25519_key, forge, key_record, rsa_key
from ldapdkim import keys
from ldapdkim.errors import InvalidDomain, MessageError
from ldapdkim.model import Algorithm, Canonicalization, KeyState, SigningKey, SigningParams
from ldapdkim.signing import policy
from ldapdkim.signing.bodyhash import canonical_body
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.keyring import Keyring
from ldapdkim.signing.signer import sign_parsed
from ldapdkim.signing.verifier import verify_message

DOMAIN = "diff.example"
BASE = "v=1; a={a}; c={c}; d=diff.example; s={s}; h=from:to:subject; bh=@; b="
BODIES = [
    b"Hello Bob,\r\n\r\nthe figures.\r\n",
    b"",
    b"\r\n\r\n\r\n",
    b"trailing  \t\r\nspace\t\r\n\r\n",
    b"x" * 998 + b"\r\n",
]
BARE_CR = b"bare\rcarriage\r\n"


@dataclass(frozen=True)
class Case:
    kind: str
    message: bytes
    note: str
    records: dict[str, list[str]] = field(default_factory=dict)
    """Key records to publish: name -> TXT strings (several: several records)."""


def _key(algorithm: str):  # type: ignore[no-untyped-def]
    return ed25519_key() if algorithm == "ed25519-sha256" else rsa_key()


def _record(algorithm: str, tags: str = "v=DKIM1; k={k}; p={p}") -> str:
    return key_record(_key(algorithm), tags).decode()


def _case(number: int, rng: random.Random) -> Case:
    algorithm = rng.choice(["rsa-sha256", "rsa-sha256", "ed25519-sha256"])
    canon = rng.choice(["relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed"])
    selector = f"k{number}"
    name = f"{selector}._domainkey.{DOMAIN}"
    tags = BASE.format(a=algorithm, c=canon, s=selector)
    body = rng.choice(BODIES)
    headers = [*HEADERS[:2], (b"Subject", f" case {number}\r\n".encode()), *HEADERS[3:]]
    headers[0] = (b"From", b" Alice <alice@diff.example>\r\n")
    records = {name: [_record(algorithm)]}
    key = _key(algorithm)
    sign: list[str] | None = None
    kind = rng.choice(MUTATIONS)
    after: Callable[[bytes], bytes] = lambda m: m  # noqa: E731
    if kind == "reorder":
        parts = tags.split("; ")
        rng.shuffle(parts)
        tags = "; ".join(p for p in parts if not p.startswith("b=")) + "; b="
    elif kind == "duplicate-tag":
        tags = tags.replace(f"s={selector};", f"s={selector}; s={selector};")
    elif kind == "unknown-tag":
        tags = tags.replace("h=from", "zz=any thing; h=from")
    elif kind == "unknown-tag-name":
        tags = tags.replace("h=from", "x-note=any thing; 9z=1; h=from")
    elif kind == "tag-name-case":
        tags = tags.replace("v=1", "V=1")
    elif kind == "tag-value-case":
        tags = tags.replace(f"a={algorithm}", f"a={algorithm.upper()}")
    elif kind == "whitespace":
        tags = tags.replace("; ", " ;\t").replace("=", " = ", 3)
    elif kind == "folding":
        tags = tags.replace("h=from:to", "h=from\r\n\t:to").replace("; s=", ";\r\n s=")
    elif kind == "bare-cr-body":
        body = BARE_CR
    elif kind == "truncate":
        after = _truncate(rng)
    elif kind == "dup-header":
        headers = [*headers, (b"Subject", b" another subject\r\n")]
    elif kind == "dup-from":
        headers = [(b"From", b" Mallory <m@evil.example>\r\n"), *headers]
    elif kind == "third-from":
        # The signer signed (and oversigned) two From fields; a third is added above.
        headers = [(b"From", b" Bob <bob@diff.example>\r\n"), *headers]
        sign = ["from", "from", "to", "subject"]
        tags = tags.replace("h=from:to:subject", "h=from:from:to:subject")
        after = _added_above(b"From: Mallory <m@evil.example>\r\n")
    elif kind == "no-from":
        headers = headers[1:]
    elif kind == "sig-fws":
        tags, sign = _spaced_tags(tags, rng, body, canon), ["from", "to", "subject"]
    elif kind == "sig-fws-b":
        after = _folded_b(rng)
    elif kind == "from-cfws":
        headers[0] = (b"From", rng.choice(FROM_CFWS) + b"\r\n")
    elif kind == "body-change":
        after = lambda m: m + b"appended\r\n"  # noqa: E731
    elif kind == "header-change":
        after = lambda m: m.replace(b" case ", b" Case ", 1)  # noqa: E731
    elif kind == "no-from-in-h":
        tags, sign = tags.replace("h=from:to:subject", "h=to:subject"), ["to", "subject"]
    elif kind == "i-outside-d":
        tags = tags.replace("h=from", "i=a@elsewhere.example; h=from")
    elif kind == "i-subdomain":
        tags = tags.replace("h=from", "i=a@sub.diff.example; h=from")
    elif kind == "x-before-t":
        tags = tags.replace("h=from", "t=2000000000; x=1999999999; h=from")
    elif kind == "expired":
        tags = tags.replace("h=from", "t=1500000000; x=1500003600; h=from")
    elif kind == "l-exact":
        tags = tags.replace("h=from", f"l={_canonical_length(body, canon)}; h=from")
    elif kind == "l-partial":
        tags = tags.replace("h=from", f"l={_canonical_length(body, canon)}; h=from")
        after = lambda m: m + b"unsigned content\r\n"  # noqa: E731
    elif kind == "q-list":
        tags = tags.replace("h=from", "q=foo/bar:dns/txt; h=from")
    elif kind == "q-unknown":
        tags = tags.replace("h=from", "q=foo/bar; h=from")
    elif kind == "sha1":
        tags = tags.replace(f"a={algorithm}", "a=rsa-sha1")
        key, records = rsa_key(), {name: [_record("rsa-sha256")]}
    elif kind.startswith("key-"):
        records = {name: _key_variant(kind, algorithm, rng)}
    if kind == "from-cfws":
        message = _signed_by_ldapdkim(headers, body, key, algorithm, selector, canon)
    else:
        message = forge(tags, key, headers=headers, body=body, sign=sign, canon=canon).message
    note = f"{algorithm} c={canon} body={BODIES.index(body) if body in BODIES else 'bare-cr'}"
    return Case(kind, after(message), note, records)


FROM_CFWS = [
    b' (victim@bank.example) "Alice (Sales)" <alice@diff.example>',
    b" alice@diff.example (Alice Liddell)",
    b" Alice <(inside) alice@diff.example (inside)>",
    b" (a (nested) comment) Alice <alice@diff.example> (after)",
    b" alice (before the at) @ (after it) diff.example",
    b" Alice (a \\) quoted pair) <alice@diff.example>",
    b' "Liddell, Alice" (note: a, b; c) <alice@diff.example>',
    b" Alice\r\n (folded\r\n comment) <alice@diff.example>",
]
"""From fields RFC 5322 §3.2.2 allows, with comments and quoted display names."""


def _signed_by_ldapdkim(
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    key: object,
    algorithm: str,
    selector: str,
    canon: str,
) -> bytes:
    """The message as ldapdkim's signer leaves it: signed for the author domain it reads,
    or unsigned when it refuses the From field."""
    unsigned = b"".join(n + b":" + v for n, v in headers) + b"\r\n" + body
    try:
        domain = policy.author_domain(headers)
    except (MessageError, InvalidDomain):
        return unsigned
    signing_key = SigningKey(
        "dn",
        selector,
        Algorithm(algorithm),
        KeyState.ACTIVE,
        keys.private_pem(key),  # type: ignore[arg-type]
    )
    params = SigningParams(canonicalization=Canonicalization(*canon.split("/")))
    signers = Keyring().signers([signing_key], domain)
    [value] = sign_parsed(headers, body, domain, signers, params, timestamp=1_700_000_000)
    return b"DKIM-Signature:" + value + b"\r\n" + unsigned


def _spaced_tags(tags: str, rng: random.Random, body: bytes, canon: str) -> str:
    """RFC 6376 §3.2 tag-spec: FWS before and after each '=', around ':' in h=, and
    inside the base64 of bh=."""
    digest = body_hash(body, canon.partition("/")[2])
    cut = rng.randrange(1, len(digest) - 1)
    digest = digest[:cut] + rng.choice([" ", "\t", "\r\n ", " \r\n\t "]) + digest[cut:]
    gaps = [" ", "\t", " \r\n\t", "\r\n  "]
    spaced = []
    for spec in tags.split("; "):
        name, _, value = spec.partition("=")
        if name == "b":
            spaced.append("b=")  # b= as signed: forge hashes its value empty
            continue
        if name == "bh":
            value = digest
        elif name == "h":
            value = f"{rng.choice(gaps)}:{rng.choice(gaps)}".join(value.split(":"))
        spaced.append(f"{name}{rng.choice(gaps)}={rng.choice(gaps)}{value}{rng.choice(gaps)}")
    return ";".join(spaced)


def _folded_b(rng: random.Random) -> Callable[[bytes], bytes]:
    """FWS inside the b= value: RFC 6376 §3.5 base64string allows it, §3.7 removes it."""

    def fold(message: bytes) -> bytes:
        start = message.index(b"; b=") + len(b"; b=")
        cut = rng.randrange(start + 1, message.index(b"\r\n", start) - 1)
        gap = rng.choice([b" ", b"\t", b"\r\n ", b"\r\n\t", b" \r\n \r\n\t"])
        return message[:cut] + gap + message[cut:]

    return fold


def _added_above(field: bytes) -> Callable[[bytes], bytes]:
    """Add ``field`` just below the signature, above the fields it signed."""

    def add(message: bytes) -> bytes:
        at = message.index(b"\r\nFrom:") + 2
        return message[:at] + field + message[at:]

    return add


def _truncate(rng: random.Random) -> Callable[[bytes], bytes]:
    def cut(message: bytes) -> bytes:
        end = message.index(b"\r\nFrom:")
        at = rng.randrange(len("DKIM-Signature: "), end)
        return message[:at] + message[end:]

    return cut


def _canonical_length(body: bytes, canon: str) -> int:
    return len(canonical_body(body, relaxed=canon.endswith("/relaxed")))


KEY_FWS = [
    "v = DKIM1 ; k = {k} ; p = {p}",
    "v=DKIM1; k={k}; n = a note ; zz = 1 ; p = {p} ;",
    "v =DKIM1;k =\t{k};\tp =\t{p}",
    " v=DKIM1 ; k={k} ; h = sha256 ; s = email : * ; p={p} ",
    "v\t=\tDKIM1\t;\tzz_9 = any thing ; k={k} ; p = {p}",
    "v = DKIM1 ; x-note = for people ; k = {k} ; p = {p}",
    "v=DKIM1;\nk={k};\np={p}",
]
"""Key records with FWS around '=' and ';' and unknown tags (RFC 6376 §3.2, §3.6.1)."""


def _spaced_key_record(algorithm: str, rng: random.Random) -> str:
    """A :data:`KEY_FWS` record whose p= also has blanks inside its base64 (§3.6.1
    key-p-tag is a base64string, which allows FWS anywhere)."""
    p = _record(algorithm, "{p}")
    for _ in range(rng.randint(1, 3)):
        cut = rng.randrange(1, len(p))
        p = p[:cut] + rng.choice([" ", "  ", "\t"]) + p[cut:]
    k = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    return rng.choice(KEY_FWS).format(k=k, p=p)


def _key_variant(kind: str, algorithm: str, rng: random.Random) -> list[str]:
    k = "ed25519" if algorithm == "ed25519-sha256" else "rsa"
    if kind == "key-fws":
        return [_spaced_key_record(algorithm, rng)]
    variants = {
        "key-h-sha1": ["v=DKIM1; h=sha1; k={k}; p={p}"],
        "key-h-both": ["v=DKIM1; h=sha1:sha256; k={k}; p={p}"],
        "key-k-mismatch": ["v=DKIM1; k=" + ("rsa" if k == "ed25519" else "ed25519") + "; p={p}"],
        "key-s-other": ["v=DKIM1; k={k}; s=other; p={p}"],
        "key-s-email": ["v=DKIM1; k={k}; s=email; p={p}"],
        "key-t-y": ["v=DKIM1; k={k}; t=y; p={p}"],
        "key-revoked": ["v=DKIM1; k={k}; p="],
        "key-unknown-tag": ["v=DKIM1; k={k}; zz=1; n=a note; p={p}"],
        "key-no-v": ["k={k}; p={p}"],
        "key-v-not-first": ["k={k}; v=DKIM1; p={p}"],
        "key-malformed": ["v=DKIM1; k={k}; p={p}; ;; ="],
        "key-multi-same": ["v=DKIM1; k={k}; p={p}", "v=DKIM1; k={k}; p={p}"],
    }
    if kind == "key-multi-different":
        other = base64.b64encode(b"\x00" * 32).decode() if k == "ed25519" else _other_rsa()
        return [_record(algorithm), f"v=DKIM1; k={k}; p={other}"]
    if kind == "key-pkcs1" and k == "rsa":
        return [_pkcs1_record()]
    return [_record(algorithm, t) for t in variants.get(kind, ["v=DKIM1; k={k}; p={p}"])]


def _other_rsa() -> str:
    return key_record(rsa_key(1024), "{p}").decode()


def _pkcs1_record() -> str:
    der = (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


MUTATIONS = [
    "none", "reorder", "duplicate-tag", "unknown-tag", "tag-name-case", "tag-value-case",
    "whitespace", "folding", "bare-cr-body", "truncate", "dup-header", "dup-from", "body-change",
    "header-change", "no-from-in-h", "i-outside-d", "i-subdomain", "x-before-t", "expired",
    "l-exact", "l-partial", "q-list", "q-unknown", "sha1", "key-h-sha1", "key-h-both",
    "key-k-mismatch", "key-s-other", "key-s-email", "key-t-y", "key-revoked",
    "key-unknown-tag", "key-no-v", "key-v-not-first", "key-malformed", "key-multi-same",
    "key-multi-different", "key-pkcs1", "third-from", "no-from", "sig-fws", "sig-fws-b",
    "key-fws", "from-cfws", "unknown-tag-name",
]  # fmt: skip

REQUIRED: dict[str, frozenset[str]] = {
    # Valid by RFC 6376 §3.2 (tag-spec: FWS around '=', in values, in base64),
    # §3.6.1 (unknown key tags ignored) and RFC 5322 §3.2.2 (CFWS in From).
    **dict.fromkeys(
        ["none", "reorder", "unknown-tag", "tag-value-case", "whitespace", "folding",
         "sig-fws", "sig-fws-b", "key-fws", "key-unknown-tag", "key-no-v", "key-v-not-first",
         "key-h-both", "key-s-email", "key-t-y", "key-multi-same", "i-subdomain", "q-list",
         "l-exact", "dup-header", "from-cfws", "unknown-tag-name"],
        frozenset({"pass"}),
    ),
    # RFC 5322 §3.6 one From; RFC 6376 §5.4.2, §8.15: a From the signature does not
    # cover, or none at all, is no plain pass.
    **dict.fromkeys(["dup-from", "third-from", "no-from"], frozenset({"policy"})),
    # l= covers part of the body; appended to an empty body, the signed prefix changes.
    "l-partial": frozenset({"policy", "fail"}),
    # PERMFAIL by RFC 6376 §3.2, §3.5, §3.6.1, §6.1.1 and RFC 8301.
    **dict.fromkeys(
        ["duplicate-tag", "tag-name-case", "no-from-in-h", "i-outside-d", "x-before-t",
         "expired", "q-unknown", "sha1", "key-h-sha1", "key-k-mismatch", "key-s-other",
         "key-revoked", "key-malformed", "key-multi-different"],
        frozenset({"error"}),
    ),
    # RFC 6376 §6.1.3: a changed body or header fails its hash.
    **dict.fromkeys(["body-change", "header-change"], frozenset({"fail"})),
}  # fmt: skip
"""Mutation -> the verdicts the RFCs allow ldapdkim, whatever the other verifiers say.

A disagreement shows where the three differ; this catches what all three get
wrong alike (a From field added above a signed one passed everywhere)."""


def cases(count: int, seed: int = 1) -> Iterator[Case]:
    rng = random.Random(seed)
    for number in range(count):
        yield _case(number, rng)


# -- the three verifiers -------------------------------------------------------------

_CLASSES = {
    "pass": "pass", "fail": "fail", "policy": "policy", "temperror": "temperror",
    "permerror": "error", "neutral": "error", "invalid": "error", "noverdict": "error",
    "none": "none",
}  # fmt: skip


def verdict(results: list[str]) -> str:
    """One word per message: pass when any signature passes, else the first one's class."""
    classes = [_CLASSES.get(r, r) for r in results]
    if "pass" in classes:
        return "pass"
    return classes[0] if classes else "none"


def ldapdkim_verdicts(batch: list[Case], lookup: TxtLookup) -> list[str]:
    """ldapdkim's verdict on each case.  The generator makes no DNS failures, so a
    temperror is a key query that timed out on a loaded machine: asked once more."""

    def judge(case: Case) -> str:
        results = verify_message(case.message, lookup, max_signatures=8)
        return verdict([r.result.value for r in results])

    verdicts = []
    for case in batch:
        found = judge(case)
        verdicts.append(judge(case) if found == "temperror" else found)
    return verdicts


def mail_dkim_verdicts(batch: list[Case], port: int) -> list[str]:
    framed = b"".join(str(len(c.message)).encode() + b"\n" + c.message for c in batch)
    done = subprocess.run(
        ["perl", str(verifiers.MAIL_DKIM_SCRIPT), str(port), "2", "--batch"],
        input=framed, env=verifiers._perl_env(), capture_output=True, check=True,
    )  # fmt: skip
    out: list[list[str]] = []
    current: list[str] = []
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        if line == "end":
            out.append(current)
            current = []
        elif line != "none":
            result = line.split(" ", 1)[0]
            if result == "invalid" and "DNS" in line:
                result = "temperror"
            current.append(result)
    assert len(out) == len(batch), (len(out), len(batch), done.stderr[-500:])
    return [verdict(r) for r in out]


def opendkim_verdicts(batch: list[Case], port: int, workdir: Path) -> list[str]:
    """``opendkim -t`` over many files at once; a file it drops ends the run, which resumes
    after it (that file's verdict is ``noverdict``)."""
    files = []
    for i, case in enumerate(batch):
        path = workdir / f"m{i}.eml"
        path.write_bytes(case.message)
        files.append(path)
    unbound = verifiers.write_unbound_conf(workdir, port)
    conf = workdir / "opendkim.conf"
    conf.write_text(
        verifiers._OPENDKIM_CONF.format(authserv_id="odk", timeout=2, unbound_conf=unbound)
    )
    results: dict[int, list[str]] = {}
    start = 0
    while start < len(files):
        done = subprocess.run(
            ["opendkim", "-x", str(conf), "-vv", "-t", ",".join(str(f) for f in files[start:])],
            capture_output=True, check=False,
        )  # fmt: skip
        groups: list[list[str]] = []  # the dkim= results of each Authentication-Results
        last = start - 1
        for line in done.stdout.decode("utf-8", "replace").splitlines():
            if "hname='Authentication-Results'" in line:
                groups.append([])  # its value goes on over the next lines
            if groups:
                groups[-1] += re.findall(r"\bdkim=(\w+)", line)
            summary = re.match(r"opendkim: .*/m(\d+)\.eml: ", line)
            if summary:
                last = int(summary.group(1))
                results[last] = (
                    groups.pop()
                    if groups
                    else ["temperror" if "DNS" in line or "query" in line else "noverdict"]
                )
                # A file with no summary line (one without From) left its result
                # before this one: it belongs to the file(s) just above.
                for offset, orphan in enumerate(reversed(groups), start=1):
                    results[last - offset] = orphan
                groups = []
        if done.returncode == 0:
            break
        results.setdefault(last + 1, ["noverdict"])  # the file it gave up on
        start = last + 2
    return [verdict(results.get(i, ["noverdict"])) for i in range(len(batch))]


# -- disagreements and their explanations ---------------------------------------------

_NOT_PASS = "all three refuse the signature; they name the refusal differently"
EXPLAINED: dict[tuple[str, str, str, str], str] = {
    # Only the class of the refusal differs (RFC 8601 maps PERMFAIL to several results).
    ("sha1", "error", "fail", "fail"): _NOT_PASS + " (RFC 8301: rsa-sha1 is not valid)",
    ("key-h-sha1", "error", "error", "fail"): _NOT_PASS + " (RFC 6376 §3.6.1 h=)",
    ("key-s-other", "error", "error", "fail"): _NOT_PASS + " (RFC 6376 §3.6.1 s=)",
    ("key-revoked", "error", "error", "fail"): _NOT_PASS
    + " (RFC 6376 §3.6.1: empty p= is revoked)",
    ("key-k-mismatch", "error", "error", "fail"): _NOT_PASS + " (RFC 6376 §3.6.1 k=)",
    ("truncate", "error", "fail", "error"): _NOT_PASS + " (a cut signature field)",
    # ldapdkim is right; the verifier(s) named are wrong.
    ("key-k-mismatch", "error", "error", "pass"): (
        "RFC 6376 §3.6.1 k=: a record of another key type must not verify the signature; "
        "OpenDKIM passes an rsa-sha256 signature whose record says k=ed25519"
    ),
    ("tag-name-case", "error", "pass", "error"): (
        "RFC 6376 §3.2: tag names are case-sensitive, so V=1 is no v= tag; Mail::DKIM is wrong"
    ),
    ("x-before-t", "error", "pass", "error"): (
        "RFC 6376 §3.5: x= MUST be greater than t=; Mail::DKIM does not check it"
    ),
    ("no-from-in-h", "error", "pass", "error"): (
        "RFC 6376 §5.4, §6.1.1: a signature whose h= leaves out From is PERMFAIL; Mail::DKIM "
        "passes it, which lets anyone's signature vouch for any From"
    ),
    ("duplicate-tag", "error", "pass", "pass"): (
        "RFC 6376 §3.2: a tag given twice makes the tag list invalid; Mail::DKIM and OpenDKIM "
        "take one of the two values, so a verifier and a filter can read different tags"
    ),
    ("key-malformed", "error", "pass", "temperror"): (
        "RFC 6376 §3.2, §6.1.2: a key record that is not a tag list (';;', '=') is a syntax "
        "error, PERMFAIL; Mail::DKIM ignores the junk, OpenDKIM calls it temporary"
    ),
    ("key-multi-different", "error", "*", "temperror"): (
        "RFC 6376 §3.6.2.2: several different key records make the result undefined; ldapdkim "
        "refuses (permerror), Mail::DKIM takes the first, OpenDKIM reports temperror"
    ),
    ("key-pkcs1", "pass", "error", "error"): (
        "RFC 6376 §3.6.1 k=rsa names a DER RSAPublicKey (PKCS#1) for p=; the others accept "
        "only SubjectPublicKeyInfo, what openssl writes and what ldapdkim publishes"
    ),
    # A deliberate difference (the item 2; RFC 6376 §8.2).
    ("l-partial", "policy", "pass", "pass"): (
        "RFC 6376 §8.2: content after l= is not signed; ldapdkim reports dkim=policy, not "
        "pass (docs/design.md: the 2024 l= disclosures); the others pass the message"
    ),
    ("l-partial", "policy", "fail", "pass"): (
        "as above; Mail::DKIM fails an l= that covers an empty body (l= before its CRLF)"
    ),
    # Issue 24: classes all three once judged alike, now that REQUIRED checks ldapdkim.
    ("dup-from", "policy", "pass", "pass"): (
        "RFC 5322 §3.6 allows one From; RFC 6376 §5.4.2, §8.15: h=from covers the bottom "
        "From, so one added above leaves the signature intact and many readers show it. "
        "ldapdkim reports dkim=policy; Mail::DKIM and OpenDKIM pass the message"
    ),
    ("third-from", "policy", "pass", "pass"): (
        "as dup-from: two From fields signed, a third added above; the others pass it"
    ),
    ("no-from", "policy", "pass", "error"): (
        "RFC 5322 §3.6: From is required; h=from then signs nothing (§5.4.2) and no author "
        "is vouched for. ldapdkim reports policy, OpenDKIM permerror (bad message format), "
        "Mail::DKIM passes"
    ),
    ("key-fws", "pass", "error", "pass"): (
        "RFC 6376 §3.6.1 key-s-tag allows FWS around ':' (s = email : *); Mail::DKIM "
        "refuses a blank after the colon"
    ),
    # OpenDKIM's relaxed body canonicalization with a bare CR.
    ("bare-cr-body", "pass", "pass", "fail"): (
        "RFC 6376 §3.4.4 changes only whitespace and line ends in relaxed bodies; a bare CR "
        "is neither, so it stays. ldapdkim, Mail::DKIM and dkimpy agree; OpenDKIM 2.11 differs"
    ),
}
"""(mutation, ldapdkim, Mail::DKIM, OpenDKIM) -> the RFC clause, and who is wrong ("*": any)."""


@dataclass
class Report:
    cases: int = 0
    agree: int = 0
    classes: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)
    examples: dict[tuple[str, str, str, str], list[str]] = field(default_factory=dict)
    """A few notes (algorithm, canonicalization, body) of the cases in each class."""

    verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(mutation, ldapdkim's verdict) for every case."""
    wrong: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(mutation, ldapdkim's verdict) for verdicts :data:`REQUIRED` does not allow."""

    def unexplained(self) -> dict[tuple[str, str, str, str], int]:
        return {k: n for k, n in self.classes.items() if explanation(k) is None}


def explanation(key: tuple[str, str, str, str]) -> str | None:
    if key[0] == "truncate" and "pass" not in key[1:]:
        return _NOT_PASS + " (a signature field cut anywhere)"
    for pattern, why in EXPLAINED.items():
        if all(p in ("*", v) for p, v in zip(pattern, key, strict=True)):
            return why
    return None


def run(count: int, seed: int = 1, batch_size: int = 500) -> Report:
    report = Report()
    with DnsServer() as dns, tempfile.TemporaryDirectory(prefix="ldapdkim-diff-") as tmp:
        lookup = TxtLookup([("127.0.0.1", dns.port)], timeout=2)
        generated = cases(count, seed)
        while True:
            batch = [c for _, c in zip(range(batch_size), generated, strict=False)]
            if not batch:
                break
            for case in batch:
                for name, texts in case.records.items():
                    dns.set_txt(name, *texts)
            ours = ldapdkim_verdicts(batch, lookup)
            perl = mail_dkim_verdicts(batch, dns.port)
            odk = opendkim_verdicts(batch, dns.port, Path(tmp))
            for case, a, b, c in zip(batch, ours, perl, odk, strict=True):
                report.cases += 1
                report.verdicts[(case.kind, a)] += 1
                if case.kind in REQUIRED and a not in REQUIRED[case.kind]:
                    report.wrong[(case.kind, a)] += 1
                    report.examples.setdefault((case.kind, a, "-", "-"), []).append(case.note)
                if a == b == c:
                    report.agree += 1
                else:
                    key = (case.kind, a, b, c)
                    report.classes[key] += 1
                    notes = report.examples.setdefault(key, [])
                    if len(notes) < 3:
                        notes.append(case.note)
    return report
