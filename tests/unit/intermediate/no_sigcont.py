"""Run a command under a seccomp filter that makes every SIGCONT it sends fail with EPERM.

    python3 no_sigcont.py COMMAND [ARGS...]

Root may signal anything, so a failing resume cannot be produced by credentials alone; this
injects the fault at the narrowest point: the kernel refuses kill/tkill/tgkill/
pidfd_send_signal/rt_(tg)sigqueueinfo with signal 18 (SIGCONT) for this process and its
children (the daemon's watchdog inherits the filter too). SIGSTOP and everything else work.
Standard library only: the BPF program is written by hand (x86_64, checked at run time).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import struct
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
# BPF opcodes
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K
# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] -> args[i] low word at 16 + 8 i
NR, ARCH = 0, 4


def arg(i: int) -> int:
    return 16 + 8 * i


# x86_64 syscall numbers, and which argument holds the signal
SIGNAL_SYSCALLS = {62: 1, 200: 1, 234: 2, 424: 1, 129: 1, 297: 2}  # kill tkill tgkill pidfd_send_signal rt_sigqueueinfo rt_tgsigqueueinfo


def program() -> list[tuple[int, int, int, int]]:
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    prog = [(LD_W_ABS, 0, 0, ARCH), (JEQ_K, 1, 0, AUDIT_ARCH_X86_64), (RET_K, 0, 0, SECCOMP_RET_ALLOW),
            (LD_W_ABS, 0, 0, NR)]
    for nr, index in SIGNAL_SYSCALLS.items():
        # if nr matches: load the signal argument; SIGCONT -> deny, else allow
        prog += [(JEQ_K, 0, 3, nr), (LD_W_ABS, 0, 0, arg(index)), (JEQ_K, 0, 1, signal.SIGCONT),
                 (RET_K, 0, 0, deny), (RET_K, 0, 0, SECCOMP_RET_ALLOW)]
        # the 'no match' jump (3) lands after these five: on the next syscall's test
        prog[-5] = (JEQ_K, 0, 4, nr)
    prog.append((RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return prog


def install() -> None:
    if platform.machine() != "x86_64":
        raise SystemExit("no_sigcont.py: x86_64 only")
    filters = b"".join(struct.pack("=HBBI", *ins) for ins in program())
    buf = ctypes.create_string_buffer(filters)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(filters) // 8, ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
