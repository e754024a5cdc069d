"""A repro bundle: one tar.gz with everything another person needs to see and re-run a run
(or a failed test's artifacts): its files as they are (scenario, ledger, events, plot, dmesg,
serial log, QMP traffic, command line, libvirt XML), the environment's facts, and a manifest.

Opening a bundle treats it as untrusted input: only plain files and folders, no absolute or
`..` paths, no links of any kind, no device files, at most MAX_MEMBERS entries, MAX_FILE
bytes per file and MAX_TOTAL bytes in all (counted on the decompressed stream, so a
compression bomb stops at the limit)."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.envfacts import FACTS_FILE, EnvFacts, gather
from harness.errors import ConfigError, HarnessError
from harness.machine.base import CMDLINE, QMP_LOG, SERIAL_LOG
from harness.scenario.evidence import HARNESS_EVENTS, HOST_LEDGER, RUN_META

MANIFEST = "bundle.json"
FORMAT = 1
MAX_MEMBERS = 10_000
MAX_FILE = 256 * 1024 * 1024
MAX_TOTAL = 512 * 1024 * 1024

#: What a run's bundle should hold (a missing one is listed in the manifest, not an error:
#: a killed run has no plot, a guest that stopped answering no dmesg).
RUN_ITEMS = {"scenario": "scenario.toml", "run": RUN_META, "harness events": HARNESS_EVENTS,
             "host ledger": HOST_LEDGER, "ledger": "ledger.csv", "summary": "summary.json", "plot": "plot.png"}
VM_ITEMS = {"dmesg": "dmesg.txt", "serial log": SERIAL_LOG, "QMP traffic": QMP_LOG, "command line": CMDLINE}


class UnsafeBundle(HarnessError):
    """A bundle that could write outside its folder, or is too big to be one."""


@dataclass
class Bundle:
    root: Path
    manifest: dict
    facts: EnvFacts | None
    runs: list[Path] = field(default_factory=list)


def run_folders(folder: Path, depth: int = 3) -> list[Path]:
    """The run folders in `folder`: itself, or below it (a compare folder's variants, a failed
    test's runs/), in name order."""
    if (folder / RUN_META).is_file():
        return [folder]
    if depth == 0:
        return []
    found = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        found += run_folders(child, depth - 1)
    return found


def vm_folders(folder: Path) -> list[Path]:
    """Folders holding a VM's evidence (its serial log or command line)."""
    return sorted({p.parent for name in (SERIAL_LOG, CMDLINE) for p in folder.rglob(name)
                   if not p.is_symlink()})


def contents(folder: Path) -> dict:
    """Which of the expected items are present, per run and per VM folder (relative paths)."""
    out: dict = {"runs": {}, "vms": {}}
    for run in run_folders(folder):
        rel = run.relative_to(folder).as_posix()
        out["runs"][rel] = {item: (run / name).is_file() for item, name in RUN_ITEMS.items()}
    for vm in vm_folders(folder):
        items = {item: (vm / name).is_file() for item, name in VM_ITEMS.items()}
        items["libvirt XML"] = (vm / "domain.xml").is_file()
        out["vms"][vm.relative_to(folder).as_posix()] = items
    return out


def guest_kernel_from_logs(folder: Path) -> str | None:
    """"Linux version X" from a dmesg or serial log in the folder (a cloud image's kernel)."""
    for path in sorted(folder.rglob("dmesg.txt")) + sorted(folder.rglob(SERIAL_LOG)):
        with path.open(errors="replace") as fh:
            for line in fh:
                if "Linux version " in line:
                    return line.split("Linux version ", 1)[1].split()[0]
    return None


def facts_for(folder: Path) -> EnvFacts:
    """The run's own facts when it wrote them; else gathered now, and marked so."""
    for candidate in [folder, *run_folders(folder)]:
        facts = EnvFacts.load(candidate / FACTS_FILE)
        if facts is not None:
            return facts
    facts = gather(gathered="bundle")
    kernel = guest_kernel_from_logs(folder)
    return dataclasses.replace(facts, guest_kernel=kernel) if kernel else facts


def _files(folder: Path) -> list[Path]:
    """Regular files under `folder`; links, sockets and fifos are not evidence."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return out


def default_output(source: Path) -> Path:
    return Path.cwd() / f"{source.resolve().name}.bundle.tar.gz"


def write_bundle(source: Path, output: Path | None = None) -> tuple[Path, dict]:
    """Pack a run, compare or artifact folder into one tar.gz; returns its path and manifest."""
    if not source.is_dir():
        raise ConfigError(f"{source} is not a folder.",
                          fix="give a run folder (printed by `run`/`compare`) or a failed test's artifact folder.")
    runs = run_folders(source)
    if not runs and not vm_folders(source):
        raise ConfigError(f"{source} holds neither a run (run.json) nor a VM's evidence (serial.log, cmdline.txt).",
                          fix="give a run folder (printed by `run`/`compare`) or a failed test's artifact folder "
                              "(<--vm-artifacts>/<test id>/).")
    files = _files(source)
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL or len(files) > MAX_MEMBERS:
        biggest = sorted(files, key=lambda p: -p.stat().st_size)[:3]
        raise ConfigError(f"{source} holds {len(files)} files, {total / 2**20:.0f} MiB: more than a bundle "
                          f"takes ({MAX_MEMBERS} files, {MAX_TOTAL / 2**20:.0f} MiB). The biggest: "
                          + ", ".join(f"{p.relative_to(source)} ({p.stat().st_size / 2**20:.0f} MiB)" for p in biggest),
                          fix="bundle one run folder rather than a folder of many, or remove what is not evidence.")
    facts = facts_for(source)
    manifest = {"format": FORMAT, "made": time.time(), "source": source.resolve().name,
                "kind": "run" if runs == [source] else "runs" if runs else "artifacts",
                "runs": [r.relative_to(source).as_posix() or "." for r in runs], "contents": contents(source)}
    output = output or default_output(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in ((MANIFEST, json.dumps(manifest, indent=2) + "\n"), (FACTS_FILE, facts.to_json())):
            if name == FACTS_FILE and (source / FACTS_FILE).is_file():
                continue  # the run's own, added with its files
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data.encode()), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data.encode()))
        for path in files:
            rel = path.relative_to(source).as_posix()
            if rel != MANIFEST:
                tar.add(path, arcname=rel, recursive=False)
    tmp.replace(output)
    return output, manifest


# -- opening -------------------------------------------------------------------------------------
class _Limited(io.RawIOBase):
    """The decompressed stream, cut off with an error past `limit` bytes."""

    def __init__(self, raw, limit: int, name: str) -> None:
        self.raw, self.limit, self.name, self.count = raw, limit, name, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size if size is not None and size >= 0 else self.limit + 1)
        self.count += len(data)
        if self.count > self.limit:
            raise UnsafeBundle(f"{self.name} unpacks to more than {self.limit / 2**20:.0f} MiB: refused.",
                               fix="a bundle of one run is a few MiB; ask for the bundle of one run folder.")
        return data


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why this entry cannot be unpacked safely, or None."""
    name = member.name
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return f"{name!r} is an absolute or odd path"
    if any(part in ("..", "") for part in name.rstrip("/").split("/")):
        return f"{name!r} leads out of the bundle's folder"
    if member.issym() or member.islnk():
        return f"{name!r} is a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return f"{name!r} is not a plain file or folder (a device, fifo or other special file)"
    return None


def open_bundle(path: Path, dest: Path, *, max_members: int = MAX_MEMBERS, max_file: int = MAX_FILE,
                max_total: int = MAX_TOTAL) -> Bundle:
    """Unpack a bundle into the empty folder `dest`, refusing anything unsafe (see above)."""
    if not path.is_file():
        raise ConfigError(f"{path} is not a file.", fix="give the .tar.gz `balloon-harness bundle` wrote.")
    fix = "a bundle made by `balloon-harness bundle` holds only files and folders; do not unpack this one."
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    try:
        with gzip.open(path, "rb") as raw, tarfile.open(fileobj=_Limited(raw, max_total + 1024 * 1024, str(path)),
                                                        mode="r|") as tar:
            for member in tar:
                count += 1
                if count > max_members:
                    raise UnsafeBundle(f"{path} has more than {max_members} entries: refused.", fix=fix)
                problem = member_problem(member)
                if problem:
                    raise UnsafeBundle(f"{path} is refused: {problem}.", fix=fix)
                if member.size > max_file:
                    raise UnsafeBundle(f"{path} is refused: {member.name!r} is {member.size / 2**20:.0f} MiB "
                                       f"(at most {max_file / 2**20:.0f} MiB a file).", fix=fix)
                target = dest.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                # O_EXCL|O_NOFOLLOW: a repeated name or anything already there is refused.
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(1024 * 1024):
                        out.write(chunk)
    except FileExistsError as exc:
        raise UnsafeBundle(f"{path} is refused: {exc.filename} appears twice.", fix=fix) from None
    except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ConfigError(f"{path} is not a readable bundle: {exc}.",
                          fix="give the .tar.gz `balloon-harness bundle` wrote (is the file complete?).") from None
    if not (dest / MANIFEST).is_file():
        raise ConfigError(f"{path} has no {MANIFEST}: it is not a balloon-harness bundle.",
                          fix="make one with `balloon-harness bundle RUN_DIR`.")
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
        runs = [dest.joinpath(*PurePosixPath(r).parts) for r in manifest.get("runs", [])]
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(f"{path}: its {MANIFEST} is not valid.", fix="make the bundle again.") from None
    return Bundle(dest, manifest, EnvFacts.load(dest / FACTS_FILE), [r for r in run_folders(dest) if r in runs])


def missing_items(manifest: dict) -> list[str]:
    """The expected items a bundle lacks, as "where: item" (libvirt XML only for libvirt VMs)."""
    out = []
    for group in ("runs", "vms"):
        for where, items in (manifest.get("contents") or {}).get(group, {}).items():
            out += [f"{where}: {item}" for item, present in items.items() if not present and item != "libvirt XML"]
    return out
