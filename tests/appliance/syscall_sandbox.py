"""Run a command under the confinement imchat.service asks systemd for, as far as it can be
had without systemd: the unit's SystemCallFilter= lines as a seccomp filter (EPERM otherwise,
like SystemCallErrorNumber=EPERM), RestrictAddressFamilies= (socket() allowed for those families
only, as systemd's own seccomp rule does), MemoryDenyWriteExecute= (the kernel's PR_SET_MDWE,
the same rule) and NoNewPrivileges=.

    /usr/bin/python3 syscall_sandbox.py UNIT_FILE COMMAND [ARGS...]

Needs libseccomp's Python binding (Debian: apt-get install python3-seccomp), which is why it
runs under the system Python rather than the project's virtualenv.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import seccomp

PR_SET_NO_NEW_PRIVS = 38
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def expand(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall group (or a single call), recursively."""
    if not group.startswith("@"):
        return {group}
    seen = set() if seen is None else seen
    if group in seen:
        return set()
    seen.add(group)
    listing = subprocess.run(["systemd-analyze", "syscall-filter", group], check=True,
                             capture_output=True, text=True).stdout
    calls: set[str] = set()
    for line in listing.splitlines()[1:]:
        name = line.strip()
        if name and not name.startswith("#"):
            calls |= expand(name, seen)
    return calls


def unit_settings(unit: Path) -> tuple[set[str], bool, bool, list[int]]:
    allowed: set[str] | None = None
    mdwe = nnp = False
    families: list[int] = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "RestrictAddressFamilies":
            families += [getattr(socket, name) for name in value.split()]
        elif key == "SystemCallFilter":
            names = set().union(*(expand(n) for n in value.lstrip("~").split()))
            current = allowed or set()
            allowed = current - names if value.startswith("~") else current | names
        elif key == "MemoryDenyWriteExecute":
            mdwe = value == "yes"
        elif key == "NoNewPrivileges":
            nnp = value == "yes"
    if allowed is None:
        raise SystemExit(f"{unit}: no SystemCallFilter=")
    return allowed, mdwe, nnp, families


def main() -> None:
    unit, command = Path(sys.argv[1]), sys.argv[2:]
    allowed, mdwe, nnp, families = unit_settings(unit)
    libc = ctypes.CDLL(None, use_errno=True)
    if nnp and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_NO_NEW_PRIVS) failed")
    if mdwe and libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_MDWE) failed (Linux 6.3 or later is needed)")
    rules = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    # systemd always lets a service exec, exit and return from signal handlers.
    for call in sorted(allowed | {"execve", "exit", "exit_group", "rt_sigreturn"}):
        if call == "socket" and families:
            continue  # below, per address family
        try:
            rules.add_rule(seccomp.ALLOW, call)
        except (RuntimeError, ValueError):  # not a call on this architecture
            continue
    if "socket" in allowed:
        for family in families:
            rules.add_rule(seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, family))
    rules.load()
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
