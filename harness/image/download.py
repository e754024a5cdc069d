"""User-supplied cloud images: a local file, or a URL with its sha256, downloaded once into
the cache and verified. A mismatch is an error that leaves no file behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from harness.errors import ImageError
from harness.image.cache import ImageCache
from harness.image.guest_image import GuestImage, ImageKind

CHUNK = 1 << 20


def fetch(url: str, sha256: str, cache: ImageCache,
          progress: Callable[[int, int | None], None] = lambda _done, _total: None) -> Path:
    """Return the cached file for (url, sha256), downloading and verifying it first if needed."""
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ImageError(f"{sha256!r} is not a sha256 digest (64 hex digits).",
                         fix="copy the digest from the image's SHA256SUMS file.")
    folder = cache.downloads / sha256
    name = Path(urllib.parse.urlparse(url).path).name or "image"
    final = folder / name
    if final.exists():
        return final
    with cache.lock(f"download-{sha256}"):
        if final.exists():
            return final
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{name}.part-{os.getpid()}"
        digest = hashlib.sha256()
        try:
            with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                done = 0
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    progress(done, total)
        except (urllib.error.URLError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise ImageError(f"Downloading {url} failed: {exc}.",
                             fix="check the URL and the network, or download the file yourself "
                                 "and pass its local path.") from None
        if digest.hexdigest() != sha256:
            part.unlink(missing_ok=True)
            raise ImageError(f"The file downloaded from {url} has sha256 {digest.hexdigest()}, "
                             f"not the expected {sha256}; it was deleted.",
                             fix="check the digest against the publisher's SHA256SUMS, or the "
                                 "URL (a moving 'latest' link changes its content).")
        part.rename(final)
        (folder / "source.json").write_text(json.dumps({"url": url, "sha256": sha256}) + "\n")
    return final


def inspect_disk(path: Path) -> dict:
    """`qemu-img info` as a dict; a file QEMU cannot read as a disk is a clear error."""
    if not path.is_file():
        raise ImageError(f"The guest image {path} does not exist.",
                         fix="give the path of a qcow2 or raw cloud image, or leave --vm-image "
                             "unset to use the built Debian image.")
    proc = subprocess.run(["qemu-img", "info", "--output=json", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"QEMU cannot read {path} as a disk image: {proc.stderr.strip()}",
                         fix="download the image again (it may be truncated or corrupt).")
    info = json.loads(proc.stdout)
    if info.get("format") == "qcow2":
        check = subprocess.run(["qemu-img", "check", "-q", str(path)], capture_output=True, text=True)
        if check.returncode not in (0,):
            raise ImageError(f"{path} is a damaged qcow2 image: "
                             f"{(check.stderr or check.stdout).strip()[:500]}",
                             fix="download the image again; a corrupt image cannot be repaired "
                                 "safely.")
    return info


def cloud_image(path: Path, identity: str | None = None) -> GuestImage:
    info = inspect_disk(path)
    fmt = info.get("format", "raw")
    if identity is None:
        stat = path.stat()
        identity = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    return GuestImage(kind=ImageKind.CLOUD, disk=path.resolve(), disk_format=fmt,
                      identity=identity, description=f"cloud image {path.name} ({fmt})")

