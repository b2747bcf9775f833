"""Download machinery against a real local HTTP server on 127.0.0.1 (no external traffic)."""

from __future__ import annotations

import hashlib
import runpy
import socket
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from neurons.data.download import RemoteFile, download_file, fetch, main, verify_files
from neurons.data.errors import ChecksumError, DownloadError, OfflineError

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


class Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}  # first plain GET of this path dies after N bytes
    ranges: list[str | None] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.split("?")[0].lstrip("/")
        data = self.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = 0
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut_after.pop(name, None) if not rng else None
        if cut is not None:
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    Handler.files, Handler.cut_after, Handler.ranges = {}, {}, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", Handler
    httpd.shutdown()
    httpd.server_close()
    t.join(timeout=5)


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_resume_after_interrupted_transfer(server, tmp_path):
    url, h = server
    h.files["a.bin"] = PAYLOAD
    h.cut_after["a.bin"] = 30000
    out = download_file(url + "a.bin", tmp_path / "a.bin", sha256=sha(PAYLOAD), retries=3, backoff=0)
    assert out.read_bytes() == PAYLOAD
    assert h.ranges[0] is None and h.ranges[1] == "bytes=30000-"
    assert not (tmp_path / "a.bin.part").exists()


def test_resume_existing_part_file_and_complete_part(server, tmp_path):
    url, h = server
    h.files["b.bin"] = PAYLOAD
    (tmp_path / "b.bin.part").write_bytes(PAYLOAD[:5000])
    download_file(url + "b.bin", tmp_path / "b.bin", retries=1)
    assert (tmp_path / "b.bin").read_bytes() == PAYLOAD and h.ranges == ["bytes=5000-"]
    (tmp_path / "c.bin.part").write_bytes(PAYLOAD)  # already complete -> 416
    h.files["c.bin"] = PAYLOAD
    download_file(url + "c.bin", tmp_path / "c.bin", sha256=sha(PAYLOAD), retries=2, backoff=0)
    assert (tmp_path / "c.bin").read_bytes() == PAYLOAD


def test_checksum_mismatch_deletes_partial(server, tmp_path):
    url, h = server
    h.files["a.bin"] = PAYLOAD
    with pytest.raises(ChecksumError, match="does not match"):
        download_file(url + "a.bin", tmp_path / "a.bin", sha256="0" * 64, retries=1)
    assert not (tmp_path / "a.bin").exists() and not (tmp_path / "a.bin.part").exists()


def test_404(server, tmp_path):
    url, _ = server
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download_file(url + "missing.bin", tmp_path / "m.bin", retries=3, backoff=0)
    assert not isinstance(err.value, OfflineError)


def test_offline_connection_refused(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    with pytest.raises(OfflineError, match="offline") as err:
        download_file(f"http://127.0.0.1:{port}/x.bin", tmp_path / "x.bin", retries=2, backoff=0,
                      timeout=2)
    assert isinstance(err.value, ConnectionError)


def test_fetch_records_verifies_and_extracts(server, tmp_path):
    url, h = server
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("train-input.tif", b"tiffdata")
    h.files["train-input.zip"] = buf.getvalue()
    h.files["plain.hdf"] = PAYLOAD
    files = [RemoteFile(url + "train-input.zip", "train-input.zip", extract=True),
             RemoteFile(url + "plain.hdf", "plain.hdf", sha256=sha(PAYLOAD))]
    out = tmp_path / "out"
    digests = fetch(files, out, log=lambda m: None, backoff=0)
    assert digests["plain.hdf"] == sha(PAYLOAD)
    assert (out / "train-input.tif").read_bytes() == b"tiffdata"
    assert "train-input.zip" in (out / "SHA256SUMS").read_text()
    assert verify_files(files, out) == {"train-input.zip": "ok", "plain.hdf": "ok"}
    n = len(h.ranges)
    fetch(files, out, log=lambda m: None)  # present and verified: nothing downloaded
    assert len(h.ranges) == n
    (out / "plain.hdf").write_bytes(b"corrupted")
    assert verify_files(files, out)["plain.hdf"] == "mismatch"
    with pytest.raises(ChecksumError):
        fetch(files, out, log=lambda m: None)


def test_cli_scripts_with_mirror(server, tmp_path, repo_root, monkeypatch, capsys):
    url, h = server
    for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif"):
        h.files[name] = name.encode() * 10
    out = tmp_path / "isbi"
    assert main("isbi2012", ["--output", str(out), "--base-url", url, "--retries", "1"]) == 0
    assert (out / "train-labels.tif").read_bytes() == b"train-labels.tif" * 10
    assert main("isbi2012", ["--output", str(out), "--verify"]) == 0
    (out / "test-volume.tif").write_bytes(b"x")
    assert main("isbi2012", ["--output", str(out), "--verify"]) == 1
    # the real script file, run as __main__; 404 from the mirror -> exit status 2, clear message
    script = repo_root / "scripts" / "download_cremi3d.py"
    argv = [str(script), "--output", str(tmp_path / "c"), "--base-url", url,
            "--only", "sample_A_20160501.hdf", "--retries", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "sample_A_20160501.hdf" in err
