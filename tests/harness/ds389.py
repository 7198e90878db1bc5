"""Run a throw-away 389 Directory Server instance for the integration tests.

This module's one job is :class:`Ds389`: a private ``ns-slapd`` in a
temporary directory, set up the way docs/howto/389ds.md tells a 389-DS administrator
to set it up for ldapdkim, with the same accounts and layout as
:class:`harness.slapd.Slapd`, so that a test written against one runs
against the other.

How the instance is made, without systemd: ``dscreate from-file`` reads its
compiled-in paths from ``defaults.inf``, and a ``PREFIX`` in the environment
makes it read ``$PREFIX/share/dirsrv/inf/defaults.inf`` instead.  The harness
writes one there that keeps the installed programs, plugins and system
schema but puts the instance's configuration, database, logs, lock and run
directories under *workdir* and says ``with_systemd = 0``; ``dscreate`` then
creates the instance without asking systemd for anything (about 5 s), and
the harness runs ``ns-slapd -d 0`` in the foreground itself.  The server
runs as root, so it can read pytest's 0700 temporary directories.

What the server has, once :meth:`Ds389.start` returns:

* the suffix ``dc=example,dc=test`` in the ``userRoot`` backend, with
  equality indexes on dkimSignDomainName and dkimSignSelector;
* the project's ``schema/389ds/99ldapdkim.ldif``, copied into the
  instance's schema directory before the first start (the offline way the
  file's header describes);
* ``ou=services``, ``ou=domains``, ``cn=admin`` (provisions ``ou=domains``),
  ``cn=ldapdkim,ou=services`` (the milter, without size, time or
  look-through limits) and ``cn=reader,ou=services`` (any other bound DN);
* the access control of ``conf/389ds-aci.ldif``, its placeholders replaced
  by these DNs: only the milter reads or filters on dkimSignPrivateKey;
* with *content_sync* (the default), the Retro Changelog and Content
  Synchronization plugins on, configured as docs/howto/389ds.md says, so the
  server offers RFC 4533 content sync;
* a listener on ``ldap://127.0.0.1:<port>`` and an ldapi socket.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse
import weakref
from pathlib import Path

from harness.common import find_binary, free_port, log_tail, skip_or_fail
from harness.ldapserver import LdapServer, Resources, ServerError, wait_for_bind

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_SCHEMA = REPO_ROOT / "schema" / "389ds" / "99ldapdkim.ldif"
ACI_EXAMPLE = REPO_ROOT / "conf" / "389ds-aci.ldif"
SYSTEM_DEFAULTS = Path("/usr/share/dirsrv/inf/defaults.inf")

SUFFIX = "dc=example,dc=test"
INSTANCE = "ldapdkim"
READY_TIMEOUT = 30.0
DS389_BINARIES = ("dscreate", "ns-slapd", "ldapadd", "ldapmodify")
"""Programs the 389-DS tests run (Debian: 389-ds-base, ldap-utils)."""

EXAMPLE_DNS = (
    # conf/389ds-aci.ldif's placeholders, most specific first.
    ("cn=ldapdkim,ou=services,dc=example,dc=com", "milter_dn"),
    ("cn=admin,dc=example,dc=com", "admin_dn"),
    ("ou=domains,dc=example,dc=com", "domains_base"),
    ("dc=example,dc=com", "suffix"),
)


def require_389ds() -> None:
    """Skip (locally) or fail (in CI) unless 389 Directory Server is installed."""
    missing = [name for name in DS389_BINARIES if find_binary(name) is None]
    if missing or not SYSTEM_DEFAULTS.is_file():
        skip_or_fail(
            "389 Directory Server is not installed "
            f"(missing {', '.join(missing) or SYSTEM_DEFAULTS}); "
            "Debian: apt-get install 389-ds-base python3-lib389"
        )


def example_for(server: LdapServer, path: Path = ACI_EXAMPLE) -> str:
    """The text of an example file with its ``dc=example,dc=com`` DNs replaced by *server*'s."""
    text = path.read_text()
    for placeholder, attribute in EXAMPLE_DNS:
        text = text.replace(placeholder, getattr(server, attribute))
    return text


