"""Run a throw-away Postfix on loopback for end-to-end milter tests.

:class:`Postfix` is a private Postfix instance: its own configuration
directory (``postfix -c DIR``), queue, data directory and log, listeners on
free ports of 127.0.0.1, and every message relayed to :class:`SmtpSink`, a
small SMTP server in the test process.  Nothing is ever delivered anywhere
else.  The system instance is left alone: nothing in ``/etc/postfix`` is
changed, and only the Postfix scripts themselves read two things there (the
``multi_instance_directories`` setting and the ``postfix-files`` list).

What the instance has:

* ``smtp_port``: a plain smtpd;
* ``submission_port``: a second smtpd with ``-o milter_macro_daemon_name=ORIGINATING``
  (and ``syslog_name=postfix/submission``), the usual Postfix practice for
  submission, so a milter sees ``{daemon_name}`` = ``ORIGINATING`` there
  (and ``mta.example.test``, ``myhostname``, on ``smtp_port``);
* ``smtpd_milters`` and ``non_smtpd_milters`` set to *milter* (if given),
  with ``milter_default_action`` and one timeout for milter connect,
  command and content (``milter_command_timeout``);
* relaying for every client: ``mynetworks = 127.0.0.0/8`` and relay
  restrictions that permit everyone (Postfix refuses to start without a
  "working" ``reject_unauth_destination``, so the list is
  ``check_client_access static:OK, reject_unauth_destination``: the lookup
  answers OK for every client and the reject is never reached);
* no local delivery (``mydestination`` is empty, ``local_transport`` is an
  error), no DNS (``smtp_dns_support_level = disabled``,
  ``smtpd_peername_lookup = no``, so clients are logged as
  ``unknown[127.0.0.2]``), no TLS, and all mail to ``relayhost =
  [127.0.0.1]:<sink port>``;
* no header rewriting (``local_header_rewrite_clients`` is empty): Postfix
  adds its Received field and nothing else, so a message arrives as sent;
* short queue timers (``queue_run_delay``, ``minimal_backoff_time`` 1 s,
  ``maximal_backoff_time`` 2 s), so deferred mail is retried at once;
* its log in ``<workdir>/maillog`` through ``maillog_file`` and the postlogd
  service (Postfix 3.4 and later), with ``maillog_file_prefixes`` set to the
  work directory;
* with *sasl_users*, SMTP AUTH (PLAIN, LOGIN) on both ports through
  :class:`SaslServer`, a Dovecot-protocol service in the test process
  (``smtpd_sasl_type = dovecot``), so no Cyrus or Dovecot is needed.

Running it needs root: ``postfix start`` starts the master daemon, which
runs as root and drops to ``mail_owner`` (postfix) in its children.  As root,
``postfix -c DIR``, ``postqueue -c DIR`` and ``sendmail -C DIR`` need no
entry in the system's ``alternate_config_directories`` (Postfix 3.7 only
asks that of other users).  The daemons run as user postfix, and the
master opens ``data_directory/master.lock`` as that user by absolute path:
so the queue and data directories live in their own 0755 directory under
the system temporary directory (``spool_root``), not in *workdir*, which is
usually below pytest's 0700 directories.  ``socket_dir``, inside it, is a
world-writable sticky directory for Unix sockets the daemons must reach (a
milter's ``unix:`` socket, which must itself be writable by user postfix).
Configuration and log stay in *workdir*: only root reads the one, and
postlogd opens the other as root.

Start takes about 0.2 s and stop a few milliseconds.  Every start probes
both ports with one SMTP session (EHLO from 127.0.0.1, HELO name
``probe.example.test``): a milter sees those connections too.

Example::

    with Postfix(tmp_path, milter=f"inet:127.0.0.1:{port}") as postfix:
        reply = postfix.send(message, mail_from="a@example.com", rcpt_to=["b@example.net"])
        assert reply.accepted, reply
        delivered = postfix.wait_for_message("unique subject")
"""

from __future__ import annotations

