"""Downloads against a local HTTP server on 127.0.0.1 only (never the real mirrors).

The server serves files built from the shipped sample (and, for one test, the full MNIST
folder of FERROGRAD_DATA) and can misbehave per path: 404, 500, slow, truncated, trickling,
endless, lying about its length or sending a web page. Transfers that could hang run in a
child interpreter with a timeout.
"""

from __future__ import annotations

import gzip
import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from ferrograd.datasets import (
    MNIST,
    DatasetSpec,
    DownloadError,
    _sample_specs,
    download,
    load_mnist,
    sample_dir,
)

SAMPLE = DatasetSpec(name="mnist-sample", title="MNIST sample", files=_sample_specs())  # type: ignore[arg-type]
FILE_NAMES = [f"{f.name}.gz" for f in MNIST.files]


@dataclass
class Site:
    """Files per URL path plus a behaviour per path: ok, 404, 500, slow, truncate."""

    files: dict[str, bytes] = field(default_factory=dict)
    behaviour: dict[str, str] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)


class Handler(http.server.BaseHTTPRequestHandler):
    site: Site

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        site = self.server.site  # type: ignore[attr-defined]
        site.hits.append(self.path)
        how = site.behaviour.get(self.path, "ok")
        body = site.files.get(self.path)
        if how in MISBEHAVIOURS:
            try:
                MISBEHAVIOURS[how](self, body or b"")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should
            return
        if body is None or how == "404":
            self.send_error(404, "Not Found")
            return
        if how == "500":
            self.send_error(500, "Internal Server Error")
            return
        if how == "slow":
            time.sleep(1.5)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if how == "truncate":
                self.wfile.write(body[: len(body) // 2])  # then close: fewer than promised
                self.close_connection = True
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test): nothing to report


def _trickle(handler: Handler, body: bytes) -> None:
    """Headers at once, then one byte every 50 ms: each read is quick, the whole never ends."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    for byte in body:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.05)


def _trickle_headers(handler: Handler, body: bytes) -> None:
    """The status line and headers themselves one byte every 50 ms, then nothing more."""
    for byte in b"HTTP/1.0 200 OK\r\nContent-Type: application/gzip\r\nX-Pad: " + b"a" * 10000:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(0.05)


def _endless(handler: Handler, body: bytes) -> None:
    """No Content-Length (the body ends when the connection closes), then zeros for ever."""
    handler.send_response(200)
    handler.end_headers()
    zeros = bytes(1 << 16)
    while True:
        handler.wfile.write(zeros)


def _huge_length(handler: Handler, body: bytes) -> None:
    """Promises a terabyte, then sends zeros for ever."""
    handler.send_response(200)
    handler.send_header("Content-Length", str(10**12))
    handler.end_headers()
    zeros = bytes(1 << 16)
    while True:
        handler.wfile.write(zeros)


def _web_page(handler: Handler, body: bytes) -> None:
    page = b"<html><body>Please log in to use this network</body></html>"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.send_header("Content-Length", str(len(page)))
    handler.end_headers()
    handler.wfile.write(page)


MISBEHAVIOURS = {
    "trickle": _trickle,
    "trickle-headers": _trickle_headers,
    "endless": _endless,
    "huge-length": _huge_length,
    "web-page": _web_page,
}


@pytest.fixture
def server() -> Iterator[tuple[str, Site]]:
    site = Site()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.site = site  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", site
    finally:
        httpd.shutdown()
        httpd.server_close()


def publish(site: Site, prefix: str, folder: Path) -> None:
    for name in FILE_NAMES:
        site.files[f"{prefix}/{name}"] = (folder / name).read_bytes()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_and_verify(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    out = download(SAMPLE, tmp_path, mirrors=[f"{base}/a/"], retries=0, progress=False)
    assert leftovers(out) == sorted(FILE_NAMES)
    for name in FILE_NAMES:
        assert (out / name).read_bytes() == (sample_dir() / name).read_bytes()
    # Present files are not fetched again.
    hits = len(site.hits)
    download(SAMPLE, tmp_path, mirrors=[f"{base}/a/"], progress=False)
    assert len(site.hits) == hits


def test_404_on_first_mirror_then_second(server, tmp_path):
    base, site = server
    publish(site, "/b", sample_dir())
    out = download(SAMPLE, tmp_path, mirrors=[f"{base}/a", f"{base}/b"], progress=False)
    assert leftovers(out) == sorted(FILE_NAMES)
    # a 404 is not retried: one hit on /a and one on /b per file
    assert sum(h.startswith("/a/") for h in site.hits) == 4
    assert sum(h.startswith("/b/") for h in site.hits) == 4


def _fails(base: str, site: Site, tmp_path: Path, match: str, **kw) -> DownloadError:
    with pytest.raises(DownloadError, match=match) as info:
        download(SAMPLE, tmp_path, mirrors=[f"{base}/a/"], progress=False, **kw)
    msg = str(info.value)
    assert "FERROGRAD_DATA" in msg and "sample" in msg
    # nothing half-written: only files that passed verification, no temp files
    left = leftovers(tmp_path)
    assert not any(n.endswith(".part") for n in left) and len(left) < 4
    return info.value


def test_corrupted_file(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    raw = bytearray(gzip.decompress(site.files["/a/" + FILE_NAMES[0]]))
    raw[5000] ^= 0xFF  # one pixel flipped: structure fine, checksum wrong
    site.files["/a/" + FILE_NAMES[0]] = gzip.compress(bytes(raw), compresslevel=1)
    _fails(base, site, tmp_path, "checksum mismatch", retries=2)
    assert site.hits.count("/a/" + FILE_NAMES[0]) == 1  # a wrong file is not re-fetched


def test_wrong_magic(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    raw = gzip.decompress(site.files["/a/" + FILE_NAMES[1]])
    site.files["/a/" + FILE_NAMES[1]] = gzip.compress((0x0803).to_bytes(4, "big") + raw[4:])
    _fails(base, site, tmp_path, r"wrong magic number 0x00000803; expected 0x00000801")
    assert leftovers(tmp_path) == [FILE_NAMES[0]]


def test_truncated_transfer_is_retried(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "truncate"
    err = _fails(base, site, tmp_path, "truncated|IncompleteRead", retries=1)
    assert site.hits.count("/a/" + FILE_NAMES[0]) == 2
    assert str(err).count(FILE_NAMES[0]) >= 2


def test_500_is_retried_then_reported(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "500"
    _fails(base, site, tmp_path, "HTTP 500", retries=1)
    assert site.hits.count("/a/" + FILE_NAMES[0]) == 2


def test_slow_server_times_out_then_next_mirror(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    publish(site, "/b", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[3]] = "slow"
    out = download(
        SAMPLE, tmp_path, mirrors=[f"{base}/a", f"{base}/b"], timeout=0.3, retries=0, progress=False
    )
    assert leftovers(out) == sorted(FILE_NAMES)
    assert "/b/" + FILE_NAMES[3] in site.hits


def test_slow_server_error_says_timed_out(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "slow"
    _fails(base, site, tmp_path, r"timed out after 0.3 s", timeout=0.3, retries=0)


def test_load_mnist_downloads_full_files_into_cache(server, tmp_path, monkeypatch, mnist_dir):
    """No local files: load_mnist fetches the real files from the mirror list of the env var."""
    base, site = server
    publish(site, "/mnist", mnist_dir)
    monkeypatch.delenv("FERROGRAD_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FERROGRAD_MNIST_MIRRORS", f"{base}/missing/,{base}/mnist/")
    (x, t), (_, tt) = load_mnist(progress=False)
    assert x.shape == (60000, 784) and tt[:3].tolist() == [7, 2, 1]
    assert leftovers(tmp_path / "ferrograd" / "mnist") == sorted(FILE_NAMES)
    # the second load reads the cache, no new request
    hits = len(site.hits)
    (_, t2), _ = load_mnist(progress=False, dtype=np.float64)
    assert len(site.hits) == hits and np.array_equal(t, t2)


def test_spec_replace_keeps_mirrors_env():
    # mirrors for Fashion-MNIST come from their own variable, not MNIST's
    fm = replace(MNIST, name="x", mirrors_env="FERROGRAD_FASHION_MNIST_MIRRORS")
    assert fm.mirrors_env != MNIST.mirrors_env


def test_unwritable_cache_is_a_download_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")  # a file where the cache folder should go
    with pytest.raises(DownloadError, match="cannot create the download folder"):
        download(SAMPLE, blocker / "mnist", mirrors=["http://127.0.0.1:9/"], progress=False)


# ------------------------------------------------------------- deadlines and size limits


def download_in_child(base: str, dest: Path, **kw) -> tuple[int, str, float]:
    """``download(SAMPLE, dest, **kw)`` in a new interpreter given a minute (its stacks are
    printed if it hangs): (returncode, stderr, seconds)."""
    code = f"""
        import faulthandler
        faulthandler.dump_traceback_later(50, exit=True)
        from ferrograd.datasets import DatasetSpec, _sample_specs, download
        spec = DatasetSpec(name="s", title="MNIST sample", files=_sample_specs())
        download(spec, {str(dest)!r}, mirrors=[{base + "/a/"!r}], progress=False, **{kw!r})
    """
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stderr, time.monotonic() - start


def test_sizes_and_limits_of_the_known_files():
    train_images, train_labels, test_images, test_labels = MNIST.files
    assert (train_images.nbytes, test_labels.nbytes) == (47040016, 10008)
    assert train_labels.nbytes == 60008 and test_images.nbytes == 7840016
    # the limit leaves room for gzip's worst case (stored blocks), not for much more
    for spec in MNIST.files:
        assert spec.nbytes + spec.nbytes // 65535 * 5 + 100 < spec.download_limit
        assert spec.download_limit < spec.nbytes * 1.01 + 5000
    # every shipped sample file, compressed as published, fits its limit
    for spec in SAMPLE.files:
        assert (sample_dir() / f"{spec.name}.gz").stat().st_size < spec.download_limit


@pytest.mark.parametrize("how", ["trickle", "trickle-headers"])
def test_a_trickling_server_meets_the_total_deadline(server, tmp_path, how):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = how
    rc, err, seconds = download_in_child(base, tmp_path, timeout=2.0, deadline=1.5, retries=1)
    assert rc == 1 and "DownloadError" in err
    assert "not finished within the 1.5 s deadline" in err and FILE_NAMES[0] in err
    # each read is well within the 2 s timeout; only the deadline ends it, and no retry
    assert seconds < 15 and site.hits.count("/a/" + FILE_NAMES[0]) == 1
    assert leftovers(tmp_path) == []


def test_a_stream_without_length_stops_one_byte_past_the_limit(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "endless"
    limit = SAMPLE.files[0].download_limit
    rc, err, _ = download_in_child(base, tmp_path, retries=2)
    assert rc == 1 and f"sent more than {limit} bytes" in err and "stopped there" in err
    assert site.hits.count("/a/" + FILE_NAMES[0]) == 1  # not retried: it would do it again
    assert leftovers(tmp_path) == []


def test_a_content_length_beyond_the_limit_is_refused_before_reading(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "huge-length"
    with pytest.raises(
        DownloadError, match=r"Content-Length is 1000000000000 bytes, more than"
    ) as e:
        download(SAMPLE, tmp_path, mirrors=[f"{base}/a/"], progress=False, retries=2)
    assert f"{SAMPLE.files[0].nbytes} bytes uncompressed" in str(e.value)
    assert site.hits.count("/a/" + FILE_NAMES[0]) == 1 and leftovers(tmp_path) == []


def test_a_web_page_is_named_as_such(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "web-page"
    _fails(base, site, tmp_path, r"sent a web page \(text/html; charset=utf-8\), not train-images")


def test_a_slow_mirror_does_not_stop_the_next_one(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    publish(site, "/b", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[1]] = "trickle"
    out = download(
        SAMPLE, tmp_path, mirrors=[f"{base}/a", f"{base}/b"], deadline=1.0, progress=False
    )
    assert leftovers(out) == sorted(FILE_NAMES)
    assert site.hits.count("/a/" + FILE_NAMES[1]) == 1 and "/b/" + FILE_NAMES[1] in site.hits


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"deadline": 0}, ValueError, "deadline must be a positive number of seconds, got 0"),
        ({"timeout": float("nan")}, ValueError, "timeout must be a positive number"),
        ({"deadline": "60"}, TypeError, "deadline must be a number of seconds, got '60'"),
        ({"retries": -1}, ValueError, "retries must be an int >= 0, got -1"),
        ({"retries": 2.5}, ValueError, "retries must be an int >= 0, got 2.5"),
        ({"ds": "cifar"}, ValueError, "unknown dataset 'cifar'; expected one of mnist, fashion"),
    ],
)
def test_bad_download_arguments(tmp_path, kw, error, message):
    kw = {"ds": SAMPLE, **kw}
    with pytest.raises(error, match=message):
        download(dest=tmp_path, mirrors=["http://127.0.0.1:9/"], progress=False, **kw)


def test_one_mirror_as_a_string(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    out = download(SAMPLE, tmp_path, mirrors=f"{base}/a", progress=False)  # type: ignore[arg-type]
    assert leftovers(out) == sorted(FILE_NAMES)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, -signal.SIGINT), (signal.SIGTERM, -signal.SIGTERM)]
)
def test_an_interrupted_download_leaves_no_temp_file(server, tmp_path, sig, code):
    base, site = server
    publish(site, "/a", sample_dir())
    site.behaviour["/a/" + FILE_NAMES[0]] = "trickle"
    script = f"""
        from ferrograd.datasets import DatasetSpec, _sample_specs, download
        spec = DatasetSpec(name="s", title="MNIST sample", files=_sample_specs())
        download(spec, {str(tmp_path)!r}, mirrors=[{base + "/a/"!r}], progress=False)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(400):  # until the transfer has begun: its temp file exists
            if any(n.endswith(".part") for n in leftovers(tmp_path)):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the download never started")
        time.sleep(0.3)
        child.send_signal(sig)
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == code
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in err
    assert leftovers(tmp_path) == []


def test_a_mirror_serving_another_known_file_is_told_apart(server, tmp_path):
    base, site = server
    publish(site, "/a", sample_dir())
    site.files["/a/" + FILE_NAMES[1]] = site.files["/a/" + FILE_NAMES[3]]  # test labels
    _fails(
        base,
        site,
        tmp_path,
        r"is the shipped MNIST sample's t10k-labels-idx1-ubyte \(1,000 labels\), not the shipped "
        r"MNIST sample's train-labels-idx1-ubyte: the mirror serves another file",
    )


def test_importing_the_package_loads_no_network_or_plotting_modules():
    # urllib (with ssl, http.client and email) comes with a download, matplotlib with a
    # figure: `import ferrograd` in a fresh interpreter loads neither.
    heavy = ("urllib.request", "ssl", "http.client", "email", "matplotlib")
    code = f"import sys, ferrograd; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
