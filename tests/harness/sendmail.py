"""Run a throw-away Sendmail for end-to-end milter tests.

This module's one job is :class:`Sendmail`: Debian's Sendmail, started by the
tests in a temporary directory on loopback with one milter, relaying every
message to an in-process SMTP sink (:class:`SmtpSink`) so that tests can look
at what the milter did to it.

Sendmail is not installed, so it can sit next to the installed Postfix
(Debian's ``sendmail-bin`` and ``postfix`` both provide and conflict with
``mail-transport-agent``; installing one removes the other).
``tests/setup.sh`` unpacks the machine's own release of ``sendmail-bin`` and
``sendmail-cf`` with ``dpkg-deb -x`` into ``tests/.cache/sendmail``; the
libraries it links (libmilter, libdb, libsasl2, libssl, liblockfile, ...) and
``m4`` come from ordinary packages that do not conflict with Postfix.

How it is run, and why:

* ``sendmail.cf`` is generated with ``m4`` from the unpacked
  ``cf/m4/cf.m4`` and a small ``.mc``.  Every file Sendmail would look for
  under ``/etc/mail`` or ``/var`` (queue, pid file, status file, aliases,
  help file, service switch, hosts file, relay-domains, dead.letter) is in
  *workdir* or the unpacked tree, so the machine's mail set-up is neither
  read nor written.  ``DontBlameSendmail=TrustStickyBit`` lets those files
  live under ``/tmp`` (world-writable, sticky); without it Sendmail ignores
  the aliases file and queues local mail with "alias database unavailable".
* Sendmail looks up its own host name before it reads any configuration,
  and when that name has no dot and no dotted alias (Docker containers, a VM
  called ``vm``) it sleeps 60 s at every start ("My unqualified host name
  (vm) unknown; sleeping for retry", ``myhostname()`` in daemon.c).  So every
  sendmail process runs under ``unshare --uts --mount`` with the host name
  ``mta.example.test`` and a private ``/etc/hosts`` bind-mounted over the
  real one, which resolves that name: no 60 s sleep, no DNS query, and the
  machine's host name and ``/etc/hosts`` are untouched.  This needs root (or
  CAP_SYS_ADMIN); :func:`require_sendmail` skips (fails in CI) without it.
* No DNS: ``ServiceSwitchFile`` says ``hosts files``, the private hosts file
  answers for the host name, ``nocanonify``, ``accept_unresolvable_domains``,
  no interface probing, no ident lookups, ``SMART_HOST`` and ``MAIL_HUB``
  are the bracketed address ``[127.0.0.1]`` (no MX lookup).
* Routing: every SMTP mailer connects to the sink's port (``A=TCP $h PORT``);
  ``SMART_HOST`` sends remote recipients there and ``MAIL_HUB`` local ones
  (``root`` arrives as ``root@[127.0.0.1]``), so bounces end up there too.
  ``promiscuous_relay`` lets any loopback source address relay, so tests may
  pick ``source_address`` freely (e.g. to look like an outside client).
* Log: Sendmail logs only through syslog(3), and a test machine may have no
  ``/dev/log`` at all.  Debug category 89 (``-d89.10``) sends every log line,
  with a timestamp, to the debug output instead (``sm_syslog()`` in conf.c),
  and ``-D`` puts that in ``sendmail.log`` in *workdir*, together with
  Sendmail's stderr: connections, milter errors, ``stat=Sent`` lines.
  :meth:`Sendmail.log_text` reads it.
* The daemon runs in the foreground (``-bD``) so the fixture owns its pid,
  and is ready when it has written its pid file (after binding its sockets)
  and both ports are listening (seen in ``/proc/net/tcp``: no probe
  connection, which would reach the milter).  Sendmail does not stop its
  children on SIGTERM and delivery children call setsid(), so :meth:`stop`
  ends the processes that share the instance's private mount namespace.

Only ``127.0.0.1`` is used: the MTA daemon (``{daemon_name}`` ``MTA``) on
:attr:`Sendmail.smtp_port`, a submission daemon (``MSA``, ``M=E``: no ETRN)
on :attr:`Sendmail.submission_port`, the sink on :attr:`SmtpSink.port`.
SMTP AUTH is not set up (no sasldb), so ``{auth_authen}`` stays unset.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from harness.common import free_port, log_tail, skip_or_fail, stop_process, wait_until_ready
from harness.slapd import REPO_ROOT
from harness.smtp import SinkMessage, SmtpReply, SmtpSink, send_message

SENDMAIL_CACHE = REPO_ROOT / "tests" / ".cache" / "sendmail"
"""Where tests/setup.sh unpacks Debian's sendmail-bin and sendmail-cf (git-ignored)."""
SENDMAIL_BINARY = SENDMAIL_CACHE / "usr" / "libexec" / "sendmail" / "sendmail"
CF_M4 = SENDMAIL_CACHE / "usr" / "share" / "sendmail" / "cf" / "m4" / "cf.m4"
HELP_FILE = SENDMAIL_CACHE / "etc" / "mail" / "helpfile"

