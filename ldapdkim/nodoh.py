"""dnspython without its DNS-over-HTTPS clients, which cost every start 0.2 s.

When ``dns.query`` is first imported (by the verifier's resolver,
by ``dns-records --apply``), dnspython 2.3 imports ``requests`` and ``httpx``
if they are installed, and opens an HTTP/2 client to see whether it works.
Debian's python3-dnspython recommends both, so on a Debian host that is about
0.2 s of a milter's 0.45 s start (measured with ``python -X importtime``), for
DNS over HTTPS, which ldapdkim never uses: it resolves over UDP and TCP.

:func:`install` puts a finder on ``sys.meta_path`` that wraps the loader of
``dns.query`` alone: while that module runs its imports, ``requests`` and
``httpx`` are absent (``sys.modules[name] = None`` makes ``import name`` raise
ImportError, which dnspython takes as "not installed").  Afterwards they can
be imported as usual; nothing else is touched.  The command's entry point
(:func:`ldapdkim.cli.main.main`) installs it before anything else, so every
sub-command and the milter's workers (forked from ``ldapdkim run``) have it;
a bare ``import ldapdkim`` does not.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

DNS_QUERY = "dns.query"
HTTP_CLIENTS = ("requests", "httpx")


class _WithoutHttpClients(importlib.abc.Loader):
    """Runs ``dns.query`` with the HTTP client libraries hidden."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        hidden = [name for name in HTTP_CLIENTS if name not in sys.modules]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            self.loader.exec_module(module)
        finally:
            for name in hidden:
                if sys.modules.get(name) is None:
                    del sys.modules[name]


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != DNS_QUERY:
            return None
        sys.meta_path.remove(self)  # once is enough, and the search below must not find us
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _WithoutHttpClients(spec.loader)
        return spec


def install() -> None:
    """Hide the HTTP clients from ``dns.query`` when it is imported (if it is not yet)."""
    if DNS_QUERY not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
