"""Resumable, verified downloads of the public EM datasets (standard library only).

* Files are fetched with HTTP ``Range`` requests into ``<name>.part`` next to the destination,
  so an interrupted transfer resumes where it stopped; the finished file is renamed into place
  (atomic).
* SHA-256: a file is checked against the digest in :data:`SOURCES` when the maintainers publish
  one, otherwise against the digest recorded in ``SHA256SUMS`` in the output folder at its first
  download (trust on first use). ``--verify`` re-checks what is on disk without downloading.
* Offline / unreachable hosts raise :class:`~neurons.data.errors.OfflineError` with the URL and
  what to do; HTTP errors (404...) raise :class:`~neurons.data.errors.DownloadError`.

The ``scripts/download_<dataset>.py`` entry points are thin wrappers around :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ChecksumError, DownloadError, OfflineError

__all__ = [
    "SOURCES",
    "RemoteFile",
    "download_file",
    "fetch",
    "fetch_microns",
    "main",
    "microns_filenames",
    "sha256sum",
    "verify_files",
]

MANIFEST = "SHA256SUMS"
USER_AGENT = "neurons-data-downloader/0.1"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset release.

    Attributes
    ----------
    url : str
        Official download URL.
    filename : str
        Local file name in the output folder.
    sha256 : str, optional
        Published SHA-256 digest (None when the source publishes none).
    extract : bool
        Whether the file is a zip archive to extract into the output folder.
    """

    url: str
    filename: str
    sha256: str | None = None
    extract: bool = False


_SNEMI = "http://brainiac2.mit.edu/SNEMI3D/sites/default/files/"
_ISBI = "http://brainiac2.mit.edu/isbi_challenge/sites/default/files/"
_CREMI = "https://cremi.org/static/data/"
_MITOEM2 = "https://zenodo.org/records/14595790/files/"
_MITOEM2_SETS = ("001", "Beta"), ("002", "Jurkat"), ("003", "Macro"), ("004", "Mossy"), \
    ("005", "Podo"), ("006", "Pyra"), ("007", "Sperm"), ("008", "Stem")

#: Official sources per dataset (MICrONS is read through cloud-volume, see :func:`fetch_microns`).
SOURCES: dict[str, list[RemoteFile]] = {
    "snemi3d": [
        RemoteFile(_SNEMI + n + ".zip", n + ".zip", extract=True)
        for n in ("train-input", "train-labels", "test-input")
    ],
    "isbi2012": [
        RemoteFile(_ISBI + n, n) for n in ("train-volume.tif", "train-labels.tif", "test-volume.tif")
    ],
    "cremi3d": [
        RemoteFile(_CREMI + f"sample_{v}_20160501.hdf", f"sample_{v}_20160501.hdf") for v in "ABC"
    ]
    + [RemoteFile(_CREMI + f"sample_{v}+_20160601.hdf", f"sample_{v}+_20160601.hdf") for v in "ABC"],
    "mitoem2": [
        RemoteFile(_MITOEM2 + f"Dataset{n}_ME2-{s}.zip?download=1", f"Dataset{n}_ME2-{s}.zip", extract=True)
        for n, s in _MITOEM2_SETS
    ],
}