HOSTNAME = "mta.example.test"
"""Sendmail's host name ($j, the greeting, Received: and Message-Id) in its UTS namespace."""
CLIENT_NAME = "client.example.test"
"""The EHLO name :meth:`Sendmail.send` uses."""

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 10.0

HELPER_PROGRAMS = ("m4", "unshare", "hostname", "mount")
"""Programs besides the unpacked sendmail that the fixture runs (m4; util-linux; hostname)."""

_SETUP_HINT = "run 'bash tests/setup.sh' (unpacks Debian's sendmail-bin and sendmail-cf)"

# Runs inside the new UTS and mount namespaces, then becomes sendmail (exec
# keeps the pid).  "$1" host name, "$2" private hosts file, then the argv.
_NAMESPACE_SCRIPT = 'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"'

# What cf.m4 prints for FEATURE(`promiscuous_relay').
_PROMISCUOUS_WARNING = (
    "*** WARNING: FEATURE(`promiscuous_relay') configures your system as open\n"
    "\trelay.  Do NOT use it on a server that is connected to the Internet!\n"
)

# "250 2.0.0 6AS4xZ2f022401 Message accepted for delivery"
_ACCEPTED = re.compile(r"^(?:\d\.\d{1,3}\.\d{1,3} )?(\S+) Message accepted for delivery")


class SendmailError(RuntimeError):
    """Sendmail could not be set up, did not start or stop, or mail did not arrive."""


# ---- availability -----------------------------------------------------------


