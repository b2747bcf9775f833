"""Download machinery against a real local HTTP server on 127.0.0.1 (no external traffic)."""

from __future__ import annotations

import hashlib
import runpy
import socket
import sys
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
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


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_recorded_digest_checked_before_replacing(server, tmp_path):
    url, h = server
    h.files["plain.hdf"] = PAYLOAD
    files = [RemoteFile(url + "plain.hdf", "plain.hdf")]  # no published digest: trust on first use
    out = tmp_path / "out"
    fetch(files, out, log=lambda m: None, backoff=0)
    manifest = (out / "SHA256SUMS").read_text()
    assert sha(PAYLOAD) in manifest
    h.files["plain.hdf"] = b"tampered upstream" * 100
    with pytest.raises(ChecksumError, match=r"(?s)SHA256SUMS.*left unchanged"):
        fetch(files, out, force=True, log=lambda m: None, retries=1)
    assert (out / "plain.hdf").read_bytes() == PAYLOAD  # the good file was never replaced
    assert not (out / "plain.hdf.part").exists()  # the bad download is deleted
    assert (out / "SHA256SUMS").read_text() == manifest
    (out / "plain.hdf").unlink()  # a fresh download of the bad file never lands either
    with pytest.raises(ChecksumError, match="plain.hdf"):
        fetch(files, out, log=lambda m: None, retries=1)
    assert not (out / "plain.hdf").exists() and not (out / "plain.hdf.part").exists()


def test_force_reextracts_and_marker_follows_archive_digest(server, tmp_path):
    url, h = server
    first = _zip_bytes({"train-input.tif": b"version-1"})
    h.files["train-input.zip"] = first
    files = [RemoteFile(url + "train-input.zip", "train-input.zip", extract=True)]
    out = tmp_path / "out"
    fetch(files, out, log=lambda m: None, backoff=0)
    assert (out / ".train-input.zip.extracted").read_text().strip() == sha(first)
    (out / "train-input.tif").write_bytes(b"edited by hand")
    n = len(h.ranges)
    fetch(files, out, log=lambda m: None)  # same archive, already extracted: left alone
    assert (out / "train-input.tif").read_bytes() == b"edited by hand" and len(h.ranges) == n
    fetch(files, out, force=True, log=lambda m: None, backoff=0)  # downloads and extracts again
    assert (out / "train-input.tif").read_bytes() == b"version-1" and len(h.ranges) == n + 1
    # a different archive under the same name (accepted in SHA256SUMS) is extracted again
    second = _zip_bytes({"train-input.tif": b"version-2"})
    (out / "train-input.zip").write_bytes(second)
    (out / "SHA256SUMS").write_text(f"{sha(second)}  train-input.zip\n")
    fetch(files, out, log=lambda m: None)
    assert (out / "train-input.tif").read_bytes() == b"version-2"
    assert (out / ".train-input.zip.extracted").read_text().strip() == sha(second)


# -- MICrONS through a fake cloud-volume ---------------------------------------------------

EM_XYZ = (np.arange(12 * 10 * 9) % 251).astype(np.uint8).reshape(12, 10, 9)
SEG_XYZ = (np.arange(12 * 10 * 9, dtype=np.uint64) // 7 + np.uint64(864691135000000000)).reshape(
    12, 10, 9
)


def _fake_cloudvolume(monkeypatch, error: BaseException | None = None):
    """Install a ``cloudvolume`` module whose CloudVolume serves the arrays above (XYZC)."""
    opened = []

    class FakeCloudVolume:
        def __init__(self, path, mip=0, **kwargs):
            if error is not None:
                raise error
            opened.append((path, mip))
            self.resolution = np.array([8.0, 8.0, 40.0])
            self.data = SEG_XYZ if "seg" in path else EM_XYZ

        def __getitem__(self, idx):
            return self.data[idx][..., None]

    monkeypatch.setitem(sys.modules, "cloudvolume", types.SimpleNamespace(CloudVolume=FakeCloudVolume))
    return opened