import base64
import contextlib
import email.parser
import email.policy
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import socketserver
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.common import find_binary, free_port, log_tail, skip_or_fail, wait_until_ready
from harness.smtp import (
    CLIENT_HELO,
    SinkMessage,
    SmtpReply,
    SmtpSink,
    crlf,
    header_values,
    send_message,
)

__all__ = [
    "HOSTNAME",
    "POSTFIX_BINARIES",
    "Postfix",
    "PostfixError",
    "SaslServer",
    "SinkMessage",
    "SmtpReply",
    "SmtpSink",
    "crlf",
    "header_values",
    "require_postfix",
]

POSTFIX_BINARIES = ("postfix", "postconf", "postqueue", "sendmail")
"""Programs the Postfix fixture runs (Debian package postfix)."""

HOSTNAME = "mta.example.test"
"""``myhostname`` of every test instance, as it appears in Received fields."""

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0

_MAX_LINE = 1_000_000
_QUEUE_ID = re.compile(r"queued as ([0-9A-Za-z]+)")
_PROBLEM = re.compile(r"\b(?:warning|error|fatal|panic):")


class PostfixError(RuntimeError):
    """Postfix could not be set up, did not start or stop, or mail did not arrive."""


def require_postfix() -> None:
    """Skip (locally) or fail (in CI) unless Postfix is installed and we are root."""
    missing = [name for name in POSTFIX_BINARIES if find_binary(name) is None]
    if missing:
        skip_or_fail(
            f"missing {', '.join(missing)}; install postfix (Debian: apt-get install postfix)"
        )
    if os.geteuid() != 0:
        skip_or_fail("the Postfix fixture must run as root (Postfix's master daemon does)")
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        skip_or_fail("there is no user 'postfix' (mail_owner) on this machine")


# ---- SMTP replies ---------------------------------------------------------------


# ---- SASL ---------------------------------------------------------------------


@dataclass
class _AuthState:
    users: dict[str, str]
    attempts: list[tuple[str, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _AuthServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, state: _AuthState) -> None:
        self.state = state
        super().__init__(path, _AuthHandler)


class _AuthHandler(socketserver.StreamRequestHandler):
    """Dovecot's authentication protocol (version 1), server side, PLAIN and LOGIN.

    Postfix's smtpd (``smtpd_sasl_type = dovecot``) connects once per
    process and sends one ``AUTH`` line per attempt; ``CONT`` lines carry
    base64 challenges and responses, ``OK``/``FAIL`` end an attempt.
    """

    server: _AuthServer

    def handle(self) -> None:
        try:
            self._session()
        except (OSError, ValueError, KeyError, IndexError) as err:
            with self.server.state.lock:
                self.server.state.errors.append(repr(err))

    def _send(self, *fields: str) -> None:
        self.wfile.write(("\t".join(fields) + "\n").encode())

    def _session(self) -> None:
        self.wfile.write(
            (
                "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
                f"SPID\t{os.getpid()}\nCUID\t1\nCOOKIE\t{os.urandom(16).hex()}\nDONE\n"
            ).encode()
        )
        pending: dict[str, tuple[str, list[bytes]]] = {}
        while line := self.rfile.readline(_MAX_LINE):
            fields = line.rstrip(b"\n").decode("utf-8", "surrogateescape").split("\t")
            if fields[0] == "AUTH":
                request, mechanism = fields[1], fields[2].upper()
                params = dict(item.partition("=")[::2] for item in fields[3:])
                if mechanism not in ("PLAIN", "LOGIN"):
                    self._send("FAIL", request, f"reason=mechanism {mechanism} not offered")
                    continue
                pending[request] = (mechanism, [])
                if "resp" in params:
                    self._step(request, params["resp"], pending)
                else:
                    prompt = b"" if mechanism == "PLAIN" else b"Username:"
                    self._send("CONT", request, base64.b64encode(prompt).decode())
            elif fields[0] == "CONT":
                self._step(fields[1], fields[2] if len(fields) > 2 else "", pending)

    def _step(
        self, request: str, response: str, pending: dict[str, tuple[str, list[bytes]]]
    ) -> None:
        mechanism, answers = pending[request]
        answers.append(base64.b64decode(response))
        if mechanism == "LOGIN" and len(answers) == 1:
            self._send("CONT", request, base64.b64encode(b"Password:").decode())
            return
        del pending[request]
        if mechanism == "PLAIN":
            _authzid, user_bytes, password_bytes = answers[0].split(b"\0", 2)
        else:
            user_bytes, password_bytes = answers
        user, password = user_bytes.decode(), password_bytes.decode()
        state = self.server.state
        good = user in state.users and state.users[user] == password
        with state.lock:
            state.attempts.append((user, good))
        if good:
            self._send("OK", request, f"user={user}")
        else:
            self._send("FAIL", request, f"user={user}", "reason=wrong user name or password")


class SaslServer:
    """A Dovecot-protocol authentication service for Postfix's smtpd on a Unix socket.

    Only PLAIN and LOGIN, against the in-memory *users* (name to password).
    ``attempts`` lists (user name, success) per attempt.
    """

    def __init__(self, path: Path, users: Mapping[str, str]) -> None:
        self.path = path
        self._state = _AuthState(dict(users))
        self._server = _AuthServer(str(path), self._state)
        path.chmod(0o666)  # smtpd connects as user postfix
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="sasl-auth",
            daemon=True,
        )
        self._thread.start()

    @property
    def attempts(self) -> list[tuple[str, bool]]:
        with self._state.lock:
            return list(self._state.attempts)

    @property
    def errors(self) -> list[str]:
        with self._state.lock:
            return list(self._state.errors)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()
        self.path.unlink(missing_ok=True)