@functools.cache
def _namespace_problem() -> str | None:
    """Why ``unshare --uts --mount`` does not work here, or None if it does."""
    try:
        result = subprocess.run(
            ["unshare", "--uts", "--mount", "--propagation", "private", "--", "true"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if result.returncode != 0:
        return result.stderr.strip() or f"exit status {result.returncode}"
    return None


def require_sendmail() -> None:
    """Skip (locally) or fail (in CI) unless the fixture can run Sendmail here.

    Needs the unpacked Sendmail from tests/setup.sh, ``m4``, ``unshare``,
    ``hostname`` and ``mount``, and permission to create UTS and mount
    namespaces (root or CAP_SYS_ADMIN).
    """
    missing = [str(path) for path in (SENDMAIL_BINARY, CF_M4) if not path.is_file()]
    if missing:
        skip_or_fail(f"Sendmail is not unpacked ({', '.join(missing)} missing); {_SETUP_HINT}")
    programs = [name for name in HELPER_PROGRAMS if shutil.which(name) is None]
    if programs:
        skip_or_fail(
            f"missing {', '.join(programs)}; {_SETUP_HINT} "
            "(Debian packages m4, util-linux, hostname, mount)"
        )
    problem = _namespace_problem()
    if problem is not None:
        skip_or_fail(
            f"cannot create UTS and mount namespaces ({problem}); the Sendmail fixture needs "
            "them for a qualified host name without touching the machine: run as root, or "
            "in a container with CAP_SYS_ADMIN"
        )


# ---- readiness helpers --------------------------------------------------------


def tcp_listening(port: int) -> bool:
    """True if some socket on this machine is listening on TCP *port* (Linux /proc)."""
    wanted = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # fields[1] is "ADDR:PORT" in hex, fields[3] the state; 0A is LISTEN.
            if len(fields) > 3 and fields[1].endswith(wanted) and fields[3] == "0A":
                return True
    return False


def wait_for_listener(
    port: int,
    process: subprocess.Popen[bytes],
    log_path: Path,
    what: str,
    timeout: float = READY_TIMEOUT,
) -> None:
    """Poll until TCP *port* is listening, without connecting to it.

    Raises:
        SendmailError: *process* exited first, or *timeout* seconds passed;
            the message ends with the tail of *log_path*.
    """
    wait_until_ready(
        what,
        f"listening on port {port}",
        lambda: tcp_listening(port),
        timeout=timeout,
        process=process,
        log=log_path,
        error=SendmailError,
    )


# ---- Sendmail ---------------------------------------------------------------------


def _mount_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _pids_in_mount_namespace(namespace: str) -> list[int]:
    """Every live process whose mount namespace is *namespace* ("mnt:[inode]")."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _mount_namespace(int(entry)) == namespace:
            pids.append(int(entry))
    return pids


@dataclass
class _Resources:
    """What must be released even if a test forgets to stop the server."""

    sink: SmtpSink
    process: subprocess.Popen[bytes] | None = None
    namespace: str | None = None

    def note_namespace(self) -> None:
        """Remember the daemon's mount namespace, once unshare has made it."""
        if self.process is not None and self.process.poll() is None:
            namespace = _mount_namespace(self.process.pid)
            # Still ours: unshare has not run yet, and there are no children.
            if namespace != _mount_namespace(os.getpid()):
                self.namespace = namespace

    def end_processes(self, timeout: float) -> None:
        """SIGTERM the daemon, then SIGKILL whatever is left in its namespace."""
        process = self.process
        if process is not None:
            stop_process(process, timeout)
        if self.namespace is not None and self.namespace != _mount_namespace(os.getpid()):
            # Children of the daemon (SMTP sessions, deliveries, queue runs)
            # outlive it and may have left its process group (setsid()); all
            # of them, and nothing else, share the namespace unshare made.
            for pid in _pids_in_mount_namespace(self.namespace):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
            while _pids_in_mount_namespace(self.namespace) and time.monotonic() < deadline:
                time.sleep(0.01)
        self.process = None
        self.namespace = None

    def release(self) -> None:
        self.end_processes(STOP_TIMEOUT)
        self.sink.close()


class Sendmail:
    """A private Sendmail in *workdir* with one milter: set up on the first :meth:`start`.

    *milter* is the filter's socket as Sendmail writes it (``inet:PORT@HOST``,
    ``unix:/path``); *milter_flags* is its ``F=`` (``T``: tempfail the
    transaction while the milter is unreachable; ``R``: reject; ``""``: go
    on without it); *milter_timeouts* its ``T=``.  Ports (MTA, MSA, sink) are
    chosen when the object is made and stay the same across :meth:`restart`.
    Used as a context manager it starts on entry; on exit it stops Sendmail
    and the sink (the object is then spent; *workdir* is left for inspection).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        milter: str,
        milter_flags: str = "T",
        milter_timeouts: str = "C:10s;S:30s;R:30s;E:2m",
        milter_name: str = "ldapdkim",
        queue_interval: str = "10s",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.milter = milter
        self.milter_flags = milter_flags
        self.milter_timeouts = milter_timeouts
        self.milter_name = milter_name
        self.queue_interval = queue_interval
        self.hostname = HOSTNAME

        self.smtp_port = free_port()
        self.submission_port = free_port()
        sink = SmtpSink()
        self.sink = sink

        self.mc_path = self.workdir / "sendmail.mc"
        self.cf_path = self.workdir / "sendmail.cf"
        self.queue_dir = self.workdir / "queue"
        self.pid_path = self.workdir / "sendmail.pid"
        self.log_path = self.workdir / "sendmail.log"
        self.hosts_path = self.workdir / "hosts"
        self.aliases_path = self.workdir / "aliases"
        self.switch_path = self.workdir / "service.switch"

        self._set_up = False
        self._resources = _Resources(sink)
        self._finalizer = weakref.finalize(self, self._resources.release)

    # ---- life cycle -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running daemon's process id, or None."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        """Set up on first use, start the sink and Sendmail, and wait until both ports listen.

        Raises:
            SendmailError: set-up failed, or Sendmail exited, could not bind
                a port, or was not listening within 10 s (the message ends
                with its log).
        """
        if self.running:
            raise SendmailError(f"sendmail in {self.workdir} is already running (pid {self.pid})")
        if not self._set_up:
            self._set_up_directory()
            self._set_up = True
        self.sink.start()
        self.pid_path.unlink(missing_ok=True)
        argv = self.sendmail_argv("-bD", f"-q{self.queue_interval}", debug_log=True)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self._resources.process = process
        try:
            self._wait_until_ready(process)
        except BaseException:
            self._resources.note_namespace()
            self._resources.end_processes(STOP_TIMEOUT)
            raise

    def stop(self) -> None:
        """Stop Sendmail (SIGTERM, SIGKILL after 10 s) and end its leftover children.

        The sink keeps running, so a :meth:`start` later delivers the queue to it.
        """
        self._resources.end_processes(STOP_TIMEOUT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop Sendmail and the sink."""
        self._finalizer()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- mail -------------------------------------------------------------

    def send(
        self,
        message: bytes | str,
        *,
        mail_from: str,
        rcpt_to: str | Sequence[str],
        port: int | None = None,
        source_address: str = "127.0.0.1",
        helo: str = CLIENT_NAME,
    ) -> SmtpReply:
        """Send *message* over SMTP to the MTA port (or *port*, e.g. ``submission_port``).

        Returns the reply that ended the transaction and, when Sendmail
        accepted the message, its queue id (``{i}`` to the milter); a
        refusal is returned, not raised.
        """
        return send_message(
            self.smtp_port if port is None else port,
            message,
            mail_from=mail_from,
            rcpt_to=[rcpt_to] if isinstance(rcpt_to, str) else rcpt_to,
            queue_id=_ACCEPTED,
            source_address=source_address,
            helo=helo,
            timeout=30.0,
        )

    def wait_for_message(
        self,
        *,
        queue_id: str | None = None,
        rcpt_to: str | None = None,
        predicate: Callable[[SinkMessage], bool] | None = None,
        timeout: float = DELIVERY_TIMEOUT,
    ) -> SinkMessage:
        """The first message relayed to the sink that matches every criterion given.

        *queue_id* matches Sendmail's ``Received: ... id <queue id>`` field,
        *rcpt_to* one envelope recipient.

        Raises:
            SendmailError: nothing matched within *timeout* seconds; the
                message lists what did arrive, the queue and Sendmail's log.
        """
        id_pattern = (
            re.compile(rb"\bid " + re.escape(queue_id.encode()) + rb"\b") if queue_id else None
        )

        def matches(message: SinkMessage) -> bool:
            if id_pattern is not None:
                head = message.data.split(b"\r\n\r\n", 1)[0]
                if not id_pattern.search(head):
                    return False
            if rcpt_to is not None and rcpt_to not in message.rcpt_to:
                return False
            return predicate is None or predicate(message)

        found = self.sink.wait_for(matches, timeout)
        if found is not None:
            return found
        wanted = ", ".join(
            part
            for part in (
                f"queue id {queue_id}" if queue_id else "",
                f"recipient {rcpt_to}" if rcpt_to else "",
                "the predicate" if predicate else "",
            )
            if part
        )
        arrived = [f"{m.mail_from} -> {', '.join(m.rcpt_to)}" for m in self.sink.messages]
        raise SendmailError(
            f"no message{' with ' + wanted if wanted else ''} reached the sink "
            f"(port {self.sink.port}) "
            f"within {timeout:g} s; the sink has {len(arrived)} message(s)"
            f"{': ' + '; '.join(arrived) if arrived else ''}\n"
            f"queue:\n{self.queue_listing()}\n"
            f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
        )

    def queue_listing(self) -> str:
        """What ``mailq`` says about this instance's queue (or why it could not say)."""
        if not self._set_up:
            return "(not set up)"
        try:
            result = subprocess.run(
                self.sendmail_argv("-bp"),
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"(sendmail -bp failed: {err})"
        return (result.stdout + result.stderr).strip()

    def log_text(self) -> str:
        """Everything Sendmail logged so far (its syslog lines, timestamped, and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ---- running sendmail ----------------------------------------------------

    def sendmail_argv(self, *args: str, debug_log: bool = False) -> list[str]:
        """The command line that runs this instance's sendmail with *args*.

        It runs in new UTS and mount namespaces (see the module docstring);
        *debug_log* sends Sendmail's log lines to :attr:`log_path`.
        """
        logging_args = ["-D", str(self.log_path), "-d89.10"] if debug_log else []
        return [
            "unshare", "--uts", "--mount", "--propagation", "private", "--",
            "sh", "-c", _NAMESPACE_SCRIPT, "sh", self.hostname, str(self.hosts_path),
            # -D must come before -d; -C before the mode.
            str(SENDMAIL_BINARY), *logging_args, "-C", str(self.cf_path), *args,
        ]  # fmt: skip

    def _wait_until_ready(self, process: subprocess.Popen[bytes]) -> None:
        def ready() -> bool:
            if self._pid_file_is(process.pid) and all(
                tcp_listening(port) for port in (self.smtp_port, self.submission_port)
            ):
                return True
            # Sendmail retries a failed bind for 50 s before it gives up.
            if "cannot bind" in self.log_text():
                raise SendmailError(
                    f"sendmail could not bind port {self.smtp_port} or {self.submission_port} "
                    f"(taken by another process?); last lines of {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            return False

        wait_until_ready(
            "sendmail",
            f"listening on ports {self.smtp_port} and {self.submission_port}",
            ready,
            timeout=READY_TIMEOUT,
            process=process,
            log=self.log_path,
            error=SendmailError,
        )
        self._resources.note_namespace()

    def _pid_file_is(self, pid: int) -> bool:
        # Sendmail writes the pid file after binding its sockets (getrequests()).
        try:
            first_line = self.pid_path.read_text().split("\n", 1)[0]
        except OSError:
            return False
        return first_line.strip() == str(pid)

    # ---- set-up -----------------------------------------------------------------

    def _set_up_directory(self) -> None:
        for path in (self.workdir, SENDMAIL_CACHE):
            # m4 quotes with ` and '; Sendmail splits option values on , and blanks.
            if re.search(r"[\s`',;\"\\$#]", str(path)):
                raise SendmailError(
                    f"path {path} has a character sendmail.cf cannot carry; use a plainer path"
                )
        if self.cf_path.exists():
            raise SendmailError(
                f"{self.cf_path} already exists; give each Sendmail a fresh workdir"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(mode=0o700, exist_ok=True)
        # Files Sendmail reads are root's and not group/world writable, or it ignores them.
        for path, text in (
            (self.hosts_path, self._hosts()),
            (self.aliases_path, "# no aliases: local recipients go to MAIL_HUB (the sink)\n"),
            (self.switch_path, "hosts\tfiles\naliases\tfiles\n"),
        ):
            path.write_text(text)
            path.chmod(0o644)
        self.mc_path.write_text(self._mc())
        try:
            result = subprocess.run(
                ["m4", str(CF_M4), str(self.mc_path)],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SendmailError(f"m4 {CF_M4} {self.mc_path} failed: {err}") from err
        # The open-relay warning is expected (on loopback); anything else is an error.
        stderr = result.stderr.decode(errors="replace").replace(_PROMISCUOUS_WARNING, "")
        if result.returncode != 0 or stderr.strip():
            raise SendmailError(
                f"m4 could not build {self.cf_path} from {self.mc_path} "
                f"(status {result.returncode}): {stderr.strip()}"
            )
        self.cf_path.write_bytes(result.stdout)
        self.cf_path.chmod(0o644)

    def _hosts(self) -> str:
        # Looked up by name, the host name is canonical (Sendmail's $w, which
        # must have a dot); looked up by address, the loopback addresses are
        # "localhost", so clients on 127.0.0.1 look as on a Debian server.
        own = f"{self.hostname} {self.hostname.split('.', 1)[0]}"
        return f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{own}\n::1\t{own}\n"

    def _mc(self) -> str:
        sink = f"TCP $h {self.sink.port}"
        flags = f"F={self.milter_flags}, " if self.milter_flags else ""
        w = self.workdir
        return f"""\
divert(-1)
# Generated by tests/harness/sendmail.py: a throw-away Sendmail on loopback.
divert(0)dnl
OSTYPE(`linux')dnl
dnl --- identity and no DNS
define(`confDOMAIN_NAME', `{self.hostname}')dnl
define(`confDONT_PROBE_INTERFACES', `True')dnl
define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl
define(`confSERVICE_SWITCH_FILE', `{self.switch_path}')dnl
define(`confHOSTS_FILE', `{self.hosts_path}')dnl
define(`confTO_IDENT', `0')dnl
FEATURE(`nocanonify')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`promiscuous_relay')dnl
dnl --- every file in the work directory or the unpacked tree, none in /etc/mail
define(`confDONT_BLAME_SENDMAIL', `TrustStickyBit')dnl
define(`QUEUE_DIR', `{self.queue_dir}')dnl
define(`confPID_FILE', `{self.pid_path}')dnl
define(`STATUS_FILE', `{w}/sendmail.st')dnl
define(`ALIAS_FILE', `stab:{self.aliases_path}')dnl
define(`HELP_FILE', `{HELP_FILE}')dnl
define(`confCR_FILE', `-o {w}/relay-domains')dnl
define(`confDEAD_LETTER_DROP', `{w}/dead.letter')dnl
define(`confAUTH_MECHANISMS', `')dnl
dnl --- a loaded CI machine must not make Sendmail queue or refuse mail
define(`confQUEUE_LA', `1000')dnl
define(`confREFUSE_LA', `1000')dnl
define(`confLOG_LEVEL', `9')dnl
define(`confMILTER_LOG_LEVEL', `9')dnl
dnl --- everything, remote, local and bounces, to the sink
define(`SMTP_MAILER_ARGS', `{sink}')dnl
define(`ESMTP_MAILER_ARGS', `{sink}')dnl
define(`SMTP8_MAILER_ARGS', `{sink}')dnl
define(`DSMTP_MAILER_ARGS', `{sink}')dnl
define(`RELAY_MAILER_ARGS', `{sink}')dnl
define(`SMART_HOST', `esmtp:[127.0.0.1]')dnl
define(`MAIL_HUB', `esmtp:[127.0.0.1]')dnl
dnl --- listeners
FEATURE(`no_default_msa')dnl
DAEMON_OPTIONS(`Port={self.smtp_port}, Addr=127.0.0.1, Name=MTA')dnl
DAEMON_OPTIONS(`Port={self.submission_port}, Addr=127.0.0.1, Name=MSA, M=E')dnl
INPUT_MAIL_FILTER(`{self.milter_name}', `S={self.milter}, {flags}T={self.milter_timeouts}')dnl
MAILER(`smtp')dnl
"""