def test_microns_download_atomic_manifest_verify(monkeypatch, tmp_path, capsys):
    import h5py

    from neurons.data.datasets import MICRONSDataset

    opened = _fake_cloudvolume(monkeypatch)
    out = tmp_path / "microns"
    args = ["--output", str(out), "--start", "1", "2", "3", "--size", "4", "5", "6", "--mip", "0"]
    assert main("microns", args) == 0
    assert opened[0] == ("precomputed://https://storage.googleapis.com/iarpa_microns/minnie/"
                         "minnie65/seg_m1300/", 0)
    assert opened[1][1] == [8.0, 8.0, 40.0]  # EM read at the segmentation's resolution
    em_file, seg_file = "minnie65_mip0_crop_6_volume.h5", "minnie65_mip0_crop_6_v1300_segmentation.h5"
    assert sorted(p.name for p in out.iterdir()) == sorted(["SHA256SUMS", em_file, seg_file])
    # (x, y, z) cutout [3:9, 2:7, 1:5] transposed to (z, y, x)
    with h5py.File(out / em_file) as f:
        np.testing.assert_array_equal(f["main"][()], EM_XYZ[3:9, 2:7, 1:5].transpose(2, 1, 0))
    (vol,) = MICRONSDataset(out).volumes("train")
    assert vol.voxel_size == (40.0, 8.0, 8.0)
    np.testing.assert_array_equal(vol.read()["instance"], SEG_XYZ[3:9, 2:7, 1:5].transpose(2, 1, 0))
    manifest = (out / "SHA256SUMS").read_text()
    for name in (em_file, seg_file):
        assert f"{hashlib.sha256((out / name).read_bytes()).hexdigest()}  {name}" in manifest
    capsys.readouterr()
    assert main("microns", [*args, "--verify"]) == 0
    assert capsys.readouterr().out.count("ok") == 2
    with open(out / seg_file, "r+b") as f:  # flip one byte
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    assert main("microns", [*args, "--verify"]) == 1
    assert f"mismatch   {seg_file}" in capsys.readouterr().out
    other = ["--output", str(tmp_path / "empty"), "--size", "4", "5", "6", "--verify"]
    assert main("microns", other) == 1  # nothing there yet


