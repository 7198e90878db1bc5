"""The milter: one :class:`DkimMilter` per SMTP connection, driven by libmilter.

The only user of pymilter.  Per message it collects the header fields and the
body, decides (through :mod:`policy`) whether to sign or verify, and at end of
message inserts ``DKIM-Signature`` fields above the others or one
``Authentication-Results`` field (RFC 8601).

Every callback sits behind one error barrier: an unexpected exception is
logged with its traceback and the queue id, ``On-InternalError`` is applied,
and the process carries on.  Known outcomes map to OpenDKIM's ``On-*``
actions, plus ``On-DirectoryError`` when the directory cannot answer and
nothing recent enough is cached.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import Milter

from ldapdkim import __version__, metrics
from ldapdkim.config.settings import Settings
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.owners import SenderDirectory
from ldapdkim.errors import (
    SIGNING_REFUSALS,
    DomainNotSigned,
    InvalidDomain,
    KeyUnavailable,
    LdapDkimError,
    MessageError,
)
from ldapdkim.milter import refusals
from ldapdkim.milter.refusals import Refusal
from ldapdkim.model import (
    Action,
    DkimResult,
    DomainPolicy,
    Header,
    NotSealedReason,
    NotSignedReason,
    Outcome,
    Resolution,
    SigningKey,
    SigningParams,
    VerifyResult,
)
from ldapdkim.signing import arcchoice, authresults, policy
from ldapdkim.signing.arc import ArcVerdict, ChainValidation, seal, verify_chain
from ldapdkim.signing.authorization import Sender, authorize
from ldapdkim.signing.bodyhash import BodyHasher
from ldapdkim.signing.keyfetch import DnsLookup
from ldapdkim.signing.keyring import Keyring, KeySigner
from ldapdkim.signing.signer import body_hasher, sign_parsed
from ldapdkim.signing.verifier import verify

log = logging.getLogger(__name__)

# pymilter is untyped; its replies are small ints.
CONTINUE: int = Milter.CONTINUE
ACCEPT: int = Milter.ACCEPT
REJECT: int = Milter.REJECT
TEMPFAIL: int = Milter.TEMPFAIL
DISCARD: int = Milter.DISCARD
SKIP: int = Milter.SKIP
LEADSPC: int = Milter.P_HDR_LEADSPC

F = TypeVar("F", bound=Callable[..., Any])

_SMTP_REASONS = {
    Outcome.NO_SIGNATURE: "no signature",
    Outcome.DNS_ERROR: "key lookup failed temporarily",
    Outcome.KEY_NOT_FOUND: "key not found",
    Outcome.BAD_SIGNATURE: "signature did not verify",
}
"""The SMTP reply text of each verification outcome."""


@dataclass
class Counters:
    """Totals since start, for status output and benchmarks."""

    sessions: int = 0
    """SMTP connections open now."""
    signed: int = 0
    verified: int = 0
    not_signed: int = 0
    """Messages to sign that were not signed, for any reason: the sum of the
    ``ldapdkim_messages_not_signed_total`` series (see :meth:`count_not_signed`)."""
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def count_not_signed(self, reason: NotSignedReason) -> None:
        """Count a message not signed here and in the metric alike, so that they agree."""
        self.add("not_signed")
        metrics.count_not_signed(reason)


@dataclass(frozen=True)
class Runtime:
    """Everything a session needs; replaced as a whole when the configuration is reloaded."""

    settings: Settings
    resolver: CachedResolver
    lookup: DnsLookup
    """Every TXT record at a name, for key lookups (:class:`TxtLookup`)."""
    authserv_id: str
    counters: Counters = field(default_factory=Counters)
    senders: SenderDirectory | None = None
    """Owners of addresses and members of groups (sender authorization); None without LDAP."""
    organizational: Callable[[str], str] = field(default=lambda name: name)
    """A domain's organizational domain (RFC 7489 §3.2), for SenderAlignment."""
    keyring: Keyring = field(default_factory=Keyring)
    """Turns key entries into signers: plaintext, sealed, or in a token."""

    def close(self) -> None:
        """Close the directory connections and the token's sessions (at shutdown)."""
        self.resolver.directory.close()
        if self.senders is not None:
            self.senders.backend.close()
        self.keyring.close()

    @classmethod
    def default_authserv_id(cls, settings: Settings) -> str:
        return settings.authserv_id or socket.gethostname()


class QueueIdAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the MTA's queue id, as OpenDKIM does."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['queue_id']}: {msg}" if self.extra else msg, kwargs


class _Done(Exception):
    """Ends end-of-message processing early with a milter reply."""

    def __init__(self, reply: int) -> None:
        super().__init__(reply)
        self.reply = reply


def barrier(method: F) -> F:
    """Turn any exception in a callback into a log line and ``On-InternalError``."""

    @functools.wraps(method)
    def wrapper(self: DkimMilter, *args: Any) -> Any:
        try:
            return method(self, *args)
        except Exception:
            self._internal_error(method.__name__)
            return self._broken_reply()

    return wrapper  # type: ignore[return-value]


def no_reply(method: F) -> F:
    """A step that always continues, so the MTA need not wait for its answer.

    libmilter sends no reply when the MTA agreed to it (``SMFIP_NR_*``, offered
    on a Unix socket, and over TCP with ``NoReplyOverTCP``: see
    :meth:`DkimMilter.negotiate`), and Postfix and Sendmail then stream the
    steps without a round trip each.  An exception is
    logged at once and answered with ``On-InternalError`` at end of message,
    since this step cannot answer; the steps between do nothing more.
    """

    @functools.wraps(method)
    def wrapper(self: DkimMilter, *args: Any) -> Any:
        if self.broken:
            return CONTINUE
        try:
            return method(self, *args)
        except Exception:
            self._internal_error(method.__name__)
            return CONTINUE

    return Milter.noreply(wrapper)  # type: ignore[no-any-return]


NO_REPLY_STEPS: int = Milter.P_NR_DATA | Milter.P_NR_HDR | Milter.P_NR_EOH | Milter.P_NR_BODY
"""The replies :func:`no_reply` steps skip."""


