"""Unix-socket peers from the kernel's sock_diag netlink interface (what `ss -xp` shows).

/proc/PID/fd only tells which socket inodes a process holds; which inode is connected to which
is only known to the kernel: NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY for AF_UNIX with
UDIAG_SHOW_PEER returns a UNIX_DIAG_PEER attribute (the peer's inode) for each socket.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

log = logging.getLogger(__name__)

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3

UDIAG_SHOW_PEER = 0x4
UDIAG_SHOW_ICONS = 0x8
UNIX_DIAG_PEER = 2
UNIX_DIAG_ICONS = 3

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")  # len, type


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _request(seq: int) -> bytes:
    body = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 0xFFFFFFFF, 0, UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS, 0xFFFFFFFF, 0xFFFFFFFF
    )
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def _parse_attrs(data: bytes) -> tuple[int | None, list[int]]:
    peer: int | None = None
    icons: list[int] = []
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        payload = data[offset + _RTATTR.size : offset + length]
        if kind == UNIX_DIAG_PEER and len(payload) >= 4:
            peer = struct.unpack_from("=I", payload)[0]
        elif kind == UNIX_DIAG_ICONS:
            icons = list(struct.unpack(f"={len(payload) // 4}I", payload[: len(payload) // 4 * 4]))
        offset += _align4(length)
    return peer, icons


def dump_unix_sockets() -> list[tuple[int, int | None, list[int]]]:
    """(inode, peer inode or None, inodes of clients queued on it) for every unix socket."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    try:
        sock.settimeout(2.0)
        seq = os.getpid() & 0xFFFF
        sock.send(_request(seq))
        result: list[tuple[int, int | None, list[int]]] = []
        while True:
            data = sock.recv(1 << 16)
            if not data:
                return result
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    return result
                if kind == NLMSG_DONE:
                    return result
                if kind == NLMSG_ERROR:
                    err = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    raise OSError(-err, os.strerror(-err) if err else "netlink error")
                if kind == SOCK_DIAG_BY_FAMILY:
                    body = data[offset + _NLMSGHDR.size : offset + length]
                    _fam, _type, _state, _pad, inode, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(body)
                    peer, icons = _parse_attrs(body[_UNIX_DIAG_MSG.size :])
                    result.append((inode, peer, icons))
                offset += _align4(length)
    finally:
        sock.close()


class UnixPeers:
    """Which unix socket inodes are connected to which (symmetric)."""

    def __init__(self, links: dict[int, set[int]], available: bool = True) -> None:
        self._links = links
        self.available = available

    def linked(self, inode: int) -> set[int]:
        return self._links.get(inode, set())

    @classmethod
    def read(cls) -> UnixPeers:
        try:
            sockets = dump_unix_sockets()
        except OSError as exc:
            # No unix_diag in this kernel: we lose socket dependencies, not correctness.
            log.warning("sock_diag for AF_UNIX unavailable (%s); unix-socket dependencies ignored", exc)
            return cls({}, available=False)
        links: dict[int, set[int]] = {}

        def link(a: int, b: int) -> None:
            if a and b and a != b:
                links.setdefault(a, set()).add(b)
                links.setdefault(b, set()).add(a)

        for inode, peer, icons in sockets:
            if peer:
                link(inode, peer)
            # A listener's queue (ICONS) names the clients whose connections are not accepted
            # yet (their own peer is an embryo socket without an inode): link them to it.
            for client in icons:
                link(inode, client)
        return cls(links)