# ---- Postfix --------------------------------------------------------------------


def _process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of *pid* from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group *pgid*.

    Zombies do not count: Postfix's children are re-parented when the master
    exits, and where pid 1 does not reap orphans (some containers) they stay
    zombies for good.
    """
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        state = _process_state(int(entry.name))
        if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


@dataclass
class _Resources:
    """What must be released even if a test forgets to stop Postfix."""

    spool_root: Path
    sink: SmtpSink
    master_pid: int | None = None
    sasl: SaslServer | None = None

    def kill_master(self) -> None:
        """SIGKILL everything left in the master's process group."""
        if self.master_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.master_pid, signal.SIGKILL)
            self.master_pid = None

    def release(self) -> None:
        self.kill_master()
        self.sink.close()
        if self.sasl is not None:
            self.sasl.close()
        shutil.rmtree(self.spool_root, ignore_errors=True)


class Postfix:
    """A private Postfix in *workdir*, relaying all mail to its :class:`SmtpSink`.

    Ports are chosen when the object is made and stay the same across
    restarts; so do the queue (mail deferred before a :meth:`stop` is
    delivered after the next :meth:`start`) and the sink's messages.
    ``main_cf`` holds the main.cf settings; change it (or call
    :meth:`set_milter`) and :meth:`reload` or :meth:`start` to apply.
    Used as a context manager it starts on entry; on exit it stops, closes
    the sink and removes ``spool_root`` (the object is then spent; *workdir*
    with configuration and log is left for inspection).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        milter: str | None = None,
        milter_default_action: str = "tempfail",
        extra_main_cf: Mapping[str, str] = {},
        milter_command_timeout: int = 30,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.config_dir = self.workdir / "conf"
        self.log_path = self.workdir / "maillog"

        spool_root = Path(tempfile.mkdtemp(prefix="ldapdkim-postfix-"))
        spool_root.chmod(0o755)  # user postfix must reach queue and data by absolute path
        self.spool_root = spool_root
        self.queue_directory = spool_root / "queue"
        self.data_directory = spool_root / "data"
        self.socket_dir = spool_root / "sockets"
        self.socket_dir.mkdir()
        self.socket_dir.chmod(0o1777)

        sink = SmtpSink()
        self.sink = sink
        self.smtp_port, self.submission_port = self._pick_ports()

        self.main_cf: dict[str, str] = self._default_main_cf(
            milter_default_action, milter_command_timeout
        )
        self.set_milter(milter)
        self.sasl_users = dict(sasl_users) if sasl_users is not None else None
        self.sasl_socket = self.socket_dir / "auth"
        if self.sasl_users is not None:
            self.main_cf.update(
                {
                    "smtpd_sasl_auth_enable": "yes",
                    "smtpd_sasl_type": "dovecot",
                    "smtpd_sasl_path": str(self.sasl_socket),
                    "smtpd_sasl_security_options": "noanonymous",
                }
            )
        self.main_cf.update(extra_main_cf)

        self.last_start_seconds: float | None = None
        self.last_stop_seconds: float | None = None
        self._set_up = False
        self._resources = _Resources(spool_root, sink)
        self._finalizer = weakref.finalize(self, self._resources.release)

    # ---- configuration --------------------------------------------------------

    def set_milter(self, milter: str | None) -> None:
        """Use *milter* (``inet:HOST:PORT``, ``unix:/path``) for SMTP and local mail.

        None removes it.  Takes effect at the next :meth:`start` or :meth:`reload`.
        """
        self.main_cf["smtpd_milters"] = milter or ""
        self.main_cf["non_smtpd_milters"] = milter or ""

    def _pick_ports(self) -> tuple[int, int]:
        taken = {self.sink.port}
        ports: list[int] = []
        while len(ports) < 2:
            port = free_port()
            if port not in taken:
                taken.add(port)
                ports.append(port)
        return ports[0], ports[1]

    def _default_main_cf(self, default_action: str, milter_timeout: int) -> dict[str, str]:
        return {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_directory),
            "data_directory": str(self.data_directory),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.workdir),
            "myhostname": HOSTNAME,
            "mydomain": "example.test",
            "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # Never deliver locally: no local domains, and an error if asked to.
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery is off in this test instance",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "relayhost": f"[127.0.0.1]:{self.sink.port}",
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "smtp_dns_support_level": "disabled",
            "lmtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtpd_client_restrictions": "",
            "smtpd_helo_restrictions": "",
            "smtpd_sender_restrictions": "",
            # smtpd refuses to start unless some list has a reject_unauth_destination
            # it can reach; static:OK permits every client before it does.
            "smtpd_relay_restrictions": "check_client_access static:OK, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_error_sleep_time": "0",
            "local_header_rewrite_clients": "",
            "biff": "no",
            "notify_classes": "",
            "in_flow_delay": "0",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "milter_default_action": default_action,
            "milter_connect_timeout": f"{milter_timeout}s",
            "milter_command_timeout": f"{milter_timeout}s",
            "milter_content_timeout": f"{milter_timeout}s",
        }

    def _master_cf(self) -> str:
        # chroot is "n" throughout: a chroot would need copies of /etc files.
        submission = (
            "  -o syslog_name=postfix/submission\n  -o milter_macro_daemon_name=ORIGINATING\n"
        )
        return (
            "# service type private unpriv chroot wakeup maxproc command\n"
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd\n"
            f"127.0.0.1:{self.submission_port} inet n - n - - smtpd\n{submission}"
            "pickup unix n - n 60 1 pickup\n"
            "cleanup unix n - n - 0 cleanup\n"
            "qmgr unix n - n 300 1 qmgr\n"
            "rewrite unix - - n - - trivial-rewrite\n"
            "bounce unix - - n - 0 bounce\n"
            "defer unix - - n - 0 bounce\n"
            "trace unix - - n - 0 bounce\n"
            "verify unix - - n - 1 verify\n"
            "flush unix n - n 1000? 0 flush\n"
            "proxymap unix - - n - - proxymap\n"
            "proxywrite unix - - n - 1 proxymap\n"
            "smtp unix - - n - - smtp\n"
            "relay unix - - n - - smtp\n"
            "showq unix n - n - - showq\n"
            "error unix - - n - - error\n"
            "retry unix - - n - - error\n"
            "discard unix - - n - - discard\n"
            "anvil unix - - n - 1 anvil\n"
            "scache unix - - n - 1 scache\n"
            "postlog unix-dgram n - n - 1 postlogd\n"
        )

    def _write_config(self) -> None:
        lines = [f"{name} = {value}".rstrip() for name, value in self.main_cf.items()]
        files = {"main.cf": "\n".join(lines) + "\n", "master.cf": self._master_cf()}
        # Postfix loads a file changed within the current second again and
        # again, 300 ms apart, until that second is over (a guard against
        # reading it half-written): backdate ours, or each start costs 2 s.
        past = time.time() - 5
        for name, text in files.items():
            path = self.config_dir / name
            path.write_text(text)
            os.utime(path, (past, past))

    def _set_up_directories(self) -> None:
        if (self.config_dir / "main.cf").exists():
            raise PostfixError(
                f"{self.config_dir} already holds a configuration; "
                "give each Postfix a fresh workdir"
            )
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_directory.mkdir(mode=0o755)
        self.data_directory.mkdir(mode=0o700)
        owner = pwd.getpwnam(self.main_cf.get("mail_owner", "postfix"))
        os.chown(self.data_directory, owner.pw_uid, owner.pw_gid)

    # ---- life cycle -----------------------------------------------------------

    @property
    def master_pid(self) -> int | None:
        """The running master daemon's process id, or None."""
        pid = self._resources.master_pid
        if pid is None:
            return None
        state = _process_state(pid)
        return pid if state is not None and state[0] not in ("Z", "X") else None

    @property
    def running(self) -> bool:
        """True while the master daemon is alive."""
        return self.master_pid is not None

    def start(self) -> None:
        """Write the configuration, ``postfix start``, and wait until both ports answer EHLO.

        Raises:
            PostfixError: ``postfix start`` failed, or a daemon logged a fatal
                error, or the ports did not answer within 20 s; the message
                includes the end of the Postfix log.
        """
        if self.running:
            raise PostfixError(f"Postfix in {self.workdir} is already running")
        began = time.monotonic()
        if not self._set_up:
            self._set_up_directories()
            self._set_up = True
        self.sink.start()
        if self.sasl_users is not None and self._resources.sasl is None:
            self._resources.sasl = SaslServer(self.sasl_socket, self.sasl_users)
        for attempt in range(1, 4):
            log_offset = self._log_size()
            self._write_config()
            # A master.pid left by the last run would name a process long gone.
            (self.queue_directory / "pid" / "master.pid").unlink(missing_ok=True)
            result = self._postfix("start", check=False)
            self._resources.master_pid = pid = self._read_master_pid()
            if result.returncode == 0 and pid is not None:
                break
            self._resources.kill_master()
            # Another program may have taken a port between free_port() and
            # now; before the first start the ports are still ours to change.
            if (
                attempt < 3
                and self.last_start_seconds is None
                and "Address already in use" in self._log_since(log_offset)
            ):
                self.smtp_port, self.submission_port = self._pick_ports()
                continue
            raise PostfixError(
                f"postfix -c {self.config_dir} start failed (exit status {result.returncode}):\n"
                f"{result.stdout.strip()}\n{self._log_report()}"
            )
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop as ``postfix stop`` does, then wait until no process of the instance is left.

        That is SIGTERM to the master, which passes it on to its children;
        ``postfix stop`` itself would then poll in whole seconds.  Whatever
        is still alive after 10 s is killed with SIGKILL.
        """
        pid = self._resources.master_pid
        if pid is None:
            return
        began = time.monotonic()
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        delay = 0.002
        # The master's children hold the listening sockets: wait for all of
        # them, or a restart could not bind the same ports.
        while _group_members(pid):
            if time.monotonic() >= deadline:
                self._resources.kill_master()
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self._resources.master_pid = None
        self.last_stop_seconds = time.monotonic() - began

    def restart(self) -> None:
        """Stop (if running) and start again with the same ports and queue."""
        self.stop()
        self.start()

    def reload(self) -> None:
        """Rewrite the configuration from ``main_cf`` and ``postfix reload``.

        Returns when the master has logged that it re-read its configuration.
        Processes busy with a client finish it with the old settings.
        """
        if not self.running:
            raise PostfixError(f"Postfix in {self.workdir} is not running")
        self._write_config()
        log_offset = self._log_size()
        self._postfix("reload")
        wait_until_ready(
            f"Postfix in {self.workdir}",
            "reloaded (no 'reload -- version' line in its log)",
            lambda: "reload -- version" in self._log_since(log_offset),
            timeout=READY_TIMEOUT,
            log=self.log_path,
            error=PostfixError,
        )

    def close(self) -> None:
        """Stop Postfix, close the sink and remove ``spool_root``."""
        self.stop()
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

    # ---- mail in ----------------------------------------------------------------

    def send(
        self,
        message: bytes,
        *,
        mail_from: str,
        rcpt_to: Sequence[str],
        port: int | None = None,
        source_address: str = "127.0.0.1",
        auth: tuple[str, str] | None = None,
        helo: str = CLIENT_HELO,
        timeout: float = 60.0,
    ) -> SmtpReply:
        """Send *message* to ``smtp_port`` (or *port*); see :func:`smtp.send_message`.

        *auth* (user, password) logs in first (AUTH PLAIN); smtpd offers AUTH
        only when the instance was made with *sasl_users*.
        """
        return send_message(
            port or self.smtp_port,
            message,
            mail_from=mail_from,
            rcpt_to=rcpt_to,
            queue_id=_QUEUE_ID,
            source_address=source_address,
            auth=auth,
            helo=helo,
            timeout=timeout,
        )

    def submit_local(self, message: bytes, *, mail_from: str, rcpt_to: Sequence[str]) -> None:
        """Hand *message* to Postfix's sendmail command (postdrop, pickup, non_smtpd_milters).

        Raises:
            PostfixError: sendmail exited with an error.
        """
        argv = [self._binary("sendmail"), "-C", str(self.config_dir), "-i", "-f", mail_from]
        result = subprocess.run(
            [*argv, "--", *rcpt_to],
            input=message,
            capture_output=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise PostfixError(
                f"sendmail exited with status {result.returncode}: "
                f"{result.stderr.decode(errors='replace').strip()}"
            )

    # ---- mail out ---------------------------------------------------------------

    @property
    def sasl(self) -> SaslServer | None:
        """The authentication service, once started, if *sasl_users* was given."""
        return self._resources.sasl

    @property
    def delivered(self) -> list[bytes]:
        """The messages the sink has received so far, oldest first."""
        return [message.data for message in self.sink.messages]

    def wait_for_message(
        self, match: str | Callable[[bytes], bool], timeout: float = 20.0
    ) -> bytes:
        """The first delivered message that *match* selects, waiting up to *timeout* s.

        *match* is a predicate on the message bytes, or a string: then a
        message matches if one of its header fields has exactly that value
        (say a unique Subject or Message-ID).

        Raises:
            PostfixError: nothing matched in time; the message lists what did
                arrive, the queue, and the end of the Postfix log.
        """
        predicate = _header_value_matcher(match) if isinstance(match, str) else match
        found = self.sink.wait_for(lambda message: predicate(message.data), timeout)
        if found is not None:
            return found.data
        arrived = self.sink.messages
        summary = "\n".join(f"  {_describe(message)}" for message in arrived) or "  (none)"
        raise PostfixError(
            f"no delivered message matched {match!r} within {timeout:g} s; "
            f"the sink has {len(arrived)}:\n{summary}\n"
            f"queue:\n{self._mailq_or_error()}\n{self._log_report()}"
        )

    # ---- queue and log ----------------------------------------------------------

    def flush(self) -> None:
        """Ask the queue manager to retry all deferred mail now (``postqueue -f``)."""
        self._run([self._binary("postqueue"), "-c", str(self.config_dir), "-f"])

    def queue(self) -> list[dict[str, Any]]:
        """The queue as ``postqueue -j`` reports it: one dict per message."""
        output = self._run([self._binary("postqueue"), "-c", str(self.config_dir), "-j"])
        return [json.loads(line) for line in output.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        """Queue ids of every message still in the queue (any of its queues)."""
        return [str(entry["queue_id"]) for entry in self.queue()]

    def mailq(self) -> str:
        """``postqueue -p`` output, as ``mailq`` prints it."""
        return self._run([self._binary("postqueue"), "-c", str(self.config_dir), "-p"])

    def log_text(self) -> str:
        """The whole Postfix log of this instance so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_problems(self) -> list[str]:
        """Log lines at warning level or worse (warning, error, fatal, panic)."""
        return [line for line in self.log_text().splitlines() if _PROBLEM.search(line)]

    # ---- internals --------------------------------------------------------------

    def _binary(self, name: str) -> str:
        path = find_binary(name)
        if path is None:
            raise PostfixError(f"{name} not found on PATH or in the sbin directories")
        return path

    def _run(self, argv: Sequence[str]) -> str:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
        if result.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} exited with status {result.returncode}: "
                f"{(result.stdout + result.stderr).strip()}"
            )
        return result.stdout

    def _postfix(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self._binary("postfix"), "-c", str(self.config_dir), command]
        # Output to a file, not a pipe: the daemons that "start" and "reload"
        # leave behind inherit it, and reading a pipe to its end would wait
        # for them (some 2 s at start).
        with tempfile.TemporaryFile() as output:
            status = subprocess.run(
                argv, stdout=output, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT, check=False
            ).returncode
            output.seek(0)
            text = output.read().decode(errors="replace")
        result = subprocess.CompletedProcess(argv, status, text, "")
        if check and result.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv)} exited with status {result.returncode}: "
                f"{(result.stdout + result.stderr).strip()}\n{self._log_report()}"
            )
        return result

    def _read_master_pid(self) -> int | None:
        """The pid in master.pid, if that process is a running Postfix master."""
        try:
            pid = int((self.queue_directory / "pid" / "master.pid").read_text().strip())
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except (OSError, ValueError):
            return None
        return pid if os.path.basename(argv0) == b"master" else None

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_report(self) -> str:
        return f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"

    def _mailq_or_error(self) -> str:
        try:
            return self.mailq().rstrip()
        except (PostfixError, OSError, subprocess.SubprocessError) as err:
            return f"(postqueue failed: {err})"

    def _wait_ready(self, log_offset: int) -> None:
        pending = [self.smtp_port, self.submission_port]

        def ready() -> bool:
            fatal = [
                line
                for line in self._log_since(log_offset).splitlines()
                if re.search(r"\b(?:fatal|panic):", line)
            ]
            if fatal:
                raise PostfixError(
                    f"Postfix in {self.workdir} logged a fatal error while starting:\n"
                    + "\n".join(fatal)
                    + f"\n{self._log_report()}"
                )
            if not self.running:
                raise PostfixError(f"the Postfix master daemon exited\n{self._log_report()}")
            while pending and _answers_ehlo(pending[0], timeout=2.0):
                pending.pop(0)
            return not pending

        wait_until_ready(
            f"Postfix in {self.workdir}",
            f"answering EHLO on 127.0.0.1:{self.smtp_port} and 127.0.0.1:{self.submission_port}",
            ready,
            timeout=READY_TIMEOUT,
            log=self.log_path,
            error=PostfixError,
            interval=0.005,
            max_interval=0.1,
        )


