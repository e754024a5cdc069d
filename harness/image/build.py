"""Building the default guest image offline from Debian's archive with mmdebstrap.

Steps: mmdebstrap the root (packages from recipe.toml), copy in the rootfs overlay and the
guest code, run customize.sh in the new root, take the kernel out, write the lean initrd,
turn the tree into an ext4 filesystem (`mkfs.ext4 -d`, no loop devices) and convert it to
qcow2. Everything happens in a temporary folder next to the final one, which appears by a
single rename once complete: a concurrent reader sees the whole image or none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from harness.errors import ImageError, MissingDependency
from harness.hosttools import require_tool
from harness.image.cache import ImageCache
from harness.image.guest_image import GuestImage, ImageKind
from harness.image.initrd import build_lean_initrd
from harness.image.recipe import Recipe
from harness.resources import guest_install_files

Progress = Callable[[str], None]

DISK, KERNEL, INITRD, MANIFEST = "disk.qcow2", "vmlinuz", "initrd.lean", "manifest.json"
LAST_USED = "last-used"
#: A build used within this time is never pruned: another checkout (another version of the
#: harness, with another recipe key) may be booting guests from it right now.
PRUNE_UNUSED_FOR_S = 24 * 3600


def image_dir(recipe: Recipe, cache: ImageCache) -> Path:
    return cache.images / f"{recipe.name}-{recipe.cache_key()[:16]}"


def load_built(recipe: Recipe, cache: ImageCache) -> GuestImage | None:
    folder = image_dir(recipe, cache)
    manifest = folder / MANIFEST
    if not manifest.exists():
        return None
    _touch(folder / LAST_USED)
    meta = json.loads(manifest.read_text())
    return GuestImage(
        kind=ImageKind.BUILT, disk=folder / DISK, disk_format="qcow2",
        identity=meta["key"], kernel=folder / KERNEL, initrd=folder / INITRD,
        lean_cmdline=recipe.lean_cmdline, cloud_init_cmdline=recipe.cloud_init_cmdline,
        description=f"{recipe.name} (built {meta['built']}, kernel {meta['kernel_version']})",
    )


def ensure_built_image(recipe: Recipe | None = None, cache: ImageCache | None = None,
                       progress: Progress = lambda _msg: None, force: bool = False) -> GuestImage:
    """Return the cached image for `recipe`, building it first if needed (once, under a lock)."""
    recipe = recipe or Recipe.named()
    cache = cache or ImageCache.default()
    if not force and (image := load_built(recipe, cache)):
        return image
    with cache.lock(f"image-{recipe.name}"):
        if not force and (image := load_built(recipe, cache)):
            return image  # another worker built it while we waited
        _build(recipe, cache, progress)
        prune(recipe, cache)
    image = load_built(recipe, cache)
    assert image is not None
    return image


def _mounts_below(folder: Path) -> list[str]:
    prefix = os.path.realpath(folder) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    # Field 5 is the mount point, octal-escaped (\040 for a space).
    points = [line.split()[4].encode().decode("unicode_escape") for line in lines]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _unmount_below(folder: Path) -> None:
    for point in _mounts_below(folder):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


def _touch(path: Path) -> None:
    try:
        path.touch()
    except OSError:
        pass  # a read-only cache (another user's): its owner's prune decides


def last_used(folder: Path) -> float:
    """When a build was last loaded (or, never loaded, built)."""
    for name in (LAST_USED, MANIFEST):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def prune(recipe: Recipe, cache: ImageCache, keep: int = 2, *, now: float | None = None,
          unused_for_s: float = PRUNE_UNUSED_FOR_S) -> list[Path]:
    """Keep the `keep` most recently used builds of this recipe and any used within
    `unused_for_s` (other checkouts of other versions share the cache and may be booting
    from theirs now); drop the rest and the saved guest states made from them."""
    now = time.time() if now is None else now
    builds = sorted((p for p in cache.images.glob(f"{recipe.name}-*") if (p / MANIFEST).exists()
                     and p.name[len(recipe.name) + 1:].isalnum()),
                    key=last_used, reverse=True)
    removed = [p for p in builds[keep:] if now - last_used(p) > unused_for_s]
    # Half-built trees of builds that were killed (SIGKILL, a CI timeout): ~0.7 GiB each.
    for work in cache.images.glob(f".{recipe.name}-*.tmp-*"):
        pid = work.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            removed.append(work)
    for folder in removed:
        if folder.name.startswith("."):
            _unmount_below(folder)  # a killed mmdebstrap leaves /proc, /sys, /dev/pts mounted
            if _mounts_below(folder):
                removed.remove(folder)
                continue  # never recurse into a mounted file system
        shutil.rmtree(folder, ignore_errors=True)
    for snapshot in cache.snapshots.iterdir():
        try:
            base = Path(json.loads((snapshot / "meta.json").read_text())["base_image"])
        except (OSError, ValueError, KeyError):
            continue
        if not base.exists():
            shutil.rmtree(snapshot, ignore_errors=True)
    return removed


def _build(recipe: Recipe, cache: ImageCache, progress: Progress) -> None:
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img"):
        require_tool(tool)
    if os.geteuid() != 0:
        raise MissingDependency(
            "Building the guest image needs root (mmdebstrap writes a root-owned tree and "
            "runs the customize script in a chroot).",
            fix="run `sudo .venv/bin/balloon-harness image build` once, or pass a cloud "
                "image with --vm-image PATH|URL#sha256=HEX.")
    final = image_dir(recipe, cache)
    work = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    try:
        root = work / "root"
        staging = _stage_overlay(recipe, work / "staging")
        progress(f"mmdebstrap {recipe.suite} ({len(recipe.packages)} packages) from {recipe.mirror}")
        _run(["mmdebstrap", f"--variant={recipe.variant}", "--mode=root",
              "--include=" + ",".join(recipe.packages),
              "--aptopt=Acquire::Languages \"none\"",
              "--dpkgopt=path-exclude=/usr/share/doc/*",
              "--dpkgopt=path-exclude=/usr/share/man/*",
              f"--customize-hook=sync-in {staging} /",
              "--customize-hook=chroot \"$1\" sh /customize.sh",
              recipe.suite, str(root), _mirror(recipe)], "mmdebstrap")
        kernel_version = _kernel_version(root)
        progress(f"kernel {kernel_version}: extracting it and the {recipe.initrd_kind} initrd")
        shutil.copy2(root / f"boot/vmlinuz-{kernel_version}", work / KERNEL)
        if recipe.initrd_kind == "lean":
            build_lean_initrd(root, kernel_version, recipe.initrd_modules,
                              recipe.folder / "initrd-init", work / INITRD, recipe.initrd_modules_async)
        else:
            shutil.copy2(root / f"boot/initrd.img-{kernel_version}", work / INITRD)
        progress(f"ext4 filesystem ({recipe.disk_size_mib} MiB) and qcow2")
        raw = work / "disk.raw"
        _run(["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(raw),
              f"{recipe.disk_size_mib}M"], "mkfs.ext4")
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(work / DISK)],
             "qemu-img convert")
        raw.unlink()
        shutil.rmtree(root)
        shutil.rmtree(staging)
        manifest = {"key": recipe.cache_key(), "recipe": recipe.name, "suite": recipe.suite,
                    "kernel_version": kernel_version, "packages": list(recipe.packages),
                    "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - started, 1)}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        progress(f"image ready in {final} ({manifest['build_seconds']} s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mirror(recipe: Recipe) -> str:
    # A CI runner with a local mirror or apt cache can point the build at it.
    return os.environ.get("BALLOON_HARNESS_MIRROR", recipe.mirror)


def _stage_overlay(recipe: Recipe, staging: Path) -> Path:
    """Everything copied into the new root before customize.sh runs."""
    shutil.copytree(recipe.folder / "rootfs", staging, symlinks=True)
    shutil.copy2(recipe.folder / "customize.sh", staging / "customize.sh")
    for src, rel in guest_install_files(workloads=False):
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    return staging


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib/modules").iterdir())
    if len(versions) != 1:
        raise ImageError(f"Expected one kernel in the image, found {versions or 'none'}.",
                         fix="list exactly one linux-image package in the recipe.")
    return versions[0]


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-25:])
        raise ImageError(f"{what} failed (exit {proc.returncode}) while building the guest "
                         f"image:\n{tail}",
                         fix="check that Debian's archive is reachable (or set "
                             "BALLOON_HARNESS_MIRROR) and rerun `balloon-harness image build`.")
