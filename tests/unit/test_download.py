"""The cloud-image download path, against a real local HTTP server."""

import hashlib
import http.server
import subprocess
import threading
from functools import partial

import pytest

from harness.errors import ConfigError, ImageError
from harness.image.cache import ImageCache
from harness.image.download import fetch, inspect_disk
from harness.image.guest_image import ImageKind
from harness.image.resolve import resolve_image


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on a free port; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def small_qcow2(served):
    root, base = served
    path = root / "cloud.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path, f"{base}/cloud.qcow2", hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_verifies_and_caches(tmp_path, small_qcow2):
    _, url, digest = small_qcow2
    cache = ImageCache(tmp_path / "cache")
    got = fetch(url, digest, cache)
    assert hashlib.sha256(got.read_bytes()).hexdigest() == digest
    first_mtime = got.stat().st_mtime_ns
    assert fetch(url, digest, cache).stat().st_mtime_ns == first_mtime  # not downloaded again


def test_digest_mismatch_is_an_error_and_leaves_nothing(tmp_path, small_qcow2):
    _, url, digest = small_qcow2
    cache = ImageCache(tmp_path / "cache")
    wrong = "0" * 64
    with pytest.raises(ImageError) as info:
        fetch(url, wrong, cache)
    assert digest in str(info.value) and wrong in str(info.value) and "Fix:" in str(info.value)
    assert not any(p.is_file() for p in (cache.downloads).rglob("*"))


def test_missing_url_is_a_clear_error(tmp_path, served):
    _, base = served
    with pytest.raises(ImageError, match="404"):
        fetch(f"{base}/nope.qcow2", "a" * 64, ImageCache(tmp_path / "cache"))


def test_resolve_url_requires_sha256(tmp_path, small_qcow2):
    _, url, digest = small_qcow2
    with pytest.raises(ConfigError, match="sha256"):
        resolve_image(url, ImageCache(tmp_path / "cache"))
    image = resolve_image(f"{url}#sha256={digest}", ImageCache(tmp_path / "cache"))
    assert image.kind is ImageKind.CLOUD and image.disk_format == "qcow2" and image.identity == digest


def test_corrupt_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(bad), "64M"], check=True)
    data = bytearray(bad.read_bytes())
    data[0x28:0x30] = b"\xff" * 8  # l1_table_offset far beyond the file
    bad.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="download the image again"):
        inspect_disk(bad)


def test_missing_local_image(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        resolve_image(str(tmp_path / "absent.qcow2"), ImageCache(tmp_path / "cache"))
