"""The lean initrd: an uncompressed newc cpio with busybox, a handful of kernel modules and
an /init script. Debian's initramfs-tools initrd is ~13 MB of zstd holding "most" modules;
decompressing and probing all that under TCG costs seconds this guest never needs."""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ImageError


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def write_newc(entries: Iterable[CpioEntry], out: Path) -> None:
    """Write the "new ASCII" cpio format the kernel unpacks (Documentation/driver-api/early-userspace)."""
    with out.open("wb") as fh:
        ino = 1
        for entry in [*entries, CpioEntry("TRAILER!!!", 0)]:
            name = entry.name.encode() + b"\0"
            fields = (ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0,
                      entry.rdev[0], entry.rdev[1], len(name), 0)
            header = b"070701" + b"".join(b"%08X" % value for value in fields) + name
            fh.write(header + _pad(len(header)))
            fh.write(entry.data + _pad(len(entry.data)))
            ino += 1


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def module_load_order(modules_dir: Path, wanted: Iterable[str]) -> list[Path]:
    """Resolve `wanted` module names to .ko paths, dependencies first (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    dep_file = modules_dir / "modules.dep"
    try:
        lines = dep_file.read_text().splitlines()
    except OSError as exc:
        raise ImageError(f"Cannot read {dep_file}: {exc}.", fix="rebuild the image.") from exc
    for line in lines:
        target, _, rest = line.partition(":")
        deps[target] = rest.split()
        name = Path(target).name.split(".ko")[0].replace("-", "_")
        by_name[name] = target

    order: list[str] = []

    def visit(rel: str) -> None:
        for dep in deps.get(rel, []):
            visit(dep)
        if rel not in order:
            order.append(rel)

    for name in wanted:
        rel = by_name.get(name.replace("-", "_"))
        if rel is None:
            raise ImageError(f"Kernel module {name!r} is not in {dep_file}.",
                             fix="check [initrd] modules in the recipe against the kernel.")
        visit(rel)
    return [modules_dir / rel for rel in order]


def build_lean_initrd(rootfs: Path, kernel_version: str, modules: Iterable[str],
                      init_script: Path, out: Path, modules_async: Iterable[str] = ()) -> None:
    """/modules.order: what must load before the root disk mounts, one name per line.
    /modules.async: one line per background job, the modules of one chain in load order
    (without those already in /modules.order)."""
    modules_dir = rootfs / "lib/modules" / kernel_version
    kos = module_load_order(modules_dir, modules)
    early = set(kos)
    chains = [[ko for ko in module_load_order(modules_dir, [name]) if ko not in early] for name in modules_async]
    busybox = rootfs / "bin/busybox"
    if not busybox.exists():
        raise ImageError(f"{busybox} is missing.", fix="add busybox-static to the recipe's packages.")
    entries = [CpioEntry(d, stat.S_IFDIR | 0o755)
               for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules")]
    entries += [
        CpioEntry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        CpioEntry("init", stat.S_IFREG | 0o755, init_script.read_bytes()),
        # The kernel opens /dev/console before /init runs; devtmpfs is mounted only later.
        CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
    ]
    packed: set[Path] = set()
    for ko in [*kos, *(ko for chain in chains for ko in chain)]:
        if ko in packed:
            continue
        if ko.suffix != ".ko":
            raise ImageError(f"{ko.name} is compressed; the lean initrd loads plain .ko files.",
                             fix="use a kernel package with uncompressed modules.")
        packed.add(ko)
        entries.append(CpioEntry(f"lib/modules/{ko.name}", stat.S_IFREG | 0o644, ko.read_bytes()))
    order = "".join(f"{ko.stem}\n" for ko in kos)
    jobs = "".join(" ".join(ko.stem for ko in chain) + "\n" for chain in chains if chain)
    entries.append(CpioEntry("modules.order", stat.S_IFREG | 0o644, order.encode()))
    entries.append(CpioEntry("modules.async", stat.S_IFREG | 0o644, jobs.encode()))
    write_newc(entries, out)
