"""Where the non-Python parts live: in a checkout they sit at the repository root
(guest_images/, workloads/); in an installed wheel they are packaged under harness/_data/."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (PACKAGE_DIR / "_data" / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"balloon-harness data folder {name!r} is missing from "
                            f"{PACKAGE_DIR / '_data'} and {PACKAGE_DIR.parent}; reinstall "
                            f"balloon-harness (pip install -e .) from a complete checkout")


def guest_images_dir() -> Path:
    return data_dir("guest_images")


def workloads_dir() -> Path:
    return data_dir("workloads")


def guest_code_files() -> list[tuple[Path, str]]:
    """The standard-library-only code installed into guests: (source, path under the
    guest's /opt/balloon-harness). harness/__init__.py comes along so that
    `python3 -m harness.guest.intermediate` resolves the same package path as on the host."""
    files = [(PACKAGE_DIR / "__init__.py", "harness/__init__.py")]
    guest = PACKAGE_DIR / "guest"
    for path in sorted(guest.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        files.append((path, f"harness/guest/{path.relative_to(guest).as_posix()}"))
    return files


def guest_install_files(*, workloads: bool) -> list[tuple[Path, str]]:
    """What the guest gets, as (source, path relative to the guest's /): the guest code and
    its systemd units (baked into the built image and synced again at run time), plus, with
    `workloads`, the workload programs (synced at run time only)."""
    files = [(src, f"opt/balloon-harness/{rel}") for src, rel in guest_code_files()]
    if workloads:
        files += [(p, f"opt/balloon-harness/workloads/{p.name}") for p in sorted(workloads_dir().glob("*.py"))]
    units = guest_images_dir() / "files"
    if units.is_dir():
        files += [(p, f"etc/systemd/system/{p.name}") for p in sorted(units.glob("*.service"))]
    return files
