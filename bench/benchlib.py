"""What the benchmarks share: a milter's CPU and memory read from ``/proc``, and tables.

A milter here is a process tree (``Workers N``: a supervisor and N workers), so
every reading adds up the tree.  Linux only (``/proc/PID/stat``, ``status``,
``smaps_rollup``, ``clear_refs``; proc(5)).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name: state is [0], ppid [1],
    utime [11], stime [12], cutime [13], cstime [14]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants that exist now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def cpu_seconds(pid: int) -> float:
    """utime+stime (all threads) plus reaped children's, over the process tree of ``pid``."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue
        total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def status_kb(pids: Iterable[int], names: Sequence[str]) -> dict[str, int]:
    """The ``/proc/PID/status`` fields ``names`` (VmRSS, VmHWM, RssAnon, ...) in kB, added
    up over ``pids``."""
    total = dict.fromkeys(names, 0)
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in total:
                total[name] += int(value.split()[0])
    return total


def pss_kb(pids: Iterable[int]) -> int:
    """Proportional set size (shared pages divided among their users) over ``pids``, in kB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "Pss":
                total += int(value.split()[0])
    return total


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM back to the current RSS (Linux 4.0+, needs ptrace rights over ``pid``)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Blank(dict[str, Any]):
    """format_map() values that render as wide as a column's format with no data."""

    def __missing__(self, key: str) -> Any:
        return 0


def render(columns: Sequence[tuple[str, str]], rows: Sequence[dict[str, Any]]) -> str:
    """A header, a rule and one line per row; the first column left-aligned.

    ``columns``: (title, format string over a row's keys).
    """
    widths = [len(fmt.format_map(_Blank())) for _, fmt in columns]
    header = "  ".join(
        title.rjust(w) if i else title.ljust(w)
        for i, ((title, _), w) in enumerate(zip(columns, widths, strict=True))
    )
    lines = [header, "-" * len(header)]
    lines += ["  ".join(fmt.format_map(values) for _, fmt in columns) for values in rows]
    return "\n".join(lines)