class Ds389(LdapServer):
    """A private 389-DS instance in *workdir*: created on the first :meth:`start`.

    Ports are chosen when the object is made and stay the same across
    :meth:`restart`; passwords are random per instance.
    """

    name = "389-DS"

    def __init__(self, workdir: Path, *, content_sync: bool = True) -> None:
        self.workdir = Path(workdir)
        self.content_sync = content_sync
        self._set_up_accounts(SUFFIX, "cn=Directory Manager")
        self._remember_passwords()

        self.port = free_port()
        self.ldap_uri = f"ldap://127.0.0.1:{self.port}"
        socket_dir = Path(tempfile.mkdtemp(prefix="ldapdkim-ds389-"))
        self.ldapi_path = socket_dir / "ldapi"
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(str(self.ldapi_path), safe="")

        self.prefix = self.workdir / "prefix"
        self.config_dir = self.workdir / "etc" / f"slapd-{INSTANCE}"
        self.schema_dir = self.config_dir / "schema"
        self.log_path = self.workdir / "log" / f"slapd-{INSTANCE}" / "errors"
        self.pid_file = self.workdir / "run" / f"slapd-{INSTANCE}.pid"

        self._set_up = False
        self._paused = False
        self._resources = Resources(socket_dir)
        self._finalizer = weakref.finalize(self, self._resources.release)

    # ---- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Create the instance on first use, start ns-slapd and wait until it answers.

        Raises:
            ServerError: creation failed, or ns-slapd exited or did not answer an
                anonymous bind within 30 s (the message includes its errors log).
        """
        if self.running:
            raise ServerError(f"389-DS in {self.workdir} is already running (pid {self.pid})")
        if not self._set_up:
            self._create_instance()
            self._launch()
            self._configure()
            self.stop()  # the plugins switched on take effect at the next start
            self._set_up = True
        self._launch()

    def _launch(self) -> None:
        ns_slapd = self._binary("ns-slapd")
        with (self.workdir / "ns-slapd.out").open("ab") as out:
            process = subprocess.Popen(
                # -d 0: stay in the foreground (we own the pid); the logs go to
                # the instance's log directory.
                [ns_slapd, "-D", str(self.config_dir), "-i", str(self.pid_file), "-d", "0"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        self._await(
            process,
            lambda: wait_for_bind(
                self.ldap_uri, process, self.log_path, READY_TIMEOUT, name="ns-slapd"
            ),
        )

    # ---- set-up -------------------------------------------------------------

    def _create_instance(self) -> None:
        if self.config_dir.exists():
            raise ServerError(f"{self.config_dir} exists; give each Ds389 a fresh workdir")
        defaults = self.prefix / "share" / "dirsrv" / "inf" / "defaults.inf"
        defaults.parent.mkdir(parents=True)
        defaults.write_text(self._defaults_inf())
        setup = self.workdir / "instance.inf"
        setup.write_text(
            "[general]\n"
            "full_machine_name = localhost\n"
            "start = False\n"
            "strict_host_checking = False\n"
            "[slapd]\n"
            f"instance_name = {INSTANCE}\n"
            f"port = {self.port}\n"
            f"secure_port = {free_port()}\n"
            "self_sign_cert = False\n"
            f"root_password = {self.root_pw}\n"
            "user = root\n"
            "group = root\n"
            f"ldapi = {self.ldapi_path}\n"
            "[backend-userroot]\n"
            f"suffix = {self.suffix}\n"
            "create_suffix_entry = True\n"
        )
        setup.chmod(0o600)
        env = {**os.environ, "PREFIX": str(self.prefix)}
        result = subprocess.run(
            [self._binary("dscreate"), "from-file", str(setup)],
            capture_output=True,
            env=env,
            cwd=self.workdir,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(
                f"dscreate from-file {setup} failed (exit status {result.returncode}):\n"
                + output.replace(self.root_pw, "***")
            )
        shutil.copy(PROJECT_SCHEMA, self.schema_dir / PROJECT_SCHEMA.name)

    def _defaults_inf(self) -> str:
        """The system defaults.inf with the instance's own directories under *workdir*."""
        work = str(self.workdir)
        own = {
            "with_systemd": "0",
            "config_dir": f"{work}/etc/slapd-{{instance_name}}",
            "schema_dir": f"{work}/etc/slapd-{{instance_name}}/schema",
            "cert_dir": f"{work}/etc/slapd-{{instance_name}}",
            "initconfig_dir": f"{work}/default",
            "local_state_dir": f"{work}/var",
            "run_dir": f"{work}/run",
            "pid_file": f"{work}/run/slapd-{{instance_name}}.pid",
            "ldapi": f"{work}/run/slapd-{{instance_name}}.socket",
            "inst_dir": f"{work}/lib/slapd-{{instance_name}}",
            "tmpfiles_d": f"{work}/tmpfiles.d",  # noqa: S108 (under workdir, not /tmp)
            "lock_dir": f"{work}/lock/slapd-{{instance_name}}",
            "log_dir": f"{work}/log/slapd-{{instance_name}}",
            "access_log": f"{work}/log/slapd-{{instance_name}}/access",
            "audit_log": f"{work}/log/slapd-{{instance_name}}/audit",
            "error_log": f"{work}/log/slapd-{{instance_name}}/errors",
            "security_log": f"{work}/log/slapd-{{instance_name}}/security",
            "db_dir": f"{work}/lib/slapd-{{instance_name}}/db",
            "db_home_dir": f"{work}/lib/slapd-{{instance_name}}/db",
            "backup_dir": f"{work}/lib/slapd-{{instance_name}}/bak",
            "ldif_dir": f"{work}/lib/slapd-{{instance_name}}/ldif",
        }
        lines = []
        for line in SYSTEM_DEFAULTS.read_text().splitlines():
            match = re.match(r"\s*(\w+)\s*=", line)
            key = match.group(1) if match else None
            lines.append(f"{key} = {own.pop(key)}" if key in own else line)
        if own:
            lines += ["[slapd]", *(f"{key} = {value}" for key, value in own.items())]
        return "\n".join(lines) + "\n"

    def _configure(self) -> None:
        """Accounts, indexes, access control and (optionally) content sync, as
        docs/howto/389ds.md says."""
        backend = "cn=userRoot,cn=ldbm database,cn=plugins,cn=config"
        index = "".join(
            f"dn: cn={attribute},cn=index,{backend}\n"
            "objectClass: top\nobjectClass: nsIndex\n"
            f"cn: {attribute}\nnsSystemIndex: false\nnsIndexType: eq\n\n"
            for attribute in ("dkimSignDomainName", "dkimSignSelector")
        )
        self.ldapadd(index, bind_dn=self.root_dn)

        def account(dn: str, name: str, description: str, *extra: str) -> str:
            return (
                "".join(
                    f"{line}\n"
                    for line in (
                        f"dn: {dn}",
                        "objectClass: top",
                        "objectClass: organizationalRole",
                        "objectClass: simpleSecurityObject",
                        f"cn: {name}",
                        f"description: {description}",
                        f"userPassword: {self._passwords[dn]}",
                        *extra,
                    )
                )
                + "\n"
            )

        self.ldapadd(
            f"dn: {self.services_base}\nobjectClass: top\nobjectClass: organizationalUnit\n"
            "ou: services\n\n"
            f"dn: {self.domains_base}\nobjectClass: top\nobjectClass: organizationalUnit\n"
            "ou: domains\n\n"
            + account(self.admin_dn, "admin", "provisions domains and keys")
            + account(self.milter_dn, "ldapdkim", "the milter's service DN")
            + account(self.reader_dn, "reader", "some other authenticated DN"),
            bind_dn=self.root_dn,
        )
        self.ldapmodify(example_for(self), bind_dn=self.root_dn)
        if self.content_sync:
            self.ldapmodify(CONTENT_SYNC_LDIF, bind_dn=self.root_dn)

    def errors_tail(self, lines: int = 30) -> str:
        """The last lines of the instance's errors log."""
        return log_tail(self.log_path, lines)


CONTENT_SYNC_LDIF = """\
dn: cn=Retro Changelog Plugin,cn=plugins,cn=config
changetype: modify
replace: nsslapd-pluginEnabled
nsslapd-pluginEnabled: on
-
replace: nsslapd-attribute
nsslapd-attribute: nsuniqueid:targetUniqueId
-

dn: cn=Content Synchronization,cn=plugins,cn=config
changetype: modify
replace: nsslapd-pluginEnabled
nsslapd-pluginEnabled: on
-
"""
"""What docs/howto/389ds.md has an administrator change for content sync."""
