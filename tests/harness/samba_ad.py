"""Run a throw-away Active Directory domain controller (Samba) for the integration tests.

This module's one job is :class:`SambaDC`: a Samba AD DC provisioned in a
temporary directory (``samba-tool domain provision``, about 4 s), serving
LDAP on its own loopback address, with the ldapdkim schema extension of
``schema/ad/ldapdkim.ldf`` loaded the way a schema administrator loads it,
and the accounts and layout of :class:`harness.slapd.Slapd`, so that a test
written against slapd runs against Active Directory as well.

What the DC has, once :meth:`SambaDC.start` returns:

* the domain ``corp.ldapdkim.test`` (NetBIOS ``CORP``), base
  ``DC=corp,DC=ldapdkim,DC=test``, with only Samba's LDAP service running
  (``server services = ldap``), on ports 389 and 636 of a free 127.0.0.N: Linux
  routes all of 127/8 to the loopback interface, so the address needs no
  set-up, and slapd or Postfix on 127.0.0.1 never collide with it;
* TLS with a certificate of the harness's own CA (``ca_cert``), for the
  name ``dc1.corp.ldapdkim.test`` and the address; like Windows, Samba
  refuses a simple bind without TLS (``ldap server require strong auth``);
* the schema extension, loaded over LDAPS as Administrator (a member of
  Schema Admins) by :func:`load_ldf`, which does what ``ldifde -i -c DC=X
  <root>`` does.  Samba also wants ``dsdb:schema update allowed = true``
  in smb.conf before it takes schema changes; Windows asks for nothing like
  it;
* ``OU=dkim`` (the domains base, writable by Administrator, the admin here),
  and the users ``ldapdkim`` (the milter) and ``reader`` (any other
  account) in ``CN=Users``; the milter binds as ``ldapdkim@CORP.LDAPDKIM.TEST``
  (``milter_dn``), as AD sites do;
* the access rule of ``schema/ad/README.md``: the private key is a
  confidential attribute, and only the milter holds the control-access
  right to read it on ``OU=dkim``.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import uuid
import weakref
from pathlib import Path

import ldap
import ldap.ldapobject

from harness.common import find_binary, skip_or_fail, wait_until_ready
from harness.ldapserver import LdapServer, Resources, ServerError, wait_for_bind

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_LDF = REPO_ROOT / "schema" / "ad" / "ldapdkim.ldf"

REALM = "CORP.LDAPDKIM.TEST"
HOSTNAME = "dc1"
SUFFIX = "DC=corp,DC=ldapdkim,DC=test"
READY_TIMEOUT = 30.0
POLL_INTERVAL = 0.25
SAMBA_BINARIES = ("samba", "samba-tool", "ldbsearch", "ldbmodify", "ldapmodify", "openssl")
"""Programs the Active Directory tests run (Debian: samba, samba-ad-dc, ldb-tools, ldap-utils)."""


def free_loopback_address() -> str:
    """A 127.0.0.N (N >= 2) on which the LDAP ports 389 and 636 are free now."""
    for last in range(2, 255):
        address = f"127.0.0.{last}"
        try:
            for port in (389, 636):
                with socket.socket() as probe:
                    probe.bind((address, port))
        except OSError:
            continue
        return address
    raise ServerError("no 127.0.0.N address has the ports 389 and 636 free")


def require_samba() -> None:
    """Skip (locally) or fail (in CI) unless Samba's AD DC is installed."""
    missing = [name for name in SAMBA_BINARIES if find_binary(name) is None]
    if missing:
        skip_or_fail(
            f"Samba AD DC is not installed (missing {', '.join(missing)}); Debian: "
            "apt-get install samba samba-ad-dc samba-dsdb-modules winbind"
        )


