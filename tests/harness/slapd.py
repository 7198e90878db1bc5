"""Run a throw-away OpenLDAP server for the integration tests.

This module's one job is :class:`Slapd`: a private ``slapd`` in a temporary
directory, configured the way the milter expects a real server to be, and
the coordinates tests need to talk to it.

What the server has (built with ``slapadd -n0`` from a generated cn=config
LDIF, so start-up takes about a tenth of a second):

* back_mdb database for ``dc=example,dc=test`` with the syncprov overlay
  (checkpoint and session log, for RFC 4533 content sync) and equality
  indexes on objectClass, entryCSN, entryUUID, dkimSignDomainName and
  dkimSignSelector;
* schemas core, cosine, the project's ``schema/ldapdkim.ldif`` (optional) and
  any extra cn=config schema LDIF files;
* listeners on ``ldap://127.0.0.1:<port>``, ``ldaps://127.0.0.1:<port>`` (a
  fresh self-signed EC P-256 certificate, its own CA) and ``ldapi://``;
* ldapi SASL EXTERNAL mapping: uid 0 becomes the rootdn, which may also
  manage cn=config (so ``ldapadd -Y EXTERNAL -H ldapi://...`` changes the
  configuration online, as on a Debian server); uid 65534 (nobody) becomes
  the milter's service DN;
* entries: the suffix, ``ou=services``, ``ou=domains``, ``cn=admin`` (writes
  under ``ou=domains``), ``cn=ldapdkim,ou=services`` (the milter) and
  ``cn=reader,ou=services`` (any other authenticated DN);
* access control: only the milter reads ``dkimSignPrivateKey`` (the admin
  writes it; nobody else may read it or use it in a filter), passwords are
  only usable to bind, ``ou=domains`` is readable by authenticated users and
  writable by the admin, anonymous clients see nothing; no size or time limit
  for the milter.

A second server can be a replica: ``Slapd(workdir, provider=other)`` is an
OpenLDAP syncrepl consumer of *other* (refreshAndPersist, bound as the
provider's rootdn, retrying every second), with the same suffix, schemas,
ACL, service DNs and passwords.  It loads no entries of its own: everything,
base entries and passwords included, comes from the provider by replication,
and :meth:`Slapd.start` returns once the provider's base entries have
arrived.  Writes to the consumer are referred to the provider
(``olcUpdateRef``).  The consumer has syncprov too, so it can in turn serve
RFC 4533 clients such as the milter's own replica.

The ldapi socket lives in its own short directory under the system temporary
directory, not in *workdir*: a Unix socket path must fit in 108 bytes, and
uid 65534 must be able to reach it (pytest's temporary directories are 0700).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from pathlib import Path

import ldap
import ldap.ldapobject

from harness import ldapserver
from harness.common import find_binary, free_port, log_tail, skip_or_fail
from harness.ldapserver import LdapServer, LdapToolError, Resources, ServerError

__all__ = [
    "SLAPD_BINARIES",
    "LdapToolError",
    "Slapd",
    "SlapdError",
    "require_binaries",
    "stock_schema_dir",
]


class SlapdError(ServerError):
    """slapd could not be set up, did not start, or did not answer in time."""


REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_SCHEMA = REPO_ROOT / "schema" / "ldapdkim.ldif"

SUFFIX = "dc=example,dc=test"
MILTER_UID = 65534
"""The Unix uid that ldapi SASL EXTERNAL maps to the milter's service DN (nobody)."""

READY_TIMEOUT = 10.0
REPLICATION_TIMEOUT = 20.0

_MODULE_DIRS = (
    "/usr/lib/ldap",  # Debian, Ubuntu
    "/usr/lib64/openldap",  # Fedora, RHEL
    "/usr/lib/openldap",  # Arch, Alpine
    "/usr/libexec/openldap",
    "/usr/local/libexec/openldap",  # FreeBSD
)
_SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema", "/usr/local/etc/openldap/schema")
SLAPD_BINARIES = ("slapd", "slapadd", "slaptest", "ldapadd", "ldapmodify", "ldapsearch", "openssl")
"""Programs the LDAP integration tests run (Debian: slapd, ldap-utils, openssl)."""


def require_binaries(*names: str) -> None:
    """Skip (locally) or fail (in CI) unless every program in *names* exists."""
    missing = [name for name in names if find_binary(name) is None]
    if missing:
        skip_or_fail(
            f"missing {', '.join(missing)}; install slapd, ldap-utils and openssl "
            "(Debian: apt-get install slapd ldap-utils openssl)"
        )


