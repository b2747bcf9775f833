"""Atomic destinations: write to a temporary sibling, then rename onto the target."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import VolumeError, VolumeWriteError


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def prepare_parent(dst: Path) -> None:
    """Create the destination folder if needed; raise :class:`VolumeWriteError` if impossible."""
    parent = dst.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolumeWriteError(f"{dst}: cannot create destination folder {parent} ({exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VolumeWriteError(f"{dst}: destination folder {parent} is not writable")


@contextlib.contextmanager
def atomic_destination(dst: Path, *, directory: bool, keep_existing: bool) -> Iterator[Path]:
    """Yield a temporary path next to ``dst``; on success rename it onto ``dst``.

    Parameters
    ----------
    dst : Path
        Final destination (file or folder).
    directory : bool
        Whether the destination is a folder (Zarr store, slice folder).
    keep_existing : bool
        Copy an existing ``dst`` into the temporary path first (adding a key to a container).

    Raises
    ------
    VolumeWriteError
        If the destination cannot be written. Nothing is left behind on failure.
    """
    prepare_parent(dst)
    if dst.exists() and dst.is_dir() != directory:
        kind = "folder" if dst.is_dir() else "file"
        raise VolumeWriteError(f"{dst}: exists as a {kind}; refusing to replace it")
    tmp = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        if keep_existing and dst.exists():
            if directory:
                shutil.copytree(dst, tmp)
            else:
                shutil.copy2(dst, tmp)
        yield tmp
        if directory:
            old = dst.parent / f".{dst.name}.{uuid.uuid4().hex[:12]}.old"
            if dst.exists():
                os.rename(dst, old)
            os.rename(tmp, dst)
            _remove(old)
        else:
            os.replace(tmp, dst)
    except VolumeError:
        _remove(tmp)
        raise
    except OSError as exc:
        _remove(tmp)
        raise VolumeWriteError(f"{dst}: write failed ({exc})") from exc
    except BaseException:
        _remove(tmp)
        raise
