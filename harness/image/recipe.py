"""An image recipe: a folder under guest_images/ with recipe.toml, a rootfs overlay, a
customize script run in the new root and the lean initrd's /init. Its cache key hashes all
of that, so any change rebuilds. The guest code (harness/guest) is baked into the image too
but left out of the key: it is synced into every guest that uses it, and into the template
before a state is saved (whose key has the code's digest), so a daemon edit costs a new saved
state (a boot, ~15 s), not an image build (minutes)."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError
from harness.resources import guest_images_dir

#: The guest image tests boot unless told otherwise.
DEFAULT_RECIPE = "debian-bookworm"

#: Bump when the build procedure itself changes in a way the recipe files do not show.
BUILDER_VERSION = "2"


@dataclass(frozen=True)
class Recipe:
    folder: Path
    name: str
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    disk_size_mib: int
    #: "lean": the harness's busybox initrd; "debian": the kernel package's own initramfs.
    initrd_kind: str
    initrd_modules: tuple[str, ...]
    #: Loaded by the lean initrd in background jobs while the root disk mounts.
    initrd_modules_async: tuple[str, ...]
    lean_cmdline: tuple[str, ...]
    cloud_init_cmdline: tuple[str, ...]

    @classmethod
    def load(cls, folder: Path) -> Recipe:
        path = folder / "recipe.toml"
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"Cannot read image recipe {path}: {exc}.",
                              fix="restore the file from git.") from exc
        try:
            image, initrd, boot = data["image"], data.get("initrd", {}), data.get("boot", {})
            return cls(
                folder=folder, name=image["name"], suite=image["suite"], mirror=image["mirror"],
                variant=image.get("variant", "apt"), packages=tuple(image["packages"]),
                disk_size_mib=int(image["disk_size_mib"]),
                initrd_kind=initrd.get("kind", "lean"),
                initrd_modules=tuple(initrd.get("modules", ())),
                initrd_modules_async=tuple(initrd.get("modules_async", ())),
                lean_cmdline=tuple(boot.get("lean_cmdline", ())),
                cloud_init_cmdline=tuple(boot.get("cloud_init_cmdline", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"Image recipe {path} is missing or mistypes {exc}.",
                              fix="compare it with guest_images/debian-bookworm/recipe.toml.") from exc

    @classmethod
    def named(cls, name: str = DEFAULT_RECIPE) -> Recipe:
        folder = guest_images_dir() / name
        if not folder.is_dir():
            known = ", ".join(sorted(p.name for p in guest_images_dir().iterdir() if p.is_dir()))
            raise ConfigError(f"No image recipe named {name!r}.", fix=f"use one of: {known}.")
        return cls.load(folder)

    def input_files(self) -> list[tuple[str, Path]]:
        """Every file whose content defines the image, with a stable label."""
        files = [(f"recipe/{p.relative_to(self.folder).as_posix()}", p)
                 for p in sorted(self.folder.rglob("*")) if p.is_file()]
        shared = guest_images_dir() / "files"
        if shared.is_dir():
            files += [(f"files/{p.relative_to(shared).as_posix()}", p)
                      for p in sorted(shared.rglob("*")) if p.is_file()]
        return files

    def cache_key(self) -> str:
        digest = hashlib.sha256(f"builder={BUILDER_VERSION}\n".encode())
        for label, path in self.input_files():
            digest.update(f"{label}\0{path.stat().st_mode & 0o111}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()
