"""The host kernel's own word on OOM kills (/dev/kmsg): which process the OOM killer took and
for which memory cgroup. The budget cgroup's counter says how many; this says who, and it
also sees a kill inside a child group that is gone by the next sample (libvirt removes a
dead domain's group at once, taking its cgroup v1 counter with it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

KMSG = "/dev/kmsg"


@dataclass(frozen=True)
class OomKill:
    pid: int
    task: str
    #: The memory cgroup whose limit was hit, relative to the controller's root.
    oom_memcg: str
    task_memcg: str


def parse_oom_kill(message: str) -> OomKill | None:
    """`oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/bh-x-1,task_memcg=/bh-x-1/y,
    task=qemu-system-x86,pid=123,uid=0` -> OomKill (None for any other line)."""
    if not message.startswith("oom-kill:"):
        return None
    fields = dict(part.split("=", 1) for part in message[len("oom-kill:"):].split(",") if "=" in part)
    try:
        return OomKill(int(fields["pid"]), fields.get("task", "?"), fields.get("oom_memcg", ""),
                       fields.get("task_memcg", ""))
    except (KeyError, ValueError):
        return None


class KernelLog:
    """New /dev/kmsg records since open(), without blocking. Needs root (or CAP_SYSLOG)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls) -> KernelLog | None:
        try:
            fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None  # no access: the cgroup counters alone count the kills
        os.lseek(fd, 0, os.SEEK_END)  # only what happens from now on
        return cls(fd)

    def messages(self) -> list[str]:
        out = []
        while True:
            try:
                record = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except BrokenPipeError:
                continue  # records were overwritten before we read them: go on with the next
            except OSError:
                return out
            if not record:
                return out
            header, _, text = record.decode(errors="replace").partition(";")
            out.append(text.split("\n", 1)[0])

    def oom_kills(self, memcg: str) -> list[OomKill]:
        """Kills for the budget cgroup `memcg` (a path like /bh-123-1) or any group below it."""
        kills = []
        for message in self.messages():
            kill = parse_oom_kill(message)
            if kill and (kill.oom_memcg == memcg or kill.oom_memcg.startswith(memcg + "/")):
                kills.append(kill)
        return kills

    def close(self) -> None:
        os.close(self.fd)
