"""Which TCP servers a process is talking to, read from ``/proc`` (Linux only).

Used to see which directory server the milter's LDAP connection is on:
the established IPv4 connections whose socket the process holds open.
"""

from __future__ import annotations

import os
from pathlib import Path

_ESTABLISHED = "01"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def established_remote_ports(pid: int, host: str = "127.0.0.1") -> set[int]:
    """Remote ports of the established TCP connections to *host* held by process *pid*."""
    inodes = _socket_inodes(pid)
    wanted = "".join(f"{int(part):02X}" for part in reversed(host.split(".")))
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        address, _, port = remote.partition(":")
        if state == _ESTABLISHED and inode in inodes and address == wanted:
            ports.add(int(port, 16))
    return ports
