"""What every throw-away LDAP server of the integration tests has in common.

:class:`LdapServer` is the part of :class:`harness.slapd.Slapd` (OpenLDAP)
and :class:`harness.ds389.Ds389` (389 Directory Server) that does not depend
on which server runs: the process's life cycle once started (stop, kill,
pause, restart) and the clients tests use (python-ldap connections and the
OpenLDAP command-line tools, bound as the accounts every server has: its root
DN, an admin that provisions ``ou=domains``, the milter's service DN and
some other authenticated reader).  The helpers around it (free ports, log
tails, skip-or-fail) are shared as well.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import ldap
import ldap.ldapobject

from harness.common import SBIN_DIRS, find_binary, log_tail, stop_process, wait_until_ready

STOP_TIMEOUT = 10.0
_container_numbers = itertools.count(1)


class ServerError(RuntimeError):
    """A test LDAP server could not be set up, did not start, or did not answer in time."""


class LdapToolError(RuntimeError):
    """An OpenLDAP command-line tool (ldapadd, ldapmodify, ...) failed.

    ``returncode`` is the tool's exit status, which for the client tools is
    the LDAP result code (21 invalidAttributeSyntax, 65 objectClassViolation,
    ...); ``stderr`` is its error output.
    """

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{argv[0]} exited with status {returncode}: {stderr.strip()}")


def wait_for_bind(
    uri: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    timeout: float,
    *,
    name: str,
    error: type[ServerError] = ServerError,
) -> None:
    """Poll *uri* until an anonymous bind succeeds.

    Raises:
        ServerError (or *error*): *process* exited first, or *timeout* seconds passed; the
            message ends with the tail of *log_path* (the server's log).
    """

    def binds() -> bool:
        conn = ldap.initialize(uri)
        try:
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
            conn.set_option(ldap.OPT_TIMEOUT, 1.0)
            conn.simple_bind_s("", "")
        except (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR):
            return False
        finally:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()
        return True

    wait_until_ready(
        name,
        f"answering an anonymous bind on {uri}",
        binds,
        timeout=timeout,
        process=process,
        log=log_path,
        error=error,
    )


@dataclass
class Resources:
    """What must be released even if a test forgets to stop its server: the process,
    and a directory of its sockets kept outside the work directory."""

    socket_dir: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    def release(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)


class LdapServer:
    """The life cycle and the clients of a started test LDAP server.

    A subclass starts the process (``start``) and sets, in its constructor,
    ``workdir``, ``log_path``, ``ldap_uri``, ``ldapi_uri``, the DNs and
    passwords (``root_dn``, ``admin_dn``, ``milter_dn``, ``reader_dn``, their
    ``*_pw`` and ``_passwords``), ``_resources`` (whose ``process`` is the
    running server) and ``_paused``.  Used as a context manager it starts on
    entry and stops on exit.
    """

    name: ClassVar[str] = "LDAP server"
    """What the server is called in error messages ("slapd", "389-DS")."""

    workdir: Path
    log_path: Path
    ldap_uri: str
    ldapi_uri: str
    suffix: str
    domains_base: str
    services_base: str
    root_dn: str
    root_pw: str
    admin_dn: str
    admin_pw: str
    milter_dn: str
    milter_pw: str
    reader_dn: str
    reader_pw: str
    _passwords: dict[str, str]
    _resources: Resources
    _paused: bool
    _finalizer: Callable[[], object]

    def start(self) -> None:
        raise NotImplementedError

    def _set_up_accounts(self, suffix: str, root_dn: str) -> None:
        """The layout every OpenLDAP-style test server has below ``suffix``: ``ou=domains``,
        ``ou=services``, the admin, the milter and another reader, with random passwords."""
        self.suffix = suffix
        self.domains_base = f"ou=domains,{suffix}"
        self.services_base = f"ou=services,{suffix}"
        self.root_dn = root_dn
        self.root_pw = secrets.token_urlsafe(16)
        self.admin_dn = f"cn=admin,{suffix}"
        self.admin_pw = secrets.token_urlsafe(16)
        self.milter_dn = f"cn=ldapdkim,{self.services_base}"
        self.milter_pw = secrets.token_urlsafe(16)
        self.reader_dn = f"cn=reader,{self.services_base}"
        self.reader_pw = secrets.token_urlsafe(16)

    def _remember_passwords(self) -> None:
        """Let clients bind as the root, the admin, the milter and the reader without a password."""
        self._passwords = {
            self.root_dn: self.root_pw,
            self.admin_dn: self.admin_pw,
            self.milter_dn: self.milter_pw,
            self.reader_dn: self.reader_pw,
        }

    @property
    def pid(self) -> int | None:
        """The running server's process id, or None."""
        process = self._resources.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """True while the server process exists (also while paused)."""
        return self.pid is not None

    def stop(self) -> None:
        """Stop the server with SIGTERM and wait for it (SIGKILL after 10 s)."""
        process = self._resources.process
        if process is None:
            return
        if self._paused and process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        stop_process(process, STOP_TIMEOUT)
        self._resources.process = None
        self._paused = False

    def _await(self, process: subprocess.Popen[bytes], ready: Callable[[], None]) -> None:
        """Take ``process`` as the running server and wait with ``ready()`` until it serves;
        if that fails, kill it and let the failure through."""
        self._resources.process = process
        self._paused = False
        try:
            ready()
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        """Kill the server with SIGKILL (no clean shutdown) and reap it."""
        process = self._resources.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait()
        self._resources.process = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connections stay open but get no answers."""
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused server continue (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> None:
        """Stop (if running) and start again with the same ports and data."""
        self.stop()
        self.start()

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
        self.stop()
        self._finalizer()

    def milter_lines(self, base: str) -> list[str]:
        """Configuration lines for ldapdkim to use *base* on this server as the milter."""
        return [
            f"Directory {self.ldap_uri}/{base}",
            f"LDAPBindUser {self.milter_dn}",
            f"LDAPBindPassword {self.milter_pw}",
        ]

    def new_container(self) -> str:
        """Add a new, empty ``ou=t<N>`` under ``ou=domains`` as the admin; return its DN.

        Each test takes its own, so tests never see each other's entries; the
        containers stay until the server is thrown away.
        """
        name = f"t{next(_container_numbers)}"
        dn = f"ou={name},{self.domains_base}"
        conn = self.connect(self.admin_dn)
        try:
            conn.add_s(
                dn, [("objectClass", [b"top", b"organizationalUnit"]), ("ou", [name.encode()])]
            )
        finally:
            conn.unbind_s()
        return dn

    def has_entry(self, dn: str) -> bool:
        """True if *dn* exists here (looked up as the rootdn, so ACLs do not hide it)."""
        conn = ldap.initialize(self.ldap_uri)
        try:
            conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
            conn.set_option(ldap.OPT_TIMEOUT, 2.0)
            conn.simple_bind_s(self.root_dn, self.root_pw)
            conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"])
        except (ldap.NO_SUCH_OBJECT, ldap.SERVER_DOWN, ldap.TIMEOUT):
            return False
        finally:
            with contextlib.suppress(ldap.LDAPError):
                conn.unbind_s()
        return True

    def wait_for_entry(self, dn: str, timeout: float = 5.0) -> float:
        """Poll until *dn* exists here; return the seconds waited.

        Raises:
            ServerError: it did not appear within *timeout* seconds (with the log).
        """
        started = time.monotonic()
        delay = 0.005
        while not self.has_entry(dn):
            if time.monotonic() - started >= timeout:
                source = self._where_entries_come_from()
                raise ServerError(
                    f"{dn} did not appear on {self.ldap_uri}{source} within {timeout:g} s; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return time.monotonic() - started

    def connect(
        self, bind_dn: str | None = None, password: str | None = None
    ) -> ldap.ldapobject.LDAPObject:
        """Open a python-ldap connection over ``ldap_uri`` with a simple bind.

        *bind_dn* None or "" binds anonymously; *password* None uses the
        password of a DN this class created (root, admin, milter, reader).
        """
        conn = ldap.initialize(self.ldap_uri)
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, ldap.VERSION3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
        conn.set_option(ldap.OPT_TIMEOUT, 10.0)
        self._set_client_options(conn)
        if bind_dn:
            conn.simple_bind_s(bind_dn, self._password(bind_dn, password))
        else:
            conn.simple_bind_s("", "")
        return conn

    def _set_client_options(self, conn: ldap.ldapobject.LDAPObject) -> None:
        """Options a server needs on every client connection (its CA, say); none here."""

    def ldapadd(
        self,
        ldif: str | bytes,
        *,
        bind_dn: str | None = None,
        password: str | None = None,
        external: bool = False,
    ) -> str:
        """Run the ``ldapadd`` tool on *ldif*; return its standard output.

        Binds as *bind_dn* (default: the admin) with a simple bind over
        ``ldap_uri``, or with *external* as this process's uid through SASL
        EXTERNAL over ``ldapi_uri`` (uid 0: the rootdn, which manages cn=config).

        Raises:
            LdapToolError: the tool failed; carries its exit status and stderr.
        """
        return self._run_tool("ldapadd", ldif, bind_dn, password, external)

    def ldapmodify(
        self,
        ldif: str | bytes,
        *,
        bind_dn: str | None = None,
        password: str | None = None,
        external: bool = False,
    ) -> str:
        """Run the ``ldapmodify`` tool on *ldif*; see :meth:`ldapadd`."""
        return self._run_tool("ldapmodify", ldif, bind_dn, password, external)

    def tool_env(self) -> dict[str, str]:
        """Environment for OpenLDAP client tools, unaffected by local settings.

        LDAPNOINIT makes libldap ignore ldap.conf, ~/.ldaprc and the LDAP*
        variables (LDAPTLS_CACERT too: pass -o or use python-ldap for TLS).
        """
        return {**os.environ, "LDAPNOINIT": "1"}

    def _password(self, bind_dn: str, password: str | None) -> str:
        if password is not None:
            return password
        try:
            return self._passwords[bind_dn]
        except KeyError:
            raise ValueError(
                f"no password given for {bind_dn!r}, and it is not a DN this "
                "server created; pass password="
            ) from None

    def _run_tool(
        self,
        tool: str,
        ldif: str | bytes,
        bind_dn: str | None,
        password: str | None,
        external: bool,
    ) -> str:
        argv = [self._binary(tool)]
        secret = None
        if external:
            argv += ["-Q", "-Y", "EXTERNAL", "-H", self.ldapi_uri]
        else:
            dn = bind_dn or self.admin_dn
            secret = self._password(dn, password)
            argv += ["-x", "-H", self.ldap_uri, "-D", dn, "-w", secret]
        data = ldif.encode() if isinstance(ldif, str) else ldif
        result = subprocess.run(
            argv, input=data, capture_output=True, env=self.tool_env(), check=False
        )
        if result.returncode != 0:
            shown = ["***" if arg == secret else arg for arg in argv]
            raise LdapToolError(shown, result.returncode, result.stderr.decode(errors="replace"))
        return result.stdout.decode(errors="replace")

    def _where_entries_come_from(self) -> str:
        """A phrase for error messages when the entries are not written here ("" if they are)."""
        return ""

    def _signal(self, signum: signal.Signals) -> None:
        process = self._resources.process
        if process is None or process.poll() is not None:
            raise ServerError(f"{self.name} in {self.workdir} is not running")
        process.send_signal(signum)

    def _binary(self, name: str) -> str:
        path = find_binary(name)
        if path is None:
            raise ServerError(
                f"{name} not found on PATH or in {', '.join(SBIN_DIRS)}; "
                "install slapd, ldap-utils and openssl"
            )
        return path
