"""Guest RAM that restored guests share: QEMU's "VM templating" (as Kata Containers does it).

The template guest runs with its RAM in a file (memory-backend-file, share=on) and is saved
with the migration capability x-ignore-shared, so the saved state holds only the devices. A
restored guest maps that file copy-on-write (share=off) and loads only the device state:
nothing is read up front, pages come in from the page cache when the guest touches them,
and the pages no guest has changed stay shared by every guest restored from it (one copy
in the host's page cache), as with Firecracker's snapshot restore.

One trap, documented by QEMU itself (commit "Warn with ram_block_discard_range() on
MAP_PRIVATE file mapping"): to discard a page of file-backed RAM, QEMU first punches a hole
in the *file* (fallocate PUNCH_HOLE) and only then drops its own mapping (madvise
DONTNEED). With a shared template, a balloon inflation or a free page report in one guest
would zero that page in the template under every other guest. A restored guest's QEMU
therefore runs under a seccomp filter that turns exactly those punches (4 KiB balloon pages,
2 MiB-multiple free page reports) into successful no-ops: QEMU then drops the page from its
own mapping, which frees the guest's private copy (what Firecracker's balloon does too),
and the template stays whole. Its disks get discard=ignore, so QEMU's block layer never
needs a hole punched for them.
"""

from __future__ import annotations

import ctypes
import enum
import platform
from pathlib import Path

#: The id of the RAM backend on every command line: the migration stream names RAM blocks by
#: it, so template, restored guests and the streamed fallback must agree on it.
RAM_ID = "ram0"

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
AUDIT_ARCH_X86_64, NR_FALLOCATE = 0xC000003E, 285
FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x03
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO = 0x7FFF0000, 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_AND_K, BPF_RET_K = 0x20, 0x15, 0x54, 0x06
BALLOON_PAGE, REPORT_ALIGN = 4096, 2 << 20


class RamMode(enum.Enum):
    #: Anonymous RAM, loaded in full from the saved migration stream (the older, slower path).
    STREAMED = "streamed"
    #: The saved RAM image mapped copy-on-write; only the device state is loaded.
    SHARED = "shared"


def memory_backend(size_mib: int, image: Path | None = None, *, private: bool = True) -> list[str]:
    """The RAM of a guest: anonymous, or the file `image` (shared with the file for the
    template, copy-on-write over it for a restored guest)."""
    if image is None:
        backend = f"memory-backend-ram,id={RAM_ID},size={size_mib}M"
    else:
        backend = (f"memory-backend-file,id={RAM_ID},size={size_mib}M,mem-path={image},"
                   f"share={'off' if private else 'on'}")
    return ["-object", backend]


def shared_ram_supported() -> bool:
    """The discard guard below is an x86-64 seccomp program."""
    return platform.machine() == "x86_64"


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def discard_guard_program() -> list[tuple[int, int, int, int]]:
    """fallocate(fd, PUNCH_HOLE|KEEP_SIZE, off, len) with len one balloon page or a multiple
    of 2 MiB returns 0 without touching the file; every other system call runs as usual.
    Offsets into struct seccomp_data: nr 0, arch 4, args[1] 24, args[3] 40 (low words)."""
    return [
        (BPF_LD_W_ABS, 0, 0, 4),
        (BPF_JEQ_K, 0, 9, AUDIT_ARCH_X86_64),        # another ABI: allow
        (BPF_LD_W_ABS, 0, 0, 0),
        (BPF_JEQ_K, 0, 7, NR_FALLOCATE),
        (BPF_LD_W_ABS, 0, 0, 24),
        (BPF_JEQ_K, 0, 5, FALLOC_PUNCH_HOLE_KEEP_SIZE),
        (BPF_LD_W_ABS, 0, 0, 40),
        (BPF_JEQ_K, 2, 0, BALLOON_PAGE),             # a balloon page: pretend
        (BPF_AND_K, 0, 0, REPORT_ALIGN - 1),
        (BPF_JEQ_K, 0, 1, 0),                        # not a 2 MiB multiple: allow
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | 0),    # "errno 0": the call returns 0, undone
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]


class DiscardGuard:
    """Built before fork (no allocation in the child), installed between fork and exec."""

    def __init__(self) -> None:
        program = discard_guard_program()
        self._filters = (_SockFilter * len(program))(*[_SockFilter(*ins) for ins in program])
        self._prog = _SockFprog(len(program), self._filters)
        self._libc = ctypes.CDLL(None, use_errno=True)

    def install(self) -> None:
        if self._libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
                self._libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(self._prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "cannot install the RAM discard guard (seccomp)")
