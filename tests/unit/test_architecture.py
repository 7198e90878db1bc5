"""Dependencies point one way: cli → policy → directory / signer → keys → config → model.

Each module may import only modules listed before it here.  A new module
must be placed in this list, which is the architecture in one place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ldapdkim

PACKAGE = Path(ldapdkim.__file__).parent

LAYERS = [
    "errors",
    "schema",
    "log",
    "model",
    "domainname",
    "hostlist",
    "keys",
    "bodyhash",
    "config",
    "dnsexport",
    "ldifout",
    "entries",
    "entryindex",
    "replicafile",
    "replicastore",
    "memorybackend",
    "ldapbackend",
    "replica",
    "directorywrite",
    "directory",
    "resolver",
    "signer",
    "dnslookup",
    "dnscheck",
    "dnsupdate",
    "policy",
    "authresults",
    "milter",
    "daemon",
    "status",
    "provision",
    "migrate",
    "audit",
    "rotation",
    "cli",
    "__init__",
    "__main__",
]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ldapdkim":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("ldapdkim."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ldapdkim.")}
    return found


def test_every_module_has_a_place_in_the_layers() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS)


def test_modules_import_only_what_lies_below_them() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        f"{module} imports {imported}"
        for module in LAYERS
        for imported in _imports(PACKAGE / f"{module}.py")
        if imported in rank and rank[imported] >= rank[module]
    ]
    assert upward == []


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
