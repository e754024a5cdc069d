"""The cloud-image download path, against a real local HTTP server."""

import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from functools import partial

import pytest

from harness.errors import ConfigError, ImageError
from harness.image.cache import ImageCache
from harness.image.download import fetch, inspect_disk
from harness.image.guest_image import ImageKind
from harness.image.resolve import resolve_image
from harness.waiting import wait_for


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


class _Liar(http.server.BaseHTTPRequestHandler):
    """Serves /<announced>/<sent>: a response that announces `announced` bytes (none if 0,
    then the end is marked by closing) and sends `sent`."""

    sent_bytes: list[int] = []

    def do_GET(self):
        announced, sent = (int(x) for x in self.path.strip("/").split("/")[:2])
        self.send_response(200)
        if announced:
            self.send_header("Content-Length", str(announced))
        self.end_headers()
        done = 0
        try:
            while done < sent:
                chunk = b"x" * min(65536, sent - done)
                self.wfile.write(chunk)
                done += len(chunk)
        except OSError:
            pass  # the client hung up: what a size limit should make it do
        finally:
            _Liar.sent_bytes.append(done)
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def liar():
    _Liar.sent_bytes.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Liar)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def no_files(cache):
    return not [p for p in cache.downloads.rglob("*") if p.is_file()]


def test_announced_size_over_the_limit_is_refused_before_downloading(tmp_path, liar):
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError) as info:
        fetch(f"{liar}/{64 << 20}/{64 << 20}/big.qcow2", "a" * 64, cache, max_bytes=1 << 20)
    assert "67108864 bytes" in str(info.value) and "BALLOON_HARNESS_DOWNLOAD_LIMIT_MIB" in info.value.fix
    assert no_files(cache)


def test_unannounced_stream_is_cut_at_the_limit(tmp_path, liar):
    """No Content-Length: the download stops once the limit is passed, not at the end."""
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError, match="more than the limit"):
        fetch(f"{liar}/0/{64 << 20}/endless.qcow2", "a" * 64, cache, max_bytes=1 << 20)
    assert no_files(cache)
    sent = wait_for(lambda: _Liar.sent_bytes or None, timeout=60, what="the server to finish its response")
    assert sent[0] < 64 << 20, "the whole stream was read"


def test_truncated_download_is_a_clear_error(tmp_path, liar):
    """The server announces more than it sends, then hangs up."""
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageError) as info:
        fetch(f"{liar}/{1 << 20}/{1 << 19}/cut.qcow2", "a" * 64, cache)
    assert f"{1 << 19} of the {1 << 20} bytes" in str(info.value) and "Fix:" in str(info.value)
    assert no_files(cache)


def test_stale_part_files_of_dead_downloads_are_removed(tmp_path, small_qcow2):
    _, url, digest = small_qcow2
    cache = ImageCache(tmp_path / "cache")
    folder = cache.downloads / digest
    folder.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = [folder / f".cloud.qcow2.part-{gone.pid}", folder / f".cloud.qcow2.part-{gone.pid}-12345"]
    for path in stale:
        path.write_bytes(b"half" * 1000)
    fetch(url, digest, cache)
    assert not any(p.exists() for p in stale), "a dead download's .part file was left"
    assert [p.name for p in folder.iterdir() if ".part" in p.name] == []


def test_data_is_on_disk_before_the_rename(tmp_path, small_qcow2):
    """strace shows the downloaded file fsync'd before it is renamed into the cache (a crash
    after the rename then cannot leave a cached file with missing data)."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace (apt-get install strace)")
    _, url, digest = small_qcow2
    cache_dir = tmp_path / "cache"
    code = (f"from pathlib import Path\nfrom harness.image.cache import ImageCache\n"
            f"from harness.image.download import fetch\n"
            f"fetch({url!r}, {digest!r}, ImageCache(Path({str(cache_dir)!r})))\n")
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2",
                    "-o", str(log), sys.executable, "-c", code], check=True, timeout=120)
    calls = [line for line in log.read_text().splitlines() if ".part" in line]
    synced = [i for i, line in enumerate(calls) if "sync(" in line]
    renamed = [i for i, line in enumerate(calls) if "rename" in line and "cloud.qcow2\"" in line]
    assert renamed, "\n".join(calls)
    assert synced and synced[0] < renamed[0], "the file was renamed into the cache before fsync:\n" + "\n".join(calls)