def ldifde_import_text(ldf: str, root: str) -> str:
    """What ``ldifde -i -c DC=X ROOT`` sends for an LDF file, as LDIF for ``ldapmodify``.

    ldifde replaces the placeholder DN and turns ``changetype: ntdsSchemaAdd``
    into a plain add (the ntdsSchema* change types only tell it to go to the
    schema master).
    """
    text = ldf.replace("DC=X", root)
    change = re.compile(r"^changetype: ntdsSchema(Add|Modify|Delete)$", re.MULTILINE)
    return change.sub(lambda m: f"changetype: {m.group(1).lower()}", text)


class SambaDC(LdapServer):
    """A private Samba AD DC in *workdir*: provisioned on the first :meth:`start`."""

    name = "samba"

    def __init__(self, workdir: Path, *, address: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.address = address or free_loopback_address()
        self.realm = REALM
        self.suffix = SUFFIX
        self.domains_base = f"OU=dkim,{SUFFIX}"
        self.services_base = f"CN=Users,{SUFFIX}"
        self.root_dn = f"CN=Administrator,CN=Users,{SUFFIX}"
        self.root_pw = "Adm-" + secrets.token_urlsafe(12)  # AD wants mixed classes
        self.admin_dn = self.root_dn
        self.admin_pw = self.root_pw
        self.milter_account = "ldapdkim"
        self.milter_dn = f"{self.milter_account}@{REALM}"
        self.milter_pw = "Mlt-" + secrets.token_urlsafe(12)
        self.milter_full_dn = f"CN={self.milter_account},{self.services_base}"
        self.reader_dn = f"reader@{REALM}"
        self.reader_pw = "Rdr-" + secrets.token_urlsafe(12)
        self._passwords = {
            self.root_dn: self.root_pw,
            self.milter_dn: self.milter_pw,
            self.milter_full_dn: self.milter_pw,
            self.reader_dn: self.reader_pw,
        }
        self.ldap_uri = f"ldaps://{self.address}:636"
        self.starttls_uri = f"ldap://{self.address}:389"
        self.ldapi_uri = ""  # Samba's ldapi is root-only and not what AD sites use
        self.conf = self.workdir / "etc" / "smb.conf"
        self.tls_dir = self.workdir / "tls"
        self.ca_cert = self.tls_dir / "ca.pem"
        self.log_path = self.workdir / "samba.log"
        self._set_up = False
        self._paused = False
        self._resources = Resources()
        self._finalizer = weakref.finalize(self, self._resources.release)

    # ---- life cycle -------------------------------------------------------

    def start(self) -> None:
        """Provision on first use, start samba and wait until it answers over LDAPS.

        Raises:
            ServerError: provisioning failed, or samba exited or did not answer
                within 30 s (the message includes its log).
        """
        if self.running:
            raise ServerError(f"samba in {self.workdir} is already running (pid {self.pid})")
        if not self._set_up:
            self._provision()
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [self._binary("samba"), "-i", "-M", "single", "-s", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.tool_env(),
            )
        # Anonymously over plain LDAP: the LDAPS port needs the CA, which a bare
        # connection does not know.
        self._await(
            process,
            lambda: wait_for_bind(
                self.starttls_uri, process, self.log_path, READY_TIMEOUT, name="samba"
            ),
        )
        if not self._set_up:
            # _configure's tools bind over LDAPS, which can open after the plain port.
            wait_until_ready(
                "samba",
                f"answering a bind as {self.root_dn} on {self.ldap_uri}",
                self._binds_over_ldaps,
                timeout=READY_TIMEOUT,
                process=process,
                log=self.log_path,
                error=ServerError,
            )
            self._configure()
            self._set_up = True

    def _binds_over_ldaps(self) -> bool:
        try:
            self.connect(self.root_dn).unbind_s()
        except ldap.SERVER_DOWN:
            return False
        return True

    # ---- clients ----------------------------------------------------------

    def _set_client_options(self, conn: ldap.ldapobject.LDAPObject) -> None:
        """Trust the DC's CA (connections go over LDAPS); follow no referrals."""
        conn.set_option(ldap.OPT_REFERRALS, 0)
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, str(self.ca_cert))
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)

    def tool_env(self) -> dict[str, str]:
        """Environment for the OpenLDAP tools and Samba: the DC's CA trusted, no local ldaprc."""
        env = {**os.environ, "LDAPTLS_CACERT": str(self.ca_cert), "LDAPRC": os.devnull}
        env.pop("LDAPNOINIT", None)
        return env

    def milter_lines(self, base: str) -> list[str]:
        """As for any server, with the DC's CA, and changes polled four times a second
        (tests that change entries wait less than a second for them)."""
        return [
            *super().milter_lines(base),
            f"LDAPTLSCACertFile {self.ca_cert}",
            f"DirectoryPollInterval {POLL_INTERVAL:g}",
        ]

    def samba_tool(self, *args: str) -> str:
        """Run ``samba-tool ARGS`` against this DC's database; its output."""
        result = subprocess.run(
            [self._binary("samba-tool"), *args, "-s", str(self.conf)],
            capture_output=True, env=self.tool_env(), check=False,
        )  # fmt: skip
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            for secret in (self.root_pw, self.milter_pw, self.reader_pw):
                output = output.replace(secret, "***")
            raise ServerError(f"samba-tool {args[0]} {args[1]} failed:\n{output}")
        return result.stdout.decode(errors="replace")

    def load_ldf(self, path: Path = PROJECT_LDF) -> None:
        """Import an LDF schema file as Administrator, as ``ldifde -i -c DC=X ROOT`` would."""
        self.ldapmodify(ldifde_import_text(path.read_text(), self.suffix), bind_dn=self.root_dn)

    # ---- set-up -------------------------------------------------------------

    def _provision(self) -> None:
        if self.conf.exists():
            raise ServerError(f"{self.conf} exists; give each SambaDC a fresh workdir")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._make_certificate()
        argv = [
            self._binary("samba-tool"), "domain", "provision",
            f"--targetdir={self.workdir}", f"--realm={REALM}", "--domain=CORP",
            f"--adminpass={self.root_pw}", "--server-role=dc", "--dns-backend=NONE",
            f"--host-name={HOSTNAME}", f"--host-ip={self.address}",
            # The address must be given with its netmask: Samba looks for it
            # among the interfaces, and lo has 127.0.0.1/8 only.
            f"--option=interfaces = {self.address}/8", "--option=bind interfaces only = yes",
            "--option=server services = ldap",
            f"--option=pid directory = {self.workdir / 'run'}",
            f"--option=log file = {self.workdir / 'log.%m'}",
            f"--option=tls certfile = {self.tls_dir / 'dc.pem'}",
            f"--option=tls keyfile = {self.tls_dir / 'dc.key'}",
            f"--option=tls cafile = {self.ca_cert}",
            "--option=dsdb:schema update allowed = true",
        ]  # fmt: skip
        (self.workdir / "run").mkdir(exist_ok=True)
        result = subprocess.run(argv, capture_output=True, env=self.tool_env(), check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise ServerError(
                "samba-tool domain provision failed (exit status "
                f"{result.returncode}):\n" + output.replace(self.root_pw, "***")
            )

    def _make_certificate(self) -> None:
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        key, csr, cert = self.tls_dir / "dc.key", self.tls_dir / "dc.csr", self.tls_dir / "dc.pem"
        ca_key = self.tls_dir / "ca.key"
        extensions = self.tls_dir / "dc.ext"
        extensions.write_text(
            f"subjectAltName=IP:{self.address},DNS:{HOSTNAME}.{REALM.lower()}\n"
            "extendedKeyUsage=serverAuth\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        openssl = self._binary("openssl")
        for argv in (
            [openssl, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=ldapdkim test AD CA",
             "-keyout", str(ca_key), "-out", str(self.ca_cert)],
            [openssl, "req", *ec, "-subj", f"/CN={HOSTNAME}.{REALM.lower()}",
             "-keyout", str(key), "-out", str(csr)],
            [openssl, "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert),
             "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
             "-extfile", str(extensions), "-out", str(cert)],
        ):  # fmt: skip
            result = subprocess.run(argv, capture_output=True, check=False)
            if result.returncode != 0:
                raise ServerError(f"{' '.join(argv[:3])} failed: {result.stderr.decode()}")
        key.chmod(0o600)  # samba refuses a key others can read

    def _configure(self) -> None:
        """The schema, the base, the accounts and the access rule."""
        self.load_ldf()
        self.ldapadd(
            f"dn: {self.domains_base}\nobjectClass: organizationalUnit\nou: dkim\n",
            bind_dn=self.root_dn,
        )
        for account, password in (("ldapdkim", self.milter_pw), ("reader", self.reader_pw)):
            self.samba_tool("user", "create", account, password)
        self.samba_tool(
            "dsacl",
            "set",
            f"--objectdn={self.domains_base}",
            f"--sddl={self.private_key_ace(self.milter_full_dn)}",
        )

    def allow_on_deleted_objects(self, sid: str, rights: str = "LCRP") -> None:
        """Let account ``sid`` list and read the tombstones in ``CN=Deleted Objects``.

        On Windows an administrator takes ownership of the container first and
        then grants (``dsacls ... /takeownership``, ``/G DOMAIN\\user:LCRP``).
        ``samba-tool dsacl`` cannot see the container (it is itself a deleted
        object), so the descriptor is rewritten in the DC's database with the
        Show Deleted control, as SDDL, which Samba's ldb tools take.
        """
        ldb = str(self.workdir / "private" / "sam.ldb")
        dn = f"CN=Deleted Objects,{self.suffix}"
        controls = ["--controls=show_deleted:1", "--controls=sd_flags:1:4"]
        found = subprocess.run(
            [self._binary("ldbsearch"), "-H", ldb, *controls, "-b", dn, "-s", "base",
             "nTSecurityDescriptor"],
            capture_output=True, text=True, env=self.tool_env(), check=True,
        ).stdout  # fmt: skip
        sddl = re.search(r"^nTSecurityDescriptor: (.+)$", found, re.MULTILINE)
        if sddl is None:
            raise ServerError(f"no security descriptor on {dn}:\n{found}")
        change = (
            f"dn: {dn}\nchangetype: modify\nreplace: nTSecurityDescriptor\n"
            f"nTSecurityDescriptor: {sddl.group(1)}(A;;{rights};;;{sid})\n-\n"
        )
        subprocess.run(
            [self._binary("ldbmodify"), "-H", ldb, *controls], input=change, text=True,
            capture_output=True, env=self.tool_env(), check=True,
        )  # fmt: skip

    def private_key_ace(self, account_dn: str) -> str:
        """The ACE of ``schema/ad/README.md``: control access to dkimSignPrivateKey (with
        read-property) for one account, inherited by every object below the domains base."""
        guid = self.schema_guid("dkimSignPrivateKey")
        sid = self.sid_of(account_dn)
        return f"(OA;CI;CRRP;{guid};;{sid})"

    def schema_guid(self, name: str) -> str:
        conn = self.connect(self.root_dn)
        try:
            [(_, attrs)] = [
                r for r in conn.search_s(
                    f"CN=Schema,CN=Configuration,{self.suffix}", ldap.SCOPE_ONELEVEL,
                    f"(lDAPDisplayName={name})", ["schemaIDGUID"],
                ) if r[0]
            ]  # fmt: skip
        finally:
            conn.unbind_s()
        return str(uuid.UUID(bytes_le=attrs["schemaIDGUID"][0]))

    def sid_of(self, dn: str) -> str:
        conn = self.connect(self.root_dn)
        try:
            [(_, attrs)] = [
                r
                for r in conn.search_s(dn, ldap.SCOPE_BASE, "(objectClass=*)", ["objectSid"])
                if r[0]
            ]
        finally:
            conn.unbind_s()
        raw = attrs["objectSid"][0]
        authority = int.from_bytes(raw[2:8], "big")
        subs = [int.from_bytes(raw[8 + 4 * i : 12 + 4 * i], "little") for i in range(raw[1])]
        return "S-1-" + "-".join(str(x) for x in [authority, *subs])