@Milter.header_leading_space
class DkimMilter(Milter.Base):  # type: ignore[misc]
    """One SMTP connection's worth of DKIM signing and verifying."""

    def __init__(self, current: Callable[[], Runtime]) -> None:
        self.runtime = current()
        self.client_address: str | None = None
        self.client_name: str | None = None
        self.queue_id = ""
        self.log: logging.LoggerAdapter = QueueIdAdapter(log, {"queue_id": "NOQUEUE"})  # type: ignore[type-arg]
        self.broken = False
        """A step that does not reply failed; end of message answers for it."""
        self._reset()

    def _reset(self) -> None:
        self.mail_from: str | None = None
        self.login: str | None = None
        self.role = policy.Role.SKIP
        self.role_reason = ""
        self.headers: list[Header] = []
        self.chunks: list[bytes] = []
        self.resolution: Resolution | None = None
        self.params: SigningParams | None = None
        self.hasher: BodyHasher | None = None
        self.refusal: Exception | None = None
        self.recipients: list[str] = []
        """Envelope recipients, kept only with ARCSeal."""
        self.arc_wanted = False
        """ARCSeal chose this message (:meth:`_arc_wanted`); its body is kept for the seal."""
        self.arc_verdict: ArcVerdict | None = None
        self.dkim_results: list[VerifyResult] | None = None
        """The DKIM results of a verified message, for the ARC-Authentication-Results."""
        self.added_fields: list[Header] = []
        """Fields this milter put above the message's, as the next hop will see them."""

    # -- helpers ----------------------------------------------------------------

    def macro(self, name: str) -> str | None:
        value = self.getsymval(name)
        return str(value) if value else None

    def _set_queue_id(self) -> None:
        queue_id = self.macro("i")
        if queue_id and queue_id != self.queue_id:
            self.queue_id = queue_id
            self.log = QueueIdAdapter(log, {"queue_id": queue_id})

    def _why(self, text: str, *args: object) -> None:
        if self.runtime.settings.log_why:
            self.log.info(text, *args)

    def _internal_error(self, step: str) -> None:
        """Log and count an unexpected exception in ``step``; the message is now broken."""
        self.broken = True
        try:
            self.runtime.counters.add("errors")
            metrics.ERRORS.inc()
            self.log.exception("internal error in %s; applying On-InternalError", step)
        except Exception:  # noqa: S110 - reporting must not turn into a second failure
            pass

    def _broken_reply(self) -> int:
        """``On-InternalError`` for a broken message; the next message starts afresh."""
        self.broken = False
        self._reset()
        try:
            return self.reply_for(Outcome.INTERNAL_ERROR, "internal error")
        except Exception:  # the barrier must not raise
            return TEMPFAIL

    def negotiate(self, opts: list[int]) -> int:
        """Skip the replies to :func:`no_reply` steps on a Unix socket, and over TCP only
        with ``NoReplyOverTCP``.

        Over TCP, a write of the MTA's that follows one we did not answer
        waits in Nagle's algorithm for our delayed ACK: through Postfix, 48 ms
        a message instead of 4, unless the route to the MTA has quickack
        (docs/mta.md).  A Unix socket has no such delay.
        """
        offered = opts[1]
        reply: int = super().negotiate(opts)
        if reply == CONTINUE:
            self._recipients_only_to_seal(opts, offered)
        if reply == CONTINUE and not self.runtime.settings.streams_steps:
            opts[1] &= ~NO_REPLY_STEPS
            self._protocol = opts[1]
        return reply

    def _recipients_only_to_seal(self, opts: list[int], offered: int) -> None:
        """Without ARCSeal the MTA need not send RCPT TO at all (one round trip each)."""
        if not self.runtime.settings.arc_seal and offered & Milter.P_NORCPT:
            opts[1] |= Milter.P_NORCPT
            self._protocol = opts[1]

    def reply_for(self, outcome: Outcome, reason: str) -> int:
        """The milter reply for an ``On-*`` outcome, with the SMTP text set."""
        action = self.runtime.settings.action_for(outcome)
        metrics.count_action(outcome, action.value)
        if action is Action.REJECT:
            self.setreply("550", "5.7.1", f"DKIM: {reason}".replace("%", "%%"))
            return REJECT
        if action is Action.TEMPFAIL:
            self.setreply("451", "4.7.1", f"DKIM: {reason}; try again later".replace("%", "%%"))
            return TEMPFAIL
        if action is Action.DISCARD:
            return DISCARD
        if action is Action.QUARANTINE:
            self.quarantine(f"DKIM: {reason}")
        return ACCEPT

    # -- callbacks --------------------------------------------------------------

    @barrier
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.runtime.counters.add("sessions")
        if family in (socket.AF_INET, socket.AF_INET6) and hostaddr:
            # libmilter gives (address, port, ...); pymilter's test context a bare string.
            self.client_address = hostaddr if isinstance(hostaddr, str) else str(hostaddr[0])
        self.client_name = hostname or None
        return CONTINUE

    @barrier
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._reset()
        self._set_queue_id()
        self.role, self.role_reason = policy.choose_role(
            self.runtime.settings, self.client_address, self.client_name, self.macro
        )
        self.mail_from = mailfrom.strip().removeprefix("<").removesuffix(">")
        self.login = self.macro("{auth_authen}")
        if self.role is policy.Role.SKIP:
            self._why("not processed: %s", self.role_reason)
            return ACCEPT
        return CONTINUE

    @barrier
    def envrcpt(self, to: str, *params: str) -> int:
        """Recipients matter to ARCSeal only (dkimSignArcAddress, ARCSealDomain recipient)."""
        if self.runtime.settings.arc_seal:
            self.recipients.append(to.strip().removeprefix("<").removesuffix(">"))
        return CONTINUE

    @no_reply
    def data(self) -> int:
        """Kept, not negotiated away: without a DATA step Postfix sends the DATA
        macros with no command after them, and over TCP its next write then
        waits for our delayed ACK (about 40 ms per message)."""
        return CONTINUE

    @no_reply
    @Milter.decode("bytes")  # type: ignore[untyped-decorator]
    def header(self, name: bytes | str, value: bytes) -> int:
        raw_name = name.encode("ascii", "surrogateescape") if isinstance(name, str) else name
        if not self._protocol & LEADSPC:
            value = b" " + value
        # libmilter hands folded fields with bare LF; on the wire they are CRLF.
        lines = value.replace(b"\r\n", b"\n").split(b"\n")
        self.headers.append((raw_name, b"\r\n".join(lines) + b"\r\n"))
        return CONTINUE

    @no_reply
    def eoh(self) -> int:
        """Where this step is answered (over TCP), a message that turned out to be neither
        signed nor verified is accepted here, and its body is not sent."""
        self._set_queue_id()
        signing = self.role is policy.Role.SIGN
        if signing:
            self._resolve_signer()
            self._settle_role()
        self.arc_wanted = self._arc_wanted()
        if signing and self._left_alone() and not self._protocol & Milter.P_NR_EOH:
            self._reset()
            return ACCEPT
        return CONTINUE

    def _left_alone(self) -> bool:
        """Neither signed, verified nor sealed: the message is let through as it is."""
        return self.role is policy.Role.SKIP and not self.arc_wanted

    @no_reply
    def body(self, chunk: bytes) -> int:
        """Where this step is answered (over TCP) and the body is neither hashed nor kept
        (signing was refused at end of header, nothing to seal), the rest of it is
        skipped (``SMFIS_SKIP``)."""
        if self.hasher is not None:  # signing: hash as it comes, keep nothing (but to seal)
            self.hasher.update(chunk)
        if self.role is policy.Role.VERIFY or self.arc_wanted:
            self.chunks.append(chunk)
        elif self.hasher is None and self._protocol & Milter.P_SKIP:
            if not self._protocol & Milter.P_NR_BODY:
                return SKIP
        return CONTINUE

    @barrier
    def eom(self) -> int:
        if self.broken:
            return self._broken_reply()
        self._set_queue_id()
        try:
            if self.role is policy.Role.SIGN:
                return self._then_seal(self._sign())
            if self.role is policy.Role.VERIFY:
                return self._then_seal(self._verify())
            return self._then_seal(ACCEPT)
        except _Done as done:
            return done.reply
        finally:
            self._reset()

    @barrier
    def abort(self) -> int:
        self.broken = False
        self._reset()
        return CONTINUE

    @barrier
    def close(self) -> int:
        self.runtime.counters.add("sessions", -1)
        return CONTINUE

    # -- signing ----------------------------------------------------------------

    def _resolve_signer(self) -> None:
        """Look the author domain up at end of header, before the body arrives."""
        runtime = self.runtime
        try:
            address = policy.author(self.headers)
            self.resolution = runtime.resolver.resolve(address.rpartition("@")[2])
            sender = Sender(address, self.login, self.client_address, self.mail_from)
            authorize(
                runtime.settings,
                self.resolution.policy,
                sender,
                runtime.senders,
                runtime.organizational,
            )
            self.params = policy.signing_params(runtime.settings, self.resolution)
            self.hasher = body_hasher(self.params)
        except SIGNING_REFUSALS as refusal:
            self.refusal = refusal

    def _settle_role(self) -> None:
        """Sign, verify or pass an originating client's message, now that its author is known.

        Mail of a domain ldapdkim does not sign is verified like mail from
        outside (OpenDKIM does the same); in ``Mode v`` mail of a domain it
        signs for passes untouched.  Any other refusal (no readable From, the
        directory down) stays with signing, whose ``On-*`` actions apply.
        """
        settings = self.runtime.settings
        refusal = self.refusal
        if isinstance(refusal, DomainNotSigned):
            if settings.signs:
                self._not_signed(refusals.refusal_for(refusal), refusal)
            ours = False
        elif refusal is None:
            ours = True
        elif settings.signs:
            return
        else:
            ours = False
        self.role, self.role_reason = policy.role_for_author(settings, ours, self.role_reason)
        if self.role is not policy.Role.SIGN:
            self.hasher = None
            if self.role is policy.Role.SKIP:
                self._why("not processed: %s", self.role_reason)

    def _sign(self) -> int:
        """Sign, or refuse to for a reason of :mod:`refusals`: log, count and reply."""
        if self.refusal is not None:
            return self._refuse(refusals.refusal_for(self.refusal), self.refusal)
        resolution, params, hasher = self.resolution, self.params, self.hasher
        if resolution is None or params is None or hasher is None:  # _resolve_signer did not run
            raise _Done(self.reply_for(Outcome.INTERNAL_ERROR, "no signing decision"))
        now = datetime.now(UTC)
        keys = policy.signing_keys(resolution, now)
        if not keys:
            reason, why = refusals.keyless(resolution)
            return self._refuse(refusals.refusal_for(reason), why)
        try:
            signers = self._signers(keys, resolution.signing_domain, resolution.policy.names)
            values = sign_parsed(
                self.headers,
                hasher,
                resolution.signing_domain,
                signers,
                params,
                timestamp=int(now.timestamp()),
            )
        except KeyUnavailable as err:
            return self._refuse(refusals.refusal_for(err), err)
        except MessageError as err:
            return self._refuse(refusals.refusal_for(NotSignedReason.MESSAGE_UNSIGNABLE), err)
        self._add_signatures(values)
        self._signed(resolution.signing_domain, signers)
        return ACCEPT

    def _not_signed(self, refusal: Refusal, why: object) -> None:
        """Count a refusal and log ``not signed: why`` at its level (INFO only with LogWhy)."""
        self.runtime.counters.count_not_signed(refusal.reason)
        if refusal.level > logging.INFO or self.runtime.settings.log_why:
            self.log.log(refusal.level, "not signed: %s", why)

    def _refuse(self, refusal: Refusal, why: object) -> int:
        """Log and count a refusal, and reply: its ``On-*`` action, or accept unsigned."""
        self._not_signed(refusal, why)
        if refusal.outcome is None:
            return ACCEPT
        return self.reply_for(refusal.outcome, refusal.text)

    def _add_signatures(self, values: Sequence[bytes]) -> None:
        """Insert the ``DKIM-Signature`` fields (and ``DKIM-Filter``) above the others."""
        leading = "" if self._protocol & LEADSPC else None
        for value in reversed(values):
            text = value.decode("ascii").replace("\r\n", "\n")
            self.addheader("DKIM-Signature", text if leading is not None else text.lstrip(), 0)
            self.added_fields.insert(0, (b"DKIM-Signature", value + b"\r\n"))
        if self.runtime.settings.software_header:
            self.addheader("DKIM-Filter", self._space(f"ldapdkim {__version__} {self.queue_id}"), 0)

    def _signed(self, domain: str, signers: Sequence[KeySigner]) -> None:
        """Count a signed message and its signatures; log them with SyslogSuccess or LogWhy."""
        settings = self.runtime.settings
        self.runtime.counters.add("signed")
        metrics.MESSAGES_SIGNED.inc()
        for signer in signers:
            metrics.labelled(metrics.SIGNATURES_MADE, signer.algorithm.value).inc()
        if settings.syslog_success or settings.log_why:
            for signer in signers:
                self.log.info(
                    "signed d=%s s=%s a=%s (%s)",
                    domain,
                    signer.selector,
                    signer.algorithm.value,
                    self.role_reason,
                )

    def _signers(
        self, keys: Sequence[SigningKey], domain: str, names: Sequence[str]
    ) -> list[KeySigner]:
        """The signers of the keys that can sign here; a key that cannot is logged and left
        out, as a key the directory marks unusable is.

        Raises:
            KeyUnavailable: no key can sign (the first one's reason).
        """
        signers: list[KeySigner] = []
        first: KeyUnavailable | None = None
        for key in keys:
            try:
                signers.append(self.runtime.keyring.signer_for(key, domain, names=names))
            except KeyUnavailable as err:
                first = first or err
                if len(keys) > 1:
                    self.log.error("not signing with this key: %s", err)
        if not signers and first is not None:
            raise first
        return signers

    def _body(self) -> bytes:
        """The body kept for verifying or sealing, joined once however many of DKIM
        verification, the ARC check and the seal read it."""
        if len(self.chunks) != 1:
            self.chunks = [b"".join(self.chunks)]
        return self.chunks[0]

    def _space(self, text: str) -> str:
        return f" {text}" if self._protocol & LEADSPC else text

    # -- verifying --------------------------------------------------------------

    def _verify(self) -> int:
        runtime = self.runtime
        settings = runtime.settings
        author = policy.readable_author_domain(self.headers)
        results = verify(
            self.headers,
            self._body(),
            runtime.lookup,
            author_domain=author,
            max_signatures=settings.maximum_signatures_to_verify,
            minimum_key_bits=settings.minimum_key_bits,
            timeout=settings.dns_timeout,
        )
        self.dkim_results = results
        arc = self._arc_result() if settings.arc_verify else None
        self._remove_forged_results()
        if results or arc or settings.always_add_ar_header:
            # One result per line: libmilter takes LF, the MTA writes CRLF.
            value = authresults.build(runtime.authserv_id, results, arc).replace("; ", ";\n\t")
            self.addheader(authresults.HEADER, self._space(value), 0)
            self._added(authresults.HEADER, value)
        runtime.counters.add("verified")
        _count_verified(results)
        for r in results:
            if r.result is not DkimResult.PASS or runtime.settings.syslog_success:
                self.log.info(
                    "verified d=%s s=%s a=%s result=%s%s",
                    r.domain,
                    r.selector,
                    r.algorithm,
                    r.result.value,
                    f" ({r.reason})" if r.reason else "",
                )
        self._warn_if_spoofing(author)
        return self._verify_action(results)

    def _verify_action(self, results: list[VerifyResult]) -> int:
        outcome = policy.verification_outcome(results)
        if outcome is None:
            return ACCEPT
        return self.reply_for(outcome, _SMTP_REASONS[outcome])

    def _remove_forged_results(self) -> None:
        """Delete A-R fields that claim our authserv-id (RFC 8601 §5): we did not write them."""
        ours = self.runtime.authserv_id.lower()
        index = 0
        for name, value in self.headers:
            if name.lower() != b"authentication-results":
                continue
            index += 1
            text = value.decode("utf-8", "replace")
            if authresults.authserv_id_of(text) == ours:
                # chgheader with no value deletes; indexes are per name, from 1,
                # and refer to the original header, so deletions do not shift them.
                self.chgheader(authresults.HEADER, index, None)
                self.log.info("removed an Authentication-Results field claiming %s", ours)

    def _warn_if_spoofing(self, domain: str | None) -> None:
        """OpenDKIM's notice: an outside client sends as ``domain``, one we sign for."""
        settings = self.runtime.settings
        if domain is None or settings.external_ignore_list.matches(
            self.client_address, self.client_name
        ):
            return
        try:
            self.runtime.resolver.resolve(domain)
        except Exception:  # a notice only: any failure means "not ours"
            return
        self.log.warning(
            "external host %s tried to send as %s, a signing domain",
            self.client_address or self.client_name,
            domain,
        )

    # -- ARC (docs/arc.md) --------------------------------------------------------

    def _policy_of(self, domain: str) -> DomainPolicy | None:
        """The domain's entry, or None when it has none or the directory cannot say."""
        try:
            return self.runtime.resolver.resolve(domain).policy
        except LdapDkimError:
            return None

    def _arc_wanted(self) -> bool:
        """ARCSeal: the client is one whose mail is sealed, or a recipient is a listed address."""
        settings = self.runtime.settings
        if not settings.arc_seal:
            return False
        return arcchoice.client_seals(
            settings, self.client_address, self.client_name, self.login
        ) or any(arcchoice.listed(address, self._policy_of) for address in self.recipients)

    def _added(self, name: str, value: str) -> None:
        """Remember a field inserted at the top, in the form of :attr:`headers`."""
        wire = value.lstrip().replace("\r\n", "\n").replace("\n", "\r\n")
        self.added_fields.insert(0, (name.encode("ascii"), f" {wire}\r\n".encode()))

    def _verdict(self) -> ArcVerdict:
        """The message's ARC chain, checked once (for A-R and seal alike) and counted."""
        if self.arc_verdict is None:
            settings = self.runtime.settings
            verdict = verify_chain(
                self.headers,
                self._body(),
                self.runtime.lookup,
                timeout=settings.dns_timeout,
                minimum_key_bits=settings.minimum_key_bits,
            )
            metrics.labelled(metrics.ARC_CHAINS_VERIFIED, verdict.cv.value).inc()
            if verdict.cv is ChainValidation.FAIL or settings.syslog_success:
                self.log.info(
                    "ARC chain cv=%s sets=%d sealer=%s%s",
                    verdict.cv.value,
                    verdict.instances,
                    verdict.sealer or "-",
                    f" ({verdict.reason})" if verdict.reason else "",
                )
            self.arc_verdict = verdict
        return self.arc_verdict

    def _arc_result(self) -> str:
        """The ``arc=`` clause of our A-R and of the AAR, with the client's address."""
        return authresults.arc_clause(self._verdict(), self.client_address)

    def _then_seal(self, reply: int) -> int:
        """After signing or verifying: add an ARC set to mail that passes and ARCSeal chose."""
        if reply == ACCEPT and self.arc_wanted:
            try:
                self._seal()
            except _NotSealed as not_sealed:
                metrics.labelled(metrics.ARC_NOT_SEALED, not_sealed.reason.value).inc()
                self.log.info("not sealed: %s", not_sealed)
        return reply

    def _seal(self) -> None:
        """Seal with the key the sealing domain's entry names (dkimSignArcSelector).

        Raises:
            _NotSealed: why not: the chain is full or could not be checked now,
                the domain is not ours or does not seal, its key cannot sign, the
                message cannot be sealed.
        """
        runtime, settings = self.runtime, self.runtime.settings
        verdict = self._verdict()
        if verdict.at_limit:
            raise _NotSealed(
                NotSealedReason.CHAIN_AT_LIMIT,
                f"the ARC chain may not grow: {verdict.reason or 'it holds 50 sets'}",
            )
        if verdict.temporary:
            raise _NotSealed(
                NotSealedReason.CHAIN_UNCHECKED,
                f"the ARC chain could not be checked now ({verdict.reason}); "
                "not sealing it cv=fail",
            )
        domain = arcchoice.sealing_domain(
            settings, self.mail_from, self.recipients, self._policy_of
        )
        if domain is None:
            raise _NotSealed(
                NotSealedReason.NO_SEALING_DOMAIN,
                f"ARCSealDomain {settings.arc_seal_domain} names no domain for this message",
            )
        try:
            resolution = runtime.resolver.resolve(domain)
        except (DomainNotSigned, InvalidDomain):
            raise _NotSealed(
                NotSealedReason.DOMAIN_NOT_OURS,
                f"sealing domain {domain} has no entry in the directory",
            ) from None
        except LdapDkimError as err:
            raise _NotSealed(NotSealedReason.DIRECTORY_UNAVAILABLE, err) from None
        now = datetime.now(UTC)
        choice = arcchoice.sealing_key(resolution, now)
        if choice.key is None or choice.reason is not None:
            raise _NotSealed(choice.reason or NotSealedReason.NO_SEALING_KEY, choice.why)
        try:
            signer = runtime.keyring.signer_for(
                choice.key, resolution.signing_domain, names=resolution.policy.names
            )
        except KeyUnavailable as err:
            raise _NotSealed(NotSealedReason.NO_SEALING_KEY, err) from None
        body = self._body()
        results = authresults.payload(self._dkim_results(body), self._arc_result())
        try:
            fields = seal(
                [*self.added_fields, *self.headers],
                body,
                verdict,
                domain=resolution.signing_domain,
                signer=signer,
                authserv_id=runtime.authserv_id,
                results=results,
                timestamp=int(now.timestamp()),
                comments=settings.arc_auth_results_comments,
            )
        except (MessageError, ValueError) as err:
            raise _NotSealed(NotSealedReason.MESSAGE_UNSEALABLE, err) from None
        except KeyUnavailable as err:
            raise _NotSealed(NotSealedReason.NO_SEALING_KEY, err) from None
        for name, value in reversed(fields):
            text = value.decode("ascii").replace("\r\n", "\n").lstrip()
            self.addheader(name.decode("ascii"), self._space(text), 0)
        cv = ChainValidation.NONE if verdict.instances == 0 else verdict.cv
        metrics.labelled(metrics.ARC_SEALS, cv.value).inc()
        if settings.syslog_success or settings.log_why:
            self.log.info(
                "sealed i=%d d=%s s=%s cv=%s",
                verdict.instances + 1,
                resolution.signing_domain,
                signer.selector,
                cv.value,
            )

    def _dkim_results(self, body: bytes) -> list[VerifyResult]:
        """The DKIM results for the AAR: the verifier's, or (mail we signed) checked now."""
        if self.dkim_results is None:
            settings = self.runtime.settings
            self.dkim_results = verify(
                self.headers,
                body,
                self.runtime.lookup,
                author_domain=policy.readable_author_domain(self.headers),
                max_signatures=settings.maximum_signatures_to_verify,
                minimum_key_bits=settings.minimum_key_bits,
                timeout=settings.dns_timeout,
            )
        return self.dkim_results


_KNOWN_ALGORITHMS = frozenset({"rsa-sha256", "ed25519-sha256", "rsa-sha1"})


def _count_verified(results: list[VerifyResult]) -> None:
    """Count a verified message and its signatures; label values come from closed sets."""
    if not results:
        verdict = DkimResult.NONE
    elif any(r.result is DkimResult.PASS for r in results):
        verdict = DkimResult.PASS
    else:
        verdict = results[0].result
    metrics.labelled(metrics.MESSAGES_VERIFIED, verdict.value).inc()
    for r in results:
        algorithm = r.algorithm if r.algorithm in _KNOWN_ALGORITHMS else "unknown"
        metrics.labelled(metrics.SIGNATURES_VERIFIED, algorithm, r.result.value).inc()


class _NotSealed(Exception):
    """Ends sealing: the message goes on without an ARC set, for a counted reason."""

    def __init__(self, reason: NotSealedReason, why: object) -> None:
        super().__init__(str(why))
        self.reason = reason
