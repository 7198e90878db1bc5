"""Dependencies point one way: cli → milter → lifecycle → publish → signing → directory → config.

``LAYERS`` is the architecture in one place: the packages from the bottom up,
and inside each the modules from the bottom up.  A module may import only
modules listed before it.  A package's ``__init__`` counts as the last module
of its package (it may re-export what the package offers), so a module that
imports a package imports everything in it.  A new module must be placed in
this table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ldapdkim
from ldapdkim import errors

PACKAGE = Path(ldapdkim.__file__).parent

LAYERS: list[tuple[str, list[str]]] = [
    (
        "",
        [
            "nodoh",
            "errors",
            "schema",
            "log",
            "model",
            "metrics",
            "domainname",
            "orgdomain",
            "pkcs11uri",
            "keys",
            "sealing",
        ],
    ),
    (
        "config",
        [
            "datasets",
            "hostlist",
            "secret",
            "ldap",
            "values",
            "directorysource",
            "keywords",
            "settings",
        ],
    ),
    (
        "directory",
        [
            "ldifout",
            "entries",
            "entryindex",
            "replica.store",
            "replica.feed",
            "memorybackend",
            "ldapbackend",
            "replica.usnpoll",
            "owners",
            "replica.status",
            "replica.statedir",
            "replica.state",
            "replica.syncstate",
            "replica.consumer",
            "replica.sync",
            "replica",
            "writer",
            "probe",
            "resolution",
            "cache",
        ],
    ),
    (
        "signing",
        [
            "authorization",
            "bodyhash",
            "taglist",
            "canonicalization",
            "sigfield",
            "keyrecord",
            "keyfetch",
            "pkcs11sign",
            "pkcs11lib",
            "token",
            "keyring",
            "signer",
            "verifier",
            "dnslookup",
            "author",
            "policy",
            "arc.verdict",
            "arc.chain",
            "arc.fields",
            "arc.verify",
            "arc.seal",
            "arc",
            "authresults",
            "arcchoice",
        ],
    ),
    ("publish", ["dnsexport", "dnscheck", "dnsupdate", "audit"]),
    (
        "lifecycle",
        [
            "provision",
            "migrate.opendkimconf",
            "migrate.differences",
            "migrate.tables",
            "migrate.plan",
            "migrate.contrib",
            "migrate",
            "rotation",
            "sealkeys",
        ],
    ),
    ("milter", ["monitor", "refusals", "session", "workers", "daemon"]),
    (
        "cli",
        [
            "options",
            "checkconfig",
            "run",
            "tokenkeys",
            "genkey",
            "provision",
            "migrate",
            "sign",
            "verify",
            "dnsrecords",
            "rotate",
            "keys",
            "testkey",
            "status",
            "main",
            "manpages",
        ],
    ),
    ("", ["__main__"]),
]


def _ordered() -> list[str]:
    """Every module's dotted name below ``ldapdkim``, bottom first ("" is ``ldapdkim``)."""
    order: list[str] = []
    for package, modules in LAYERS:
        order += [f"{package}.{m}" if package else m for m in modules]
        if package:
            order.append(package)
    order.insert(order.index("keys") + 1, "")  # ``ldapdkim`` re-exports the bottom only
    return order


def _name_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_name_of(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, known: set[str]) -> set[str]:
    """The project modules that ``path`` imports, by dotted name below ``ldapdkim``."""
    found: set[str] = set()

    def add(dotted: str) -> None:
        name = dotted.removeprefix("ldapdkim").lstrip(".")
        found.add(name)

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ldapdkim" or node.module.startswith("ldapdkim."):
                base = node.module.removeprefix("ldapdkim").lstrip(".")
                for alias in node.names:
                    sub = f"{base}.{alias.name}" if base else alias.name
                    add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ldapdkim."):
                    add(alias.name)
    return found


def test_every_module_has_a_place_in_the_layers() -> None:
    assert sorted(_modules()) == sorted(_ordered())


def test_modules_import_only_what_lies_below_them() -> None:
    modules = _modules()
    rank = {name: i for i, name in enumerate(_ordered())}
    upward = [
        f"{module or 'ldapdkim'} imports {imported or 'ldapdkim'}"
        for module, path in modules.items()
        for imported in _imports(path, set(modules))
        if imported in rank and rank[imported] >= rank[module]
    ]
    assert upward == []


def test_every_public_exception_lives_in_errors_and_in_its_drawing() -> None:
    """Private control-flow exceptions (``_Done``) may stay where they are raised and caught."""
    drawing = errors.__doc__ or ""
    error_names = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    elsewhere, undrawn = [], []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {b.id if isinstance(b, ast.Name) else ast.unparse(b) for b in node.bases}
            if not any(b.endswith(("Error", "Exception")) or b in error_names for b in bases):
                continue
            if name != "errors":
                elsewhere.append(f"{name}.{node.name}")
            elif node.name not in drawing:
                undrawn.append(node.name)
    assert (elsewhere, undrawn) == ([], [])


def test_the_public_surface_is_what_init_declares() -> None:
    assert sorted(ldapdkim.__all__) == [
        "Algorithm",
        "ConfigError",
        "DirectoryError",
        "DirectoryUnavailable",
        "DomainNotSigned",
        "DomainPolicy",
        "InvalidDomain",
        "KeyFormatError",
        "KeyState",
        "LdapDkimError",
        "Resolution",
        "SigningKey",
        "__version__",
    ]
    for name in ldapdkim.__all__:
        assert hasattr(ldapdkim, name)