def test_microns_failed_write_leaves_previous_file(monkeypatch, tmp_path):
    import neurons.io
    from neurons.data.download import fetch_microns

    _fake_cloudvolume(monkeypatch)
    out = tmp_path / "m"
    out.mkdir()
    (out / "minnie65_mip0_crop_6_volume.h5").write_bytes(b"previous cutout")
    real = neurons.io.write_volume

    def failing_write(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(neurons.io, "write_volume", failing_write)
    with pytest.raises(OSError, match="disk full"):
        fetch_microns(out, (1, 2, 3), (4, 5, 6), mip=0)
    assert (out / "minnie65_mip0_crop_6_volume.h5").read_bytes() == b"previous cutout"
    assert sorted(p.name for p in out.iterdir()) == ["minnie65_mip0_crop_6_volume.h5"]


def test_microns_only_transport_errors_are_offline(monkeypatch, tmp_path, capsys):
    import requests

    from neurons.data.download import fetch_microns

    _fake_cloudvolume(monkeypatch, requests.exceptions.ConnectionError("Max retries exceeded"))
    with pytest.raises(OfflineError, match="offline"):
        fetch_microns(tmp_path / "a", mip=0)
    assert main("microns", ["--output", str(tmp_path / "a")]) == 2
    assert "are you offline" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()  # a failed download leaves no empty folder
    _fake_cloudvolume(monkeypatch, socket.gaierror("Name or service not known"))
    with pytest.raises(OfflineError):
        fetch_microns(tmp_path / "b", mip=0)
    _fake_cloudvolume(monkeypatch, KeyError("info file has no 'scales'"))  # a real failure
    with pytest.raises(KeyError, match="scales"):
        fetch_microns(tmp_path / "c", mip=0)
    http_404 = requests.exceptions.HTTPError("404 Client Error: Not Found")
    _fake_cloudvolume(monkeypatch, http_404)
    with pytest.raises(requests.exceptions.HTTPError) as err:
        fetch_microns(tmp_path / "d", mip=0)
    assert not isinstance(err.value, OfflineError)


# -- every URL download script, end to end against the mirror, then opened by its reader ------


def _run_script(repo_root, monkeypatch, dataset, argv):
    script = repo_root / "scripts" / f"download_{dataset}.py"
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    return exit_info.value.code


def _serve_release(h, root, dataset):
    """Put the fixture's files on the mirror as the real release packages them."""
    if dataset == "snemi3d":  # one zip per tif
        for n in ("train-input", "train-labels", "test-input"):
            h.files[f"{n}.zip"] = _zip_bytes({f"{n}.tif": (root / f"{n}.tif").read_bytes()})
        return []
    if dataset == "mitoem2":  # one zip per sub-dataset, holding its DatasetNNN_ME2-<Name>/ folder
        names = []
        for folder in sorted(p for p in root.iterdir() if p.name.startswith("Dataset")):
            members = {str(f.relative_to(root)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}
            h.files[f"{folder.name}.zip"] = _zip_bytes(members)
            names.append(f"{folder.name}.zip")
        return ["--only", *names]
    names = [p.name for p in root.iterdir() if p.is_file()]
    for n in names:
        h.files[n] = (root / n).read_bytes()
    return ["--only", *names] if dataset == "cremi3d" else []


@pytest.mark.parametrize(
    ("dataset", "fixture"),
    [("snemi3d", "snemi_tiff_dir"), ("cremi3d", "cremi_dir"), ("mitoem2", "mitoem2_dir"),
     ("isbi2012", "isbi_tiff_dir")],
)
def test_download_scripts_end_to_end(server, tmp_path, repo_root, monkeypatch, request, dataset,
                                     fixture):
    import tifffile

    from neurons.data.datasets import DATASETS

    url, h = server
    made = request.getfixturevalue(fixture)
    root = made[0] if isinstance(made, tuple) else made
    extra = _serve_release(h, root, dataset)
    out = tmp_path / "download"
    args = ["--output", str(out), "--base-url", url, "--retries", "1", *extra]
    assert _run_script(repo_root, monkeypatch, dataset, args) == 0
    assert _run_script(repo_root, monkeypatch, dataset, ["--output", str(out), "--verify", *extra]) == 0
    reader = DATASETS[dataset](out)
    ref = DATASETS[dataset](root)  # the same reader on the original files
    got, want = reader.volumes("train"), ref.volumes("train")
    assert [v.name for v in got] == [v.name for v in want] and got
    for g, w in zip(got, want, strict=True):
        a, b = g.read(), w.read()
        assert sorted(a) == sorted(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{g.name}: {key}")
    # independent of the reader: the downloaded bytes are the released ones
    if dataset == "snemi3d":
        lab = tifffile.imread(out / "train-labels.tif")
        np.testing.assert_array_equal(lab, tifffile.imread(root / "train-labels.tif"))
        np.testing.assert_array_equal(got[0].read()["instance"], lab)
    elif dataset == "isbi2012":
        assert (out / "train-labels.tif").read_bytes() == (root / "train-labels.tif").read_bytes()
    elif dataset == "cremi3d":
        ids, _ = made[1]["A"]
        item = got[0].read()
        inst = item["instance"]
        # neurons keep the released ids; voxels separating touching neurons become background
        # and clefts get ids of their own (the CREMI label mapping)
        keep = (ids != np.iinfo(np.uint64).max) & (item["semantic"] == 1)
        assert keep.mean() > 0.5
        np.testing.assert_array_equal(inst[keep], ids[keep])
    else:
        img, lab = made[1][("Beta", "beta_000")]
        out0 = got[0].read()
        np.testing.assert_array_equal(out0["semantic"], np.select([lab == 1, lab == 2], [3, 4], 0))
    assert len(reader.volumes("test")) == len(ref.volumes("test"))
