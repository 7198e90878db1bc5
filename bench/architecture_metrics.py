#!/usr/bin/env python3
"""Architecture figures of a source tree: modules per package, import depth, longest functions.

    .venv/bin/python bench/architecture_metrics.py [REPO]     (default: this checkout)

Also counts the places outside ``ldapdkim/directory/`` that reach through
``.backend``, and the places that compare outcome text (``reason.startswith``,
``reply_for("...")``, ``action_for("...")``).  For an older commit:
``git archive COMMIT | tar -x -C /tmp/old && ... bench/architecture_metrics.py /tmp/old``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ldapdkim"):
            base = node.module.removeprefix("ldapdkim").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                out.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            out |= {
                a.name[len("ldapdkim.") :] for a in node.names if a.name.startswith("ldapdkim.")
            }
    return {name for name in out if name in known}


def main() -> int:
    repo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    root = repo / "ldapdkim"
    modules = _modules(root)
    packages = Counter(
        name.split(".")[0] if name and (root / name.split(".")[0]).is_dir() else "(bottom)"
        for name in modules
    )
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    depth: dict[str, int] = {}

    def level(name: str, seen: tuple[str, ...] = ()) -> int:
        if name not in depth:
            depth[name] = 1 + max(
                (level(m, (*seen, name)) for m in graph[name] if m not in seen), default=0
            )
        return depth[name]

    functions = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))  # type: ignore[operator]
    backend = sum(
        len(re.findall(r"\.backend\b", path.read_text()))
        for name, path in modules.items()
        if not name.startswith("directory")
    )
    text = "\n".join(path.read_text() for path in modules.values())
    outcome_text = len(re.findall(r'reason\.startswith|action_for\("|reply_for\("', text))
    print(f"modules: {len(modules)}  by package: {dict(sorted(packages.items()))}")
    print(f"import levels: {max(level(name) for name in modules)}")
    print("longest functions:")
    for length, name in sorted(functions, reverse=True)[:10]:
        print(f"  {length:4d}  {name}")
    print(f".backend outside directory/: {backend}")
    print(f"outcome text compared: {outcome_text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
