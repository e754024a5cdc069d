"""User-supplied cloud images: a local file, or a URL with its sha256, downloaded once into
the cache and verified. A mismatch is an error that leaves no file behind."""

from __future__ import annotations

import hashlib
import http.client
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
from harness.runtime import process_alive, process_start_time

CHUNK = 1 << 20
#: The largest download accepted (MiB), unless BALLOON_HARNESS_DOWNLOAD_LIMIT_MIB says
#: otherwise: cloud images are a few hundred MiB; a server sending more is refused before
#: (announced) or as soon as (streamed) it passes the limit, not after filling the disk.
DEFAULT_LIMIT_MIB = 16384
LIMIT_ENV = "BALLOON_HARNESS_DOWNLOAD_LIMIT_MIB"


def download_limit() -> int:
    return int(os.environ.get(LIMIT_ENV) or DEFAULT_LIMIT_MIB) << 20


def _too_big(url: str, what: str, limit: int) -> ImageError:
    return ImageError(f"{url} {what}, more than the limit of {limit} bytes ({limit >> 20} MiB); "
                      f"nothing was kept.",
                      fix=f"check the URL; if the image really is that large, raise the limit with "
                          f"{LIMIT_ENV}=<MiB>.")


def _remove_stale_parts(folder: Path) -> None:
    """Remove `.part` files of downloads whose process is gone (`.NAME.part-PID[-START]`).
    Called under the download's lock, so no live download of the same file writes here."""
    for part in folder.glob(".*.part-*"):
        pid, _, start = part.name.rsplit(".part-", 1)[1].partition("-")
        try:
            alive = process_alive(int(pid), int(start) if start else None)
        except ValueError:
            alive = False
        if not alive:
            part.unlink(missing_ok=True)


def _download(url: str, part: Path, limit: int, progress: Callable[[int, int | None], None]) -> str:
    """Stream `url` into `part` (fsync'd), refusing sizes over `limit`; returns the sha256."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        if total is not None and total > limit:
            raise _too_big(url, f"announces {total} bytes", limit)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as out:
            done = 0
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > limit:
                    raise _too_big(url, f"sent more than {limit} bytes", limit)
                out.write(chunk)
                digest.update(chunk)
                progress(done, total)
            if total is not None and done != total:
                raise ImageError(f"Downloading {url} ended after {done} of the {total} bytes it "
                                 f"announced; nothing was kept.",
                                 fix="try again (the connection broke), or download the file "
                                     "yourself and pass its local path.")
            out.flush()
            os.fsync(out.fileno())  # the data is on disk before the name says it is complete
    return digest.hexdigest()


def fetch(url: str, sha256: str, cache: ImageCache,
          progress: Callable[[int, int | None], None] = lambda _done, _total: None,
          max_bytes: int | None = None) -> Path:
    """Return the cached file for (url, sha256), downloading and verifying it first if needed
    (at most `max_bytes`, default download_limit())."""
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
        _remove_stale_parts(folder)
        part = folder / f".{name}.part-{os.getpid()}-{process_start_time(os.getpid())}"
        try:
            got = _download(url, part, download_limit() if max_bytes is None else max_bytes, progress)
        except ImageError:
            part.unlink(missing_ok=True)
            raise
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            part.unlink(missing_ok=True)
            raise ImageError(f"Downloading {url} failed: {exc!r}.",
                             fix="check the URL and the network, or download the file yourself "
                                 "and pass its local path.") from None
        if got != sha256:
            part.unlink(missing_ok=True)
            raise ImageError(f"The file downloaded from {url} has sha256 {got}, "
                             f"not the expected {sha256}; it was deleted.",
                             fix="check the digest against the publisher's SHA256SUMS, or the "
                                 "URL (a moving 'latest' link changes its content).")
        part.rename(final)
        _fsync_dir(folder)
        (folder / "source.json").write_text(json.dumps({"url": url, "sha256": sha256}) + "\n")
    return final


def _fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

