"""The milter process: configuration, logging, socket, privileges, signals.

Sequence at start: read and validate the configuration (secrets included,
while still root), set up logging, bind the milter socket and the
``MetricsSocket``, write the PidFile, drop to ``UserID``, serve, and once
the directory view is loaded (or :data:`READY_WAIT` has passed) tell
systemd ``READY=1`` (``Type=notify``; ``STOPPING=1`` at shutdown,
``RELOADING=1`` during a reload).

SIGUSR1 logs one line of counters (messages signed, LDAP searches, cache
hits), so a benchmark or an administrator can see that warm signing makes no
directory round trips; ``MetricsSocket`` serves the same and more to
Prometheus (:mod:`ldapdkim.milter.monitor`).

libmilter takes SIGHUP, SIGTERM and SIGINT for itself (it stops on each), so
its main loop runs in a thread of its own and the process's main thread
handles the signals: a process-directed signal goes to the main thread when
that thread does not block it.  SIGHUP re-reads the configuration and
replaces the runtime as a whole; sessions in flight keep the runtime they
started with.  A new configuration that does not load is refused with the
error logged, and the old one stays.  SIGTERM and SIGINT stop the milter.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import logging.handlers
import os
import pwd
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import Milter
import milter as libmilter

from ldapdkim import __version__, config, metrics, orgdomain
from ldapdkim.directory.cache import CachedResolver
from ldapdkim.directory.ldapbackend import LdapBackend
from ldapdkim.directory.owners import LoginQuery, SenderDirectory
from ldapdkim.directory.resolution import open_directory
from ldapdkim.errors import ConfigError, DirectoryError, LdapDkimError
from ldapdkim.log import RedactingFilter
from ldapdkim.milter.monitor import Figures, Monitor, judge
from ldapdkim.milter.session import Counters, DkimMilter, Runtime
from ldapdkim.milter.workers import Supervisor, WorkerHooks, signals_handled
from ldapdkim.model import Alignment
from ldapdkim.signing.dnslookup import TxtLookup
from ldapdkim.signing.keyring import Keyring

log = logging.getLogger(__name__)

NAME = "ldapdkim"
SHUTDOWN_GRACE = 30.0
"""Seconds that sessions in flight get to finish after SIGTERM."""
READY_WAIT = 45.0
"""Seconds the start waits for the directory view before saying READY=1 anyway
(systemd's start timeout is 90 s): mail then gets On-DirectoryError meanwhile,
which beats an MTA with no milter at all."""


def notify(*states: str) -> None:
    """Tell the service manager (``sd_notify``) ``states``, when it listens (``NOTIFY_SOCKET``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as err:
        log.warning("cannot tell the service manager %s: %s", states[0], err)


def build_runtime(settings: config.Settings, previous: Runtime | None = None) -> Runtime:
    """A runtime for ``settings``; after a reload, the last known answers carry over."""
    before = previous.resolver.directory if previous is not None else None
    resolver = CachedResolver.configured(
        open_directory(settings, live=True, previous=before), settings
    )
    if previous is not None:
        resolver.adopt_last_known_good(previous.resolver)
    return Runtime(
        settings=settings,
        resolver=resolver,
        lookup=TxtLookup(settings.nameservers, timeout=settings.dns_timeout),
        authserv_id=Runtime.default_authserv_id(settings),
        counters=previous.counters if previous is not None else Counters(),
        senders=_sender_directory(settings),
        organizational=_organizational(settings),
        keyring=Keyring.configured(settings),
    )


def _sender_directory(settings: config.Settings) -> SenderDirectory | None:
    """Sender authorization's lookups; None without an LDAP directory to ask."""
    ldap_settings = settings.ldap
    if ldap_settings is None:
        return None
    query = None
    if settings.sender_login_base and settings.sender_login_filter:
        query = LoginQuery(
            settings.sender_login_base,
            settings.sender_login_filter,
            settings.sender_login_attributes,
        )
    return SenderDirectory(
        LdapBackend(ldap_settings),
        query,
        ttl=settings.ldap_cache_ttl,
        negative_ttl=settings.ldap_negative_cache_ttl,
        max_stale=settings.directory_max_stale,
    )


def _organizational(settings: config.Settings) -> Callable[[str], str]:
    """Organizational domains by the PublicSuffixList, read now when SenderAlignment needs it
    (a missing list is then a configuration error), else at first use."""
    path = settings.public_suffix_list

    def organizational(name: str) -> str:
        try:
            return orgdomain.load(path).organizational_domain(name)
        except OSError as err:
            raise DirectoryError(orgdomain.unreadable(path, err)) from None

    if settings.sender_alignment is Alignment.ORGANIZATIONAL:
        orgdomain.required(path, settings.source)
    return organizational


@dataclass
class Holder:
    """The current runtime; swapped whole on reload, read by each new session."""

    runtime: Runtime
    lock: threading.Lock = field(default_factory=threading.Lock)

    def current(self) -> Runtime:
        return self.runtime

    def replace(self, runtime: Runtime) -> None:
        with self.lock:
            self.runtime = runtime


def setup_logging(settings: config.Settings) -> None:
    """Syslog (``Syslog yes``, facility ``SyslogFacility``) or standard error."""
    root = logging.getLogger("ldapdkim")
    root.handlers.clear()
    root.propagate = False
    root.setLevel(logging.INFO)
    secrets = [settings.ldap_bind_password.reveal()] if settings.ldap_bind_password else []
    handler: logging.Handler
    if settings.syslog and Path("/dev/log").exists():
        facility = logging.handlers.SysLogHandler.facility_names[settings.syslog_facility]
        handler = logging.handlers.SysLogHandler(address="/dev/log", facility=facility)
        handler.setFormatter(logging.Formatter(f"{NAME}[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {NAME}[%(process)d]: %(levelname)s: %(message)s")
        )
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    if settings.syslog and not Path("/dev/log").exists():
        log.warning("Syslog yes, but there is no /dev/log; logging to standard error")


def _register(current: Callable[[], Runtime]) -> None:
    """Wire libmilter's callbacks to :class:`DkimMilter` (as pymilter's runmilter does);
    each session takes the runtime ``current()`` gives when it starts."""
    Milter.factory = lambda: DkimMilter(current)
    libmilter.set_flags(libmilter.ADDHDRS | libmilter.CHGHDRS | libmilter.QUARANTINE)
    libmilter.set_exception_policy(libmilter.TEMPFAIL)
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.register(
        NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _disable_nagle_on_listeners() -> int:
    """Set TCP_NODELAY on libmilter's listening TCP sockets; accepted ones inherit it.

    libmilter answers end of message in two small writes (the inserted header,
    then the verdict); with Nagle's algorithm the second waits for the MTA's
    delayed ACK, about 40 ms per message over ``inet:``.  libmilter offers no
    option for it, so the socket is found among our open descriptors.
    """
    changed = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            fd = int(entry.name)
            sock = socket.socket(fileno=os.dup(fd))
        except (ValueError, OSError):
            continue
        with sock:
            if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    changed += 1
    return changed


def open_socket(settings: config.Settings) -> None:
    """Bind and listen on ``Socket`` (libmilter's socket, inherited by worker processes)."""
    if settings.umask is not None:
        os.umask(settings.umask)
    libmilter.setconn(settings.socket)
    try:
        libmilter.opensocket(True)
    except libmilter.error as err:
        raise LdapDkimError(
            f"cannot open Socket {settings.socket}: {err}; is another milter using it?"
        ) from None
    if not settings.socket_is_local:
        _disable_nagle_on_listeners()


def _multiprocess_metrics(settings: config.Settings) -> Path | None:
    """With MetricsSocket and several workers: the directory they count in (emptied),
    in StateDirectory, with counting switched to files (:func:`metrics.use_multiprocess`)."""
    if settings.metrics_socket is None:
        return None
    directory = settings.state_directory / "metrics"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for stale in directory.iterdir():
            stale.unlink()
    except OSError as err:
        raise LdapDkimError(
            f"MetricsSocket with Workers {settings.workers} counts in {directory}: "
            f"{err.strerror}; create StateDirectory {settings.state_directory}, writable here"
        ) from None
    metrics.use_multiprocess(directory)
    return directory


def _socket_path(spec: str) -> Path | None:
    kind, _, rest = spec.partition(":")
    return Path(rest) if kind in ("local", "unix") else None


def _drop_privileges(settings: config.Settings) -> None:
    if not settings.user_id:
        return
    user, _, group = settings.user_id.partition(":")
    try:
        entry = pwd.getpwnam(user)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        raise ConfigError(
            f"{settings.source}: UserID {settings.user_id}: no such user or group; "
            "create it or fix UserID"
        ) from None
    path = _socket_path(settings.socket)
    if path is not None and path.exists():
        os.chown(path, entry.pw_uid, gid)
    # The replica thread writes StateDirectory as UserID from now on.
    state = settings.state_directory
    if state.is_dir():
        for item in [state, *state.iterdir()]:
            with contextlib.suppress(FileNotFoundError):  # a temp file just renamed
                os.chown(item, entry.pw_uid, gid, follow_symlinks=False)
    os.setgroups([])
    os.initgroups(user, gid)
    os.setgid(gid)
    os.setuid(entry.pw_uid)
    log.info("running as %s (uid %d, gid %d)", user, entry.pw_uid, gid)


class Daemon:
    """One milter process."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        self.settings = config.load(config_path)
        self.holder: Holder | None = None
        self._signals: list[int] = []
        """Signals caught and not yet acted on (see :meth:`_on_signal`)."""
        self._stop = threading.Event()
        """Set by the libmilter thread when libmilter ends; signals go to ``_signals``."""
        self._server: threading.Thread | None = None
        self.monitor: Monitor | None = None
        self._announce: Callable[[str], None] = lambda status: None
        self._tell_stats: Callable[[str], None] = lambda line: None
        self._hooks: WorkerHooks | None = None

    def run(self) -> int:
        """Serve mail: in this process, or (``Workers`` above 1) in worker processes."""
        settings = self.settings
        setup_logging(settings)
        if settings.workers > 1:
            metrics_dir = _multiprocess_metrics(settings)
            _register(self.current)
            open_socket(settings)

            def serve(hooks: WorkerHooks) -> int:
                return self.serve(worker=True, hooks=hooks)

            return Supervisor(settings, serve, notify, metrics_dir=metrics_dir).run()
        self.holder = Holder(build_runtime(settings))
        _register(self.holder.current)
        open_socket(settings)
        return self.serve(worker=False)

    def current(self) -> Runtime:
        """The runtime of this process (a worker's, once it has built it)."""
        assert self.holder is not None, "a session before the runtime was built"
        return self.holder.current()

    def serve(self, *, worker: bool, hooks: WorkerHooks | None = None) -> int:
        """Run libmilter on the open socket until stopped; a ``worker`` builds its runtime
        first (after the fork, so that no thread crosses it), leaves the PidFile and
        MetricsSocket to the supervisor, and tells it what happens through ``hooks``."""
        settings = self.settings
        if worker:
            self.holder = Holder(build_runtime(settings))
        assert self.holder is not None
        self._hooks = hooks
        if hooks is not None:
            self._announce = hooks.ready
            self._tell_stats = hooks.stats
        else:
            self._announce = lambda status: notify("READY=1", f"STATUS={status}")
        if settings.metrics_socket is not None and not worker:
            host, port = settings.metrics_socket
            try:
                self.monitor = Monitor(host, port, self.figures)
            except OSError as err:
                raise LdapDkimError(
                    f"cannot open MetricsSocket {host}:{port}: {err.strerror}; "
                    "is another process using it?"
                ) from None
        if settings.pid_file is not None and not worker:
            settings.pid_file.write_text(f"{os.getpid()}\n")
        _drop_privileges(settings)
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGUSR1, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signals_handled()  # a worker: what the supervisor passed on meanwhile arrives now
        server = threading.Thread(target=self._serve, name="libmilter", daemon=True)
        server.start()
        self._server = server
        if self.monitor is not None:
            self.monitor.start()
        log.info("ldapdkim %s listening on %s", __version__, settings.socket)
        ready_by = time.monotonic() + READY_WAIT
        ready = False
        if not worker:
            notify("STATUS=waiting for the directory view")
        figures_due = 0.0
        try:
            while server.is_alive():
                if not ready:
                    ready = self._ready(ready_by)
                if self._hooks is not None and time.monotonic() >= figures_due:
                    figures_due = time.monotonic() + 1.0
                    self._hooks.figures(self.figures())
                stopped = self._stop.wait(0.2 if ready else 0.05)
                caught, self._signals = self._signals, []
                if stopped or any(n not in (signal.SIGHUP, signal.SIGUSR1) for n in caught):
                    self._shut_down()
                    break
                if signal.SIGHUP in caught:
                    self.reload()
                if signal.SIGUSR1 in caught:
                    line = self.stats()
                    log.info("stats: %s", line)
                    self._tell_stats(line)
        finally:
            if self.monitor is not None:
                self.monitor.close()
            self.holder.current().close()
            if settings.pid_file is not None and not worker:
                # After UserID the directory may no longer be ours to write.
                with contextlib.suppress(OSError):
                    settings.pid_file.unlink(missing_ok=True)
        return 0

    def _shut_down(self) -> None:
        """Stop taking connections; let the sessions in flight finish (30 s at most)."""
        assert self.holder is not None
        counters = self.holder.current().counters
        notify("STOPPING=1")
        log.info("stopping; %d sessions in flight", counters.sessions)
        # smfi_stop waits for libmilter's listener poll (up to 5 s): run it
        # aside, and leave as soon as no session is left.
        threading.Thread(target=libmilter.stop, name="smfi_stop", daemon=True).start()
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while counters.sessions > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        log.info("stopped")

    def _serve(self) -> None:
        try:
            libmilter.main()
        except libmilter.error as err:
            log.error("libmilter stopped: %s", err)
            self._stop.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Note the signal; the main loop acts on it within 0.2 s.

        No lock may be taken here: the handler runs in the main thread,
        possibly inside ``Event.wait`` holding that event's lock, and
        ``Event.set`` would then wait for itself forever (a worker hung on
        SIGTERM so).
        """
        self._signals.append(signum)

    def _ready(self, deadline: float) -> bool:
        """Say READY=1 once the directory view is loaded, or at ``deadline`` without it."""
        health = self.figures().health
        if not health.ok:
            if time.monotonic() < deadline:
                return False
            log.warning("starting without a usable directory view: %s", health.why)
        self._announce(health.why)
        return True

    def figures(self) -> Figures:
        """What the monitor shows now: open sessions, the directory view, health."""
        assert self.holder is not None
        runtime = self.holder.current()
        view = runtime.resolver.directory.view()
        server = self._server
        accepting = server is not None and server.is_alive() and not self._stop.is_set()
        return Figures(
            sessions=runtime.counters.sessions,
            view=view,
            health=judge(accepting, view, runtime.settings.directory_max_stale),
        )

    def stats(self) -> str:
        """One line of counters: ``key=value`` pairs, for logs and benchmarks."""
        assert self.holder is not None
        runtime = self.holder.current()
        counters, cache = runtime.counters, runtime.resolver.stats
        directory = runtime.resolver.directory
        line = (
            f"sessions={counters.sessions} signed={counters.signed} "
            f"verified={counters.verified} not_signed={counters.not_signed} "
            f"errors={counters.errors} ldap_searches={directory.searches} "
            f"sender_searches={runtime.senders.searches if runtime.senders else 0} "
            f"cache_hits={cache.hits} cache_misses={cache.misses} stale_served={cache.stale_served}"
        )
        replica = directory.replica_state()
        return f"{line} {replica}" if replica else line

    def reload(self) -> bool:
        """Re-read the configuration; keep the old one if the new one does not load."""
        assert self.holder is not None
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", "STATUS=reloading the configuration")
        try:
            settings = config.load(self.config_path)
            runtime = build_runtime(settings, previous=self.holder.current())
        except LdapDkimError as err:
            log.error("configuration not reloaded, keeping the old one: %s", err)
            notify("READY=1", f"STATUS=configuration not reloaded: {err}")
            return False
        if (settings.socket, settings.user_id, settings.metrics_socket) != (
            self.settings.socket,
            self.settings.user_id,
            self.settings.metrics_socket,
        ):
            log.warning("Socket, UserID and MetricsSocket changes take effect at the next restart")
        self.settings = settings
        setup_logging(settings)
        previous = self.holder.current()
        self.holder.replace(runtime)
        kept = runtime.resolver.directory.shares_backend_with(previous.resolver.directory)
        if not kept:
            # Sessions in flight may still ask the old replica: it keeps
            # answering from memory once closed.
            previous.resolver.directory.close()
        if previous.senders is not None:
            previous.senders.backend.close()
        log.info(
            "configuration reloaded from %s; caches flushed%s",
            self.config_path,
            "; directory replica kept (its settings did not change)" if kept else "",
        )
        notify("READY=1", "STATUS=configuration reloaded")
        return True
