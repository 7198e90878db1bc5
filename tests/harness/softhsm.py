"""A SoftHSM2 token of the test's own, for keys in a PKCS #11 token.

``SoftHsm(workdir)`` writes a ``softhsm2.conf`` whose token directory is in
``workdir`` and initialises one token in it (label :data:`TOKEN`, user PIN
:data:`PIN`, SO PIN :data:`SO_PIN`) with ``softhsm2-util``.  The module
finds its configuration through ``SOFTHSM2_CONF``: :attr:`SoftHsm.env` for a
milter process, ``monkeypatch.setenv`` for the test's own process.
:meth:`SoftHsm.remove` and :meth:`SoftHsm.restore` take the token away
(``softhsm2-util --delete-token``) and put the same token back, keys and
all, as a token pulled out and plugged in again.

``require_softhsm`` skips locally but fails under CI when softhsm2, its
module or PyKCS11 (python3-pykcs11) is missing.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness.common import skip_or_fail

TOKEN = "ldapdkim"
PIN = "1234"
SO_PIN = "5678"
MODULES = (
    Path("/usr/lib/softhsm/libsofthsm2.so"),
    Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
    Path("/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"),
)
_HINT = "install softhsm2, python3-pykcs11 and opensc (Debian), or run 'bash tests/setup.sh'"


def module_path() -> Path | None:
    return next((p for p in MODULES if p.exists()), None)


def require_softhsm() -> Path:
    """The SoftHSM2 module; skip (fail under CI) without softhsm2, PyKCS11 or pkcs11-tool."""
    module = module_path()
    if module is None or shutil.which("softhsm2-util") is None:
        skip_or_fail(f"SoftHSM2 is not installed; {_HINT}")
    if shutil.which("pkcs11-tool") is None:
        skip_or_fail(f"pkcs11-tool (OpenSC) is not installed; {_HINT}")
    try:
        import PyKCS11  # noqa: F401
    except ImportError:
        skip_or_fail(f"PyKCS11 is not installed; {_HINT}")
    return module


class SoftHsm:
    """One SoftHSM2 configuration and token directory, with one initialised token."""

    def __init__(self, workdir: Path) -> None:
        self.module = require_softhsm()
        self.workdir = workdir
        self.tokens = workdir / "tokens"
        self.tokens.mkdir(parents=True)
        self.conf = workdir / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = true\n"
        )
        self.env = {"SOFTHSM2_CONF": str(self.conf)}
        self.pin_file = workdir / "pin"
        self.write_pin(PIN)
        self.util("--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", SO_PIN)
        self._saved = workdir / "saved-token"

    def write_pin(self, pin: str) -> None:
        self.pin_file.write_text(pin + "\n")
        self.pin_file.chmod(0o600)

    def config_lines(self) -> list[str]:
        """What ldapdkim.conf says to sign with this token."""
        return [f"PKCS11Module {self.module}", f"PKCS11PinFile {self.pin_file}"]

    def util(self, *args: str) -> str:
        done = subprocess.run(
            ["softhsm2-util", *args],
            env={"PATH": "/usr/bin:/bin", **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``pkcs11-tool --module MODULE ARGS`` (OpenSC), logged in with the PIN."""
        return subprocess.run(
            ["pkcs11-tool", "--module", str(self.module), "--token-label", TOKEN,
             "--login", "--pin", PIN, *args],
            env={"PATH": "/usr/bin:/bin", **self.env},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def private_keys(self) -> dict[str, str]:
        """Label -> the ``Access:`` line of each private key object, as pkcs11-tool lists it."""
        listing = self.tool("--list-objects", "--type", "privkey").stdout
        found: dict[str, str] = {}
        for block in listing.split("Private Key Object")[1:]:
            label = re.search(r"label:\s+(\S+)", block)
            access = re.search(r"Access:\s+(.*)", block)
            if label and access:
                found[label.group(1)] = access.group(1).strip()
        return found

    def private_attributes(self, label: str, *names: str) -> list[object]:
        """The attributes ``names`` (CKA_...) of the private key ``label``, as PyKCS11 reads
        them in a process of its own (None: the token gave no value)."""
        script = (
            "import sys, PyKCS11 as p\n"
            "lib = p.PyKCS11Lib(); lib.load(sys.argv[1])\n"
            "slot = next(s for s in lib.getSlotList(True)"
            " if lib.getTokenInfo(s).label.strip() == sys.argv[2])\n"
            "s = lib.openSession(slot); s.login(sys.argv[3])\n"
            "(key,) = s.findObjects([(p.CKA_CLASS, p.CKO_PRIVATE_KEY),"
            " (p.CKA_LABEL, sys.argv[4])])\n"
            "print(repr(s.getAttributeValue(key, [getattr(p, n) for n in sys.argv[5:]])))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script, str(self.module), TOKEN, PIN, label, *names],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        value: list[object] = ast.literal_eval(done.stdout.strip())
        return value

    def remove(self) -> None:
        """Take the token away, as softhsm2-util deletes it; :meth:`restore` puts it back."""
        if self._saved.exists():
            shutil.rmtree(self._saved)
        shutil.copytree(self.tokens, self._saved)
        self.util("--delete-token", "--token", TOKEN)
        assert not any(self.tokens.iterdir())

    def restore(self) -> None:
        for entry in self._saved.iterdir():
            shutil.copytree(entry, self.tokens / entry.name)