def _answers_ehlo(port: int, timeout: float) -> bool:
    """True if an SMTP server on 127.0.0.1:*port* replies to its banner and EHLO.

    Any reply counts (a milter may make smtpd refuse mail): the point is that
    smtpd runs.
    """
    try:
        with smtplib.SMTP(timeout=timeout, local_hostname="probe.example.test") as client:
            client.connect("127.0.0.1", port)
            code, _ = client.ehlo()
            return code > 0
    except smtplib.SMTPResponseException:
        return True
    except (smtplib.SMTPException, OSError):
        return False


def _header_value_matcher(value: str) -> Callable[[bytes], bool]:
    def matches(message: bytes) -> bool:
        parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(message)
        return any(
            re.sub(r"\r?\n[ \t]", " ", str(field_value)).strip() == value
            for field_value in parsed.values()
        )

    return matches


def _describe(message: SinkMessage) -> str:
    subject = message.header_values("Subject")
    message_id = message.header_values("Message-ID")
    return (
        f"from <{message.mail_from}> to {', '.join(f'<{r}>' for r in message.rcpt_to)}, "
        f"Subject {subject[0] if subject else '(none)'!r}, "
        f"Message-ID {message_id[0] if message_id else '(none)'!r}, {len(message.data)} bytes"
    )
