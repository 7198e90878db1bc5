"""One face for the MTAs the milter is tested behind: Postfix and Sendmail.

The milter cases that do not depend on the MTA run on each, as one test
parametrised by :data:`MTAS` (``tests/integration/test_milter_mta.py``).
:class:`Mta` is all such a case may use; :func:`make_mta` gives the adapter
for an MTA by name, made but not started.  What only one MTA has (Postfix's
local submission, SASL, reload) stays with that MTA's own class and tests.
:func:`milter_behind` starts ``ldapdkim run`` and the MTA in front of it, and
:class:`MtaSetup` sends through both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from harness.mailsite import MailSite
from harness.milterproc import MilterProcess
from harness.milterproto import MilterAddress
from harness.postfix import Postfix, require_postfix
from harness.sendmail import Sendmail, require_sendmail
from harness.smtp import SmtpReply, header_values

MTAS = ("postfix", "sendmail")
"""The MTAs :func:`make_mta` knows, by the name a parametrised test shows."""


class _Relay(Protocol):
    """What Postfix and Sendmail offer alike, as they are."""

    @property
    def submission_port(self) -> int: ...

    def send(
        self,
        message: bytes,
        *,
        mail_from: str,
        rcpt_to: Sequence[str],
        port: int | None = None,
        source_address: str = "127.0.0.1",
    ) -> SmtpReply:
        """Send *message* over SMTP to the MTA port (or *port*); a refusal is returned."""

    def close(self) -> None:
        """Stop the MTA and its sink."""


class Mta(_Relay, Protocol):
    """An MTA on loopback that passes all mail through one milter to its sink."""

    socket_dir: Path
    """Where the MTA can reach a milter's Unix socket (made before :meth:`start`)."""
    submission_daemon: str
    """The ``{daemon_name}`` macro of the submission listener."""

    def start(self, milter: str) -> None:
        """Start with *milter* (libmilter's notation, ``inet:PORT@HOST`` or ``local:PATH``)
        as the filter of all mail, and return once the MTA answers."""

    def wait_for_message(self, subject: str) -> bytes:
        """The message with this Subject as the MTA relayed it to its sink (fails in time)."""


class _Adapter:
    """The part of :class:`Mta` that an adapter passes on to its MTA unchanged."""

    def __init__(self, relay: _Relay) -> None:
        self._relay = relay

    @property
    def submission_port(self) -> int:
        return self._relay.submission_port

    def send(
        self,
        message: bytes,
        *,
        mail_from: str,
        rcpt_to: Sequence[str],
        port: int | None = None,
        source_address: str = "127.0.0.1",
    ) -> SmtpReply:
        return self._relay.send(
            message, mail_from=mail_from, rcpt_to=rcpt_to, port=port, source_address=source_address
        )

    def close(self) -> None:
        self._relay.close()


class PostfixMta(_Adapter):
    """:class:`Mta` on :class:`harness.postfix.Postfix`."""

    submission_daemon = "ORIGINATING"

    def __init__(
        self,
        workdir: Path,
        *,
        extra_main_cf: Mapping[str, str] = {},
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        """*extra_main_cf*, *sasl_users*: as :class:`harness.postfix.Postfix` takes them."""
        require_postfix()
        self.postfix = Postfix(workdir, extra_main_cf=extra_main_cf, sasl_users=sasl_users)
        super().__init__(self.postfix)
        self.socket_dir = self.postfix.socket_dir

    def start(self, milter: str) -> None:
        address = MilterAddress.parse(milter)
        self.postfix.set_milter(
            f"inet:{address.host}:{address.port}" if address.is_tcp else f"unix:{address.path}"
        )
        self.postfix.start()

    def wait_for_message(self, subject: str) -> bytes:
        return self.postfix.wait_for_message(subject)


class SendmailMta(_Adapter):
    """:class:`Mta` on :class:`harness.sendmail.Sendmail`."""

    submission_daemon = "MSA"

    def __init__(self, workdir: Path) -> None:
        require_sendmail()
        self.sendmail = Sendmail(workdir, milter="")
        super().__init__(self.sendmail)
        # Sendmail and the milter run as root: any directory of the test will do.
        self.socket_dir = workdir.parent / f"{workdir.name}-sockets"
        self.socket_dir.mkdir(parents=True, exist_ok=True)

    def start(self, milter: str) -> None:
        self.sendmail.milter = milter  # read when sendmail.cf is made, at the first start
        self.sendmail.start()

    def wait_for_message(self, subject: str) -> bytes:
        found = self.sendmail.wait_for_message(
            predicate=lambda message: subject in message.header_values("Subject")
        )
        return found.data


def make_mta(name: str, workdir: Path) -> Mta:
    """The adapter for MTA *name* (one of :data:`MTAS`) in *workdir*, not started.

    Skips the test (fails it in CI) when that MTA cannot run here.
    """
    adapters: dict[str, type[PostfixMta] | type[SendmailMta]] = {
        "postfix": PostfixMta,
        "sendmail": SendmailMta,
    }
    return adapters[name](workdir)


M = TypeVar("M", bound=Mta)


@dataclass
class MtaSetup(Generic[M]):
    """A mail site's milter behind an MTA, as :func:`milter_behind` starts them."""

    site: MailSite
    milter: MilterProcess
    mta: M

    def send(self, msg: bytes, *, source: str = "127.0.0.1", port: int | None = None) -> bytes:
        """Send *msg* from alice@example.com to bob@example.net; the copy that arrived."""
        subject = header_values(msg, "Subject")[0]
        reply = self.mta.send(
            msg,
            mail_from="alice@example.com",
            rcpt_to=["bob@example.net"],
            source_address=source,
            port=port,
        )
        assert reply.accepted, (reply, self.milter.log())
        return self.mta.wait_for_message(subject)


@contextmanager
def milter_behind(
    mta: Mta, site: MailSite, workdir: Path, *config: str, unix: bool = False
) -> Iterator[MilterProcess]:
    """``ldapdkim run`` in *workdir* with *site*'s configuration and *config*, on a
    loopback port or (*unix*) a socket in the MTA's :attr:`Mta.socket_dir`, and *mta*
    started in front of it.  Afterwards the milter's log must hold no traceback."""
    socket_path = mta.socket_dir / "ldapdkim.sock" if unix else None
    # UMask 000: user postfix must be able to write to the root-owned socket.
    lines = site.milter_config(*config, *(["UMask 000"] if unix else []))
    with MilterProcess(workdir, lines, unix_socket=socket_path) as milter:
        mta.start(milter.socket)
        yield milter
        assert "Traceback" not in milter.log(), milter.log()