def sha256sum(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def _is_offline(exc: urllib.error.URLError) -> bool:
    """Whether a URLError means "host unreachable" (refused, DNS failure, timeout)."""
    return isinstance(getattr(exc, "reason", None), OSError)


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    chunk_size: int = 1 << 20,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial transfer.

    Parameters
    ----------
    url : str
        Source URL (http, https or file).
    dest : path
        Destination file; the transfer goes to ``dest.part`` which is renamed when complete.
    sha256 : str, optional
        Expected digest; on mismatch the partial file is deleted and :class:`ChecksumError`
        raised.
    timeout : float
        Socket timeout per request (s).
    retries : int
        Attempts in total (each resumes from what was received); at least 1.
    backoff : float
        Seconds slept before attempt ``k`` = ``backoff * k``.

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    OfflineError
        The host could not be reached (DNS failure, connection refused, timeout).
    DownloadError
        HTTP error status or a transfer that kept failing.
    ChecksumError
        The completed file has the wrong SHA-256.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log = log or (lambda msg: None)
    last: BaseException | None = None
    for attempt in range(max(1, int(retries))):
        if attempt:
            time.sleep(backoff * attempt)
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                status = getattr(resp, "status", 200)
                if offset and status == 206:
                    cr = resp.headers.get("Content-Range", "")
                    if not cr.startswith(f"bytes {offset}-"):
                        raise DownloadError(f"{url}: server answered range {cr!r} for offset {offset}")
                    mode = "ab"
                    log(f"resuming {dest.name} at byte {offset}")
                else:
                    mode, offset = "wb", 0
                length = resp.headers.get("Content-Length")
                expected = int(length) if length is not None else None
                received = 0
                with open(part, mode) as f:
                    while True:
                        block = resp.read(chunk_size)
                        if not block:
                            break
                        f.write(block)
                        received += len(block)
                if expected is not None and received < expected:
                    raise http.client.IncompleteRead(b"", expected - received)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():  # range not satisfiable: part already complete?
                total = exc.headers.get("Content-Range", "") if exc.headers else ""
                if total.endswith(f"/{part.stat().st_size}"):
                    break
                part.unlink()
                last = exc
                continue
            if 400 <= exc.code < 500:
                raise DownloadError(f"HTTP {exc.code} {exc.reason} for {url}") from exc
            last = exc
        except (http.client.IncompleteRead, ConnectionResetError, http.client.RemoteDisconnected) as exc:
            last = exc
            log(f"transfer of {dest.name} interrupted ({exc!r}); retrying")
        except urllib.error.URLError as exc:
            last = exc
            if not _is_offline(exc):
                raise DownloadError(f"cannot download {url}: {exc.reason}") from exc
        except TimeoutError as exc:
            last = exc
    else:
        if isinstance(last, urllib.error.URLError | TimeoutError | socket.timeout) and not isinstance(
            last, urllib.error.HTTPError
        ):
            raise OfflineError(
                f"cannot reach {url} ({getattr(last, 'reason', last)}); are you offline? Download "
                f"it by hand and place it at {dest}, or re-run later (partial data is kept in "
                f"{part.name} and resumed)"
            ) from last
        raise DownloadError(f"download of {url} failed after {retries} attempts: {last!r}") from last
    if sha256 is not None:
        digest = sha256sum(part)
        if digest.lower() != sha256.lower():
            part.unlink()
            raise ChecksumError(
                f"{dest.name}: SHA-256 {digest} does not match the expected {sha256} "
                f"(downloaded from {url}); the corrupt file was deleted, run again"
            )
    os.replace(part, dest)
    return dest


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0]
    return out


def _write_manifest(folder: Path, entries: dict[str, str]) -> None:
    _atomic_write_text(folder / MANIFEST, "".join(f"{entries[n]}  {n}\n" for n in sorted(entries)))


def verify_files(files: Sequence[RemoteFile], output: str | Path) -> dict[str, str]:
    """Check files on disk: ``{filename: "ok" | "missing" | "mismatch" | "unverified"}``.

    ``unverified`` means no digest is published or recorded for that file.
    """
    output = Path(output)
    recorded = _read_manifest(output)
    report = {}
    for spec in files:
        path = output / spec.filename
        expected = spec.sha256 or recorded.get(spec.filename)
        if not path.exists():
            report[spec.filename] = "missing"
        elif expected is None:
            report[spec.filename] = "unverified"
        else:
            report[spec.filename] = "ok" if sha256sum(path) == expected.lower() else "mismatch"
    return report