def wait_for_bind(
    uri: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = READY_TIMEOUT
) -> None:
    """Poll *uri* until an anonymous bind to slapd succeeds (see :func:`ldapserver.wait_for_bind`).

    Raises:
        SlapdError: *process* exited first, or *timeout* seconds passed.
    """
    ldapserver.wait_for_bind(uri, process, log_path, timeout, name="slapd", error=SlapdError)


def _first_dir_with(candidates: Sequence[str], filename: str) -> Path | None:
    for directory in candidates:
        if (Path(directory) / filename).exists():
            return Path(directory)
    return None


def stock_schema_dir() -> Path:
    """The directory of OpenLDAP's own schema files (core.ldif, core.schema, ...)."""
    found = _first_dir_with(_SCHEMA_DIRS, "core.ldif")
    if found is None:
        raise SlapdError(f"core.ldif not found in any of {', '.join(_SCHEMA_DIRS)}")
    return found


class Slapd(LdapServer):
    """A private slapd in *workdir*: set up on the first :meth:`start`.

    Ports and the ldapi path are chosen when the object is made, so the URIs
    are known before start-up and stay the same across :meth:`restart`.
    Passwords are random per instance.  Used as a context manager it starts
    on entry; on exit it stops slapd and removes the ldapi socket directory
    (the object is then spent; *workdir* is left for inspection).

    With *provider*, this server is a syncrepl consumer of that one: it takes
    the provider's schemas, DNs and passwords (*extra_schemas* and
    *with_project_schema* are ignored) and all its entries by replication.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        extra_schemas: Sequence[Path] = (),
        with_project_schema: bool = True,
        provider: Slapd | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.provider = provider
        if provider is not None:
            extra_schemas = provider.extra_schemas
            with_project_schema = provider.with_project_schema
        self.extra_schemas: tuple[Path, ...] = tuple(Path(p) for p in extra_schemas)
        self.with_project_schema: bool = with_project_schema

        self._set_up_accounts(SUFFIX, f"cn=root,{SUFFIX}")
        self.milter_uid = MILTER_UID
        if provider is not None:
            # The entries (userPassword included) come from the provider; the
            # rootdn's password lives in cn=config, so it is copied here.
            self.root_pw = provider.root_pw
            self.admin_pw = provider.admin_pw
            self.milter_pw = provider.milter_pw
            self.reader_pw = provider.reader_pw

        self.port = free_port()
        self.ldaps_port = free_port()
        self.ldap_uri = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_uri = f"ldaps://127.0.0.1:{self.ldaps_port}"

        socket_dir = Path(tempfile.mkdtemp(prefix="ldapdkim-ldapi-"))
        socket_dir.chmod(0o755)  # uid 65534 must reach the socket
        self.ldapi_path = socket_dir / "ldapi"
        self.ldapi_uri = "ldapi://" + urllib.parse.quote(str(self.ldapi_path), safe="")

        self.config_dir = self.workdir / "slapd.d"
        self.db_dir = self.workdir / "db"
        self.tls_dir = self.workdir / "tls"
        self.ca_cert = self.tls_dir / "server.crt"
        self.tls_key = self.tls_dir / "server.key"
        self.log_path = self.workdir / "slapd.log"

        self._remember_passwords()
        self._set_up = False
        self._paused = False
        self._resources = Resources(socket_dir)
        self._finalizer = weakref.finalize(self, self._resources.release)

    # ---- life cycle -------------------------------------------------------

    name = "slapd"

    def start(self) -> None:
        """Set up on first use, start slapd, and wait until it answers a bind.

        Raises:
            SlapdError: set-up failed, or slapd exited or did not answer an
                anonymous bind within 10 s (the message includes its log).
        """
        if self.running:
            raise SlapdError(f"slapd in {self.workdir} is already running (pid {self.pid})")
        if not self._set_up:
            self._set_up_directory()
            self._set_up = True
        slapd = self._binary("slapd")
        urls = f"{self.ldap_uri}/ {self.ldaps_uri}/ {self.ldapi_uri}/"
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                # "-d none" keeps slapd in the foreground (we own the pid) and
                # logs errors only, to stderr; "-d 0" would hide them too.
                [slapd, "-d", "none", "-F", str(self.config_dir), "-h", urls],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> None:
            # Poll the ldapi socket: its path is ours alone, whereas another
            # server could have taken a TCP port between free_port() and now.
            # slapd opens all listeners before it serves any, so this also
            # covers the TCP ones.
            wait_for_bind(self.ldapi_uri, process, self.log_path)
            if self.provider is not None:
                self.wait_for_entry(self.reader_dn, timeout=REPLICATION_TIMEOUT)

        self._await(process, ready)

    # ---- replication ------------------------------------------------------

    def context_csn(self) -> set[bytes]:
        """The suffix's contextCSN values: where this server's copy of the data stands."""
        conn = self.connect(self.root_dn)
        try:
            result = conn.search_s(self.suffix, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
        finally:
            conn.unbind_s()
        return set(result[0][1].get("contextCSN", [])) if result else set()

    def wait_in_sync(self, timeout: float = 10.0) -> float:
        """For a consumer: poll until its contextCSN equals the provider's; seconds waited.

        Raises:
            SlapdError: not a consumer, or not in step within *timeout* seconds.
        """
        if self.provider is None:
            raise SlapdError(f"slapd in {self.workdir} has no provider to be in sync with")
        started = time.monotonic()
        while True:
            wanted = self.provider.context_csn()
            if self.context_csn() == wanted:
                return time.monotonic() - started
            if time.monotonic() - started >= timeout:
                raise SlapdError(
                    f"{self.ldap_uri} did not catch up with {self.provider.ldap_uri} within "
                    f"{timeout:g} s (contextCSN {sorted(self.context_csn())} against "
                    f"{sorted(wanted)}); last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)

    def _where_entries_come_from(self) -> str:
        return f" from {self.provider.ldap_uri}" if self.provider is not None else ""

    # ---- internals --------------------------------------------------------

    def _run(self, argv: Sequence[str], what: str) -> None:
        result = subprocess.run(argv, capture_output=True, check=False, env=self.tool_env())
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise SlapdError(f"{what} failed (exit status {result.returncode}):\n{output}")

    def _set_up_directory(self) -> None:
        if self.config_dir.exists() and any(self.config_dir.iterdir()):
            raise SlapdError(
                f"{self.config_dir} already holds a configuration; give each Slapd a fresh workdir"
            )
        for directory in (self.config_dir, self.db_dir, self.tls_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._make_certificate()
        config_ldif = self.workdir / "config.ldif"
        config_ldif.write_text(self._config_ldif())
        self._run(
            [self._binary("slapadd"), "-n0", "-F", str(self.config_dir), "-l", str(config_ldif)],
            f"slapadd -n0 of {config_ldif}",
        )
        if self.provider is not None:
            return  # a consumer gets every entry from its provider
        data_ldif = self.workdir / "base.ldif"
        data_ldif.write_text(self._base_ldif())
        # -q skips consistency checks (fast); -w stores the suffix's contextCSN,
        # so syncprov starts with a cookie state that covers these entries.
        argv = [self._binary("slapadd"), "-q", "-w", "-F", str(self.config_dir)]
        self._run([*argv, "-b", self.suffix, "-l", str(data_ldif)], f"slapadd of {data_ldif}")

    def _make_certificate(self) -> None:
        # Self-signed, so the certificate is also the CA file clients use.
        argv = [
            self._binary("openssl"), "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(self.tls_key), "-out", str(self.ca_cert),
        ]  # fmt: skip
        self._run(argv, "openssl req (self-signed test certificate)")

    def _schema_files(self) -> list[Path]:
        stock = stock_schema_dir()
        files = [stock / "core.ldif", stock / "cosine.ldif"]
        if self.with_project_schema:
            files.append(PROJECT_SCHEMA)
        files.extend(self.extra_schemas)
        for path in files:
            if not path.is_file():
                raise SlapdError(f"schema file {path} does not exist")
        return files

    def _config_ldif(self) -> str:
        root, milter, admin = self.root_dn, self.milter_dn, self.admin_dn
        # The identity slapd gives an ldapi client that binds with SASL EXTERNAL.
        peercred = r"gidNumber=[0-9]+\+uidNumber={uid},cn=peercred,cn=external,cn=auth"
        includes = "".join(
            f"include: {path.resolve().as_uri()}\n\n" for path in self._schema_files()
        )
        module_dir = _first_dir_with(_MODULE_DIRS, "back_mdb.la") or _first_dir_with(
            _MODULE_DIRS, "back_mdb.so"
        )
        modules = (
            "dn: cn=module{0},cn=config\n"
            "objectClass: olcModuleList\n"
            "cn: module{0}\n"
            f"olcModulePath: {module_dir}\n"
            "olcModuleLoad: {0}back_mdb\n"
            "olcModuleLoad: {1}syncprov\n\n"
            if module_dir is not None
            else ""  # no module directory: assume a slapd with both built in
        )
        # Index and ACL lines naming dkimSign attributes are only valid once
        # the schema is loaded; without it (online-load tests) they are left out.
        dkim_indexes = (
            "olcDbIndex: dkimSignDomainName eq\nolcDbIndex: dkimSignSelector eq\n"
            if self.with_project_schema
            else ""
        )
        acl = []
        if self.with_project_schema:
            acl.append(
                "to attrs=dkimSignPrivateKey\n"
                f'  by dn.exact="{milter}" read\n'
                f'  by dn.exact="{admin}" write\n'
                "  by * none"
            )
        acl += [
            "to attrs=userPassword\n  by anonymous auth\n  by * none",
            f'to dn.subtree="{self.domains_base}"\n'
            f'  by dn.exact="{admin}" write\n'
            "  by users read\n"
            "  by * none",
            "to *\n  by users read\n  by * none",
        ]
        # olcDbNoSync: no fsync per write.  On a busy disk the fsyncs made
        # 500 adds take seconds; a killed slapd still loses nothing (the data
        # is in the page cache), only a crash of the whole machine would.
        access = "".join(f"olcAccess: {{{i}}}{rule}\n" for i, rule in enumerate(acl))
        return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcLogLevel: none
olcTLSCertificateFile: {self.ca_cert}
olcTLSCertificateKeyFile: {self.tls_key}
olcTLSProtocolMin: 3.3
olcAuthzRegexp: {{0}}"{peercred.format(uid=0)}" "{root}"
olcAuthzRegexp: {{1}}"{peercred.format(uid=self.milter_uid)}" "{milter}"

{modules}dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by dn.exact="{root}" manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {self.suffix}
olcRootDN: {root}
olcRootPW: {self.root_pw}
olcDbDirectory: {self.db_dir}
olcDbMaxSize: 1073741824
olcDbNoSync: TRUE
olcDbIndex: objectClass eq
olcDbIndex: entryCSN,entryUUID eq
{dkim_indexes}olcLimits: {{0}}dn.exact="{milter}" size=unlimited time=unlimited
{access}{self._syncrepl_ldif()}
dn: olcOverlay={{0}}syncprov,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {{0}}syncprov
olcSpCheckpoint: 100 10
olcSpSessionlog: 1000
"""

    def _syncrepl_ldif(self) -> str:
        """The consumer's olcSyncrepl and olcUpdateRef lines ("" for a provider)."""
        provider = self.provider
        if provider is None:
            return ""
        # As the provider's rootdn: no ACL or size limit hides an entry or an
        # attribute (userPassword, dkimSignPrivateKey) from replication.
        return (
            f"olcSyncrepl: {{0}}rid=001 provider={provider.ldap_uri} bindmethod=simple "
            f'binddn="{provider.root_dn}" credentials="{provider.root_pw}" '
            f'searchbase="{provider.suffix}" type=refreshAndPersist retry="1 +" '
            "schemachecking=on\n"
            f"olcUpdateRef: {provider.ldap_uri}\n"
        )

    def _base_ldif(self) -> str:
        def account(dn: str, name: str, description: str) -> str:
            return (
                f"dn: {dn}\n"
                "objectClass: organizationalRole\n"
                "objectClass: simpleSecurityObject\n"
                f"cn: {name}\n"
                f"description: {description}\n"
                f"userPassword: {self._passwords[dn]}\n\n"
            )

        return (
            f"dn: {self.suffix}\n"
            "objectClass: dcObject\nobjectClass: organization\n"
            "dc: example\no: ldapdkim integration tests\n\n"
            f"dn: {self.services_base}\nobjectClass: organizationalUnit\nou: services\n\n"
            f"dn: {self.domains_base}\nobjectClass: organizationalUnit\nou: domains\n\n"
            + account(self.admin_dn, "admin", "provisions domains and keys")
            + account(self.milter_dn, "ldapdkim", "the milter's service DN")
            + account(self.reader_dn, "reader", "some other authenticated DN")
        )
