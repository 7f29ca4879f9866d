"""Run a command under an approximation of the systemd unit's memory and system call sandbox.

Usage: ``python _sandbox.py ALLOWED_SYSCALLS_FILE COMMAND [ARG...]``

There is no systemd as PID 1 here, so the unit cannot be started. This applies, to this process
and everything it executes, the parts of the unit that could break CPython and uvloop:

* ``MemoryDenyWriteExecute=yes``: the kernel's own ``PR_SET_MDWE`` with
  ``PR_MDWE_REFUSE_EXEC_GAIN`` (Linux 6.3+), the mechanism systemd 253+ uses; a mapping can never
  be writable and executable, nor become executable. Exit status 3 if the kernel lacks it.
* ``SystemCallFilter=`` with ``SystemCallErrorNumber=EPERM``: a seccomp allow-list of the names
  in ALLOWED_SYSCALLS_FILE (one per line, expanded from the unit by the test); every other system
  call fails with EPERM. Stricter than systemd, which answers ENOSYS for calls newer than it knows.
* ``RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX``: socket() for other families fails
  (EPERM here, EAFNOSUPPORT under systemd).
* ``NoNewPrivileges=yes`` (libseccomp sets it when loading the filter).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import sys
from pathlib import Path

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
NR_SCMP_ERROR = -1
EXIT_NO_MDWE = 3


def scmp_act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


class ScmpArgCmp(ctypes.Structure):
    # The layout of libseccomp's struct scmp_arg_cmp.
    _fields_ = (
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    )


def deny_write_execute(libc: ctypes.CDLL) -> None:
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(f"PR_SET_MDWE failed: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        sys.exit(EXIT_NO_MDWE)


def load_filter(allowed: list[str]) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(ScmpArgCmp),
    )
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    ctx = lib.seccomp_init(scmp_act_errno(errno.EPERM))
    if not ctx:
        sys.exit("seccomp_init failed")
    for name in allowed:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number == NR_SCMP_ERROR or name == "socket":
            continue  # not a system call of this architecture; socket() is handled below
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, None) != 0:
            sys.exit(f"seccomp_rule_add({name}) failed")
    if "socket" in allowed:
        number = lib.seccomp_syscall_resolve_name(b"socket")
        for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            cmp = ScmpArgCmp(0, SCMP_CMP_EQ, int(family), 0)
            if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 1, ctypes.byref(cmp)) != 0:
                sys.exit("seccomp_rule_add(socket) failed")
    if lib.seccomp_load(ctx) != 0:
        sys.exit(f"seccomp_load failed: {os.strerror(ctypes.get_errno())}")


def main() -> None:
    allowed_file, *command = sys.argv[1:]
    allowed = Path(allowed_file).read_text(encoding="utf-8").split()
    deny_write_execute(ctypes.CDLL(None, use_errno=True))
    load_filter(allowed)
    os.execv(command[0], command)  # noqa: S606 - the test's own command


if __name__ == "__main__":
    main()