def _extract(archive: Path, output: Path, digest: str, *, force: bool = False) -> None:
    """Extract the zip ``archive`` into ``output`` unless already done for this exact archive.

    The marker ``output/.<archive>.extracted`` holds the archive's SHA-256: a different archive
    under the same name (or ``force``) is extracted again. Members are extracted into a
    temporary folder first and then renamed into place.
    """
    marker = output / f".{archive.name}.extracted"
    if not force and marker.exists() and marker.read_text().strip() == digest:
        return
    tmp = Path(tempfile.mkdtemp(dir=output, prefix=".extract-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                target = (tmp / member).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise DownloadError(f"{archive}: unsafe path {member!r} in archive")
            zf.extractall(tmp)
        for entry in tmp.iterdir():
            if entry.name == "__MACOSX":
                continue
            dest = output / entry.name
            if dest.is_dir() and entry.is_dir():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip archive: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _atomic_write_text(marker, digest + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _new_folders_removed_on_error(folder: Path) -> Iterator[None]:
    """On failure, remove the folders this call created for ``folder`` if they are still empty
    (a partial ``.part`` download is kept, so its folder stays and the transfer can resume)."""
    created = []
    p = folder.absolute()
    while not p.exists() and p != p.parent:
        created.append(p)
        p = p.parent
    try:
        yield
    except BaseException:
        for d in created:  # deepest first; stops at the first folder that is not empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


def fetch(
    files: Sequence[RemoteFile],
    output: str | Path,
    *,
    force: bool = False,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    log: Callable[[str], None] = print,
) -> dict[str, str]:
    """Download (resuming) and verify ``files`` into ``output``; extract archives.

    Files already present and matching their digest are skipped (unless ``force``). Digests
    of new downloads are recorded in ``output/SHA256SUMS``.

    A download is checked against the published digest (``RemoteFile.sha256``) or, failing
    that, the one recorded in ``SHA256SUMS`` *before* it is renamed into place: on a mismatch
    the ``.part`` file is deleted, :class:`ChecksumError` is raised and a file already at the
    destination is left untouched. With ``force`` the files are downloaded again (over a fresh
    ``.part``, still verified against the recorded digest: delete the ``SHA256SUMS`` line to
    accept a changed upstream file) and archives are extracted again. Archives are extracted
    once per archive digest (a marker ``.<archive>.extracted`` holds it).

    Parameters
    ----------
    files : sequence of RemoteFile
        Files to fetch.
    output : path
        Output folder (created).
    force : bool
        Download and extract again even when present.
    timeout, retries, backoff
        Passed to :func:`download_file`.
    log : callable
        Receives progress messages.

    Returns
    -------
    dict
        ``{filename: sha256}`` of every file.

    Raises
    ------
    ChecksumError
        A file on disk or a new download does not match its expected digest.
    DownloadError, OfflineError
        See :func:`download_file`.
    """
    output = Path(output)
    with _new_folders_removed_on_error(output):
        output.mkdir(parents=True, exist_ok=True)
        recorded = _read_manifest(output)
        digests = {}
        for spec in files:
            dest = output / spec.filename
            expected = spec.sha256 or recorded.get(spec.filename)
            if dest.exists() and not force:
                digest = sha256sum(dest)
                if expected is not None and digest != expected.lower():
                    raise ChecksumError(
                        f"{dest}: SHA-256 {digest} does not match the expected {expected}; delete it "
                        "or run with --force to download it again"
                    )
                log(f"{spec.filename}: present")
            else:
                if force:  # start over: never resume a partial transfer of an older run
                    dest.with_name(dest.name + ".part").unlink(missing_ok=True)
                log(f"downloading {spec.url} -> {dest}")
                try:
                    download_file(spec.url, dest, sha256=expected, timeout=timeout, retries=retries,
                                  backoff=backoff, log=log)
                except ChecksumError as exc:
                    origin = "published in SOURCES" if spec.sha256 else f"recorded in {output / MANIFEST}"
                    kept = f"; {dest} was left unchanged" if dest.exists() else ""
                    raise ChecksumError(f"{exc} (expected digest {origin}{kept})") from exc
                digest = sha256sum(dest)
            digests[spec.filename] = digest
            if recorded.get(spec.filename) != digest:
                recorded[spec.filename] = digest
                _write_manifest(output, recorded)
            if spec.extract:
                _extract(dest, output, digest, force=force)
        return digests


def _mirror(files: Sequence[RemoteFile], base_url: str) -> list[RemoteFile]:
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [replace(f, url=base + f.filename) for f in files]


def microns_filenames(mip: int, size: Sequence[int], seg_version: str) -> list[str]:
    """Names of the EM and segmentation files :func:`fetch_microns` writes for these arguments.

    Parameters
    ----------
    mip : int
        Resolution level.
    size : sequence of int
        Cutout size ``(z, y, x)``; the file names carry the x extent.
    seg_version : str
        Segmentation version (e.g. ``"1300"``).

    Returns
    -------
    list of str
        ``[volume file, segmentation file]``.
    """
    dx = int(size[2])
    return [f"minnie65_mip{mip}_crop_{dx}_volume.h5",
            f"minnie65_mip{mip}_crop_{dx}_v{seg_version}_segmentation.h5"]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the remote store could not be reached" (not a bad request).

    Built-in connection / timeout / DNS errors, plus those of requests, urllib3 and botocore
    when installed (cloud-volume's transports; requests' ``RequestException`` is deliberately
    not included, so HTTP errors such as 404 propagate).
    """
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError, socket.gaierror]
    try:
        import requests.exceptions as rex

        errors += [rex.ConnectionError, rex.Timeout]
    except ImportError:
        pass
    try:
        import urllib3.exceptions as uex

        errors += [uex.MaxRetryError, uex.NewConnectionError, uex.ProtocolError, uex.TimeoutError]
    except ImportError:
        pass
    try:
        import botocore.exceptions as bex

        errors += [bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError]
    except ImportError:
        pass
    return tuple(errors)


def fetch_microns(
    output: str | Path,
    start: Sequence[int] = (20000, 100000, 140000),
    size: Sequence[int] = (64, 512, 512),
    mip: int = 1,
    seg_version: str = "1300",
    em_url: str = "precomputed://https://bossdb-open-data.s3.amazonaws.com/iarpa_microns/minnie/minnie65/em",
    seg_url: str = "precomputed://https://storage.googleapis.com/iarpa_microns/minnie/minnie65/seg_m{version}/",
) -> list[Path]:
    """Write a MICrONS minnie65 cutout (EM + segmentation) as HDF5 through cloud-volume.

    ``start``/``size`` are ``(z, y, x)`` voxels in the segmentation's grid at ``mip``; the EM is
    read at the same resolution (cloud-volume resolves the matching EM mip), so both files
    share one voxel grid. Files (:func:`microns_filenames`):
    ``minnie65_mip{mip}_crop_{X}_volume.h5`` and
    ``minnie65_mip{mip}_crop_{X}_v{version}_segmentation.h5`` (dataset ``main``).

    Both cutouts are read completely before anything is written; each file is written to a
    temporary sibling and renamed into place, and its SHA-256 is recorded in
    ``output/SHA256SUMS`` so that ``--verify`` can check it later.

    Parameters
    ----------
    output : path
        Output folder (created).
    start, size : sequence of int
        Cutout origin and extent ``(z, y, x)`` in voxels at ``mip``.
    mip : int
        Resolution level of the segmentation.
    seg_version : str
        Segmentation version, substituted into ``seg_url``.
    em_url, seg_url : str
        cloud-volume paths of the EM and the segmentation.

    Returns
    -------
    list of Path
        The EM and segmentation files.

    Raises
    ------
    DownloadError
        cloud-volume is not installed, or a cutout does not have the requested shape.
    OfflineError
        The cloud store could not be reached (connection, DNS or timeout errors only; any
        other error of cloud-volume propagates unchanged).
    """
    try:
        from cloudvolume import CloudVolume
    except ImportError as exc:
        raise DownloadError(
            "MICrONS cutouts are read with cloud-volume: pip install 'neurons-data[cloud]'"
        ) from exc
    import numpy as np

    from neurons.io import write_volume

    output = Path(output)
    with _new_folders_removed_on_error(output):
        output.mkdir(parents=True, exist_ok=True)
        z0, y0, x0 = (int(v) for v in start)
        dz, dy, dx = (int(v) for v in size)
        try:
            seg = CloudVolume(seg_url.format(version=seg_version), mip=mip, use_https=True,
                              fill_missing=True, progress=False)
            res = [float(r) for r in seg.resolution]  # x, y, z nm
            em = CloudVolume(em_url, mip=res, use_https=True, fill_missing=True, progress=False)
            cut = [em[x0:x0 + dx, y0:y0 + dy, z0:z0 + dz], seg[x0:x0 + dx, y0:y0 + dy, z0:z0 + dz]]
        except _transport_errors() as exc:
            raise OfflineError(
                f"cannot read MICrONS from the cloud ({exc!r}); are you offline? Nothing was written "
                f"to {output}"
            ) from exc
        arrays = []
        for name, arr in zip(microns_filenames(mip, size, seg_version), cut, strict=True):
            arr = np.asarray(arr)
            if arr.ndim == 4:  # cloud-volume cutouts are (x, y, z, channel)
                arr = arr[..., 0]
            if arr.shape != (dx, dy, dz):
                raise DownloadError(
                    f"{name}: cloud-volume returned a cutout of shape {arr.shape} (x, y, z), expected "
                    f"{(dx, dy, dz)} for start {tuple(start)} and size {tuple(size)} (z, y, x)"
                )
            arrays.append((name, np.ascontiguousarray(arr.transpose(2, 1, 0))))
        recorded = _read_manifest(output)
        paths = []
        for name, data in arrays:
            path = output / name
            tmp = output / f".{name}.{os.getpid()}.tmp.h5"
            try:
                write_volume(str(tmp), data, key="main", voxel_size=(res[2], res[1], res[0]),
                             compression="gzip", format="hdf5")
                recorded[name] = sha256sum(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            paths.append(path)
        _write_manifest(output, recorded)
        return paths


def main(dataset: str, argv: Sequence[str] | None = None) -> int:
    """Command line of ``scripts/download_<dataset>.py``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=f"download_{dataset}.py",
        description=f"Download the {dataset} dataset from its official source (resumable, "
        "SHA-256 verified).",
    )
    parser.add_argument("--output", "-o", default=f"data/{dataset}", help="output folder")
    parser.add_argument("--verify", action="store_true",
                        help="only verify files on disk against known/recorded SHA-256")
    parser.add_argument("--force", action="store_true", help="download again even if present")
    parser.add_argument("--only", nargs="+", metavar="FILE", help="subset of file names")
    parser.add_argument("--base-url", help="mirror serving the same file names")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--retries", type=int, default=3)
    if dataset == "microns":
        parser.add_argument("--start", type=int, nargs=3, default=(20000, 100000, 140000),
                            metavar=("Z", "Y", "X"))
        parser.add_argument("--size", type=int, nargs=3, default=(64, 512, 512),
                            metavar=("Z", "Y", "X"))
        parser.add_argument("--mip", type=int, default=1)
        parser.add_argument("--seg-version", default="1300")
    args = parser.parse_args(argv)
    try:
        if dataset == "microns":
            if args.verify:
                names = microns_filenames(args.mip, args.size, args.seg_version)
                report = verify_files([RemoteFile("", n) for n in names], args.output)
                for name, status in report.items():
                    print(f"{status:10s} {name}")
                return 0 if all(s == "ok" for s in report.values()) else 1
            for p in fetch_microns(args.output, args.start, args.size, args.mip, args.seg_version):
                print(f"wrote {p}")
            return 0
        files = SOURCES[dataset]
        if args.only:
            unknown = set(args.only) - {f.filename for f in files}
            if unknown:
                parser.error(f"unknown file(s) {sorted(unknown)}; known: {[f.filename for f in files]}")
            files = [f for f in files if f.filename in args.only]
        if args.base_url:
            files = _mirror(files, args.base_url)
        if args.verify:
            report = verify_files(files, args.output)
            for name, status in report.items():
                print(f"{status:10s} {name}")
            return 0 if all(s in ("ok", "unverified") for s in report.values()) else 1
        fetch(files, args.output, force=args.force, timeout=args.timeout, retries=args.retries)
        print(f"{dataset}: {len(files)} file(s) ready in {args.output}")
        return 0
    except (DownloadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
