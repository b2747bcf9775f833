"""Atomic destinations: write to a temporary sibling, then rename onto the target.

Files are replaced with one ``os.replace``. Folders (Zarr stores, slice folders) cannot be
swapped in one step, so the swap is: write ``.NAME.<tag>.tmp`` -> rename the old ``NAME`` to
``.NAME.<tag>.old`` -> rename the new folder onto ``NAME`` -> delete the old one. A process killed
between the two renames leaves ``NAME`` missing and a complete ``.old`` copy: :func:`recover`
(run before every write and whenever a missing destination is opened) renames it back, so the
destination is always either the old or the new one, never missing.

Hidden siblings carry the writer's host and process id (``<host>-<pid>-<random>``). Leftovers of
the same target whose writer process is gone (same host, pid not alive) are deleted by the next
write; leftovers of live writers and of other hosts are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import VolumeError, VolumeWriteError

_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:32] or "host"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _tag() -> str:
    return f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def sibling(dst: Path, kind: str) -> Path:
    """A hidden sibling ``.NAME.<host>-<pid>-<random>.<kind>`` of ``dst`` (``kind``: tmp/old)."""
    return dst.parent / f".{dst.name}.{_tag()}.{kind}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def _leftovers(dst: Path) -> list[tuple[Path, str, bool]]:
    """Hidden siblings of ``dst``: (path, kind, writer is gone) for this host's dead writers."""
    pattern = re.compile(
        rf"^\.{re.escape(dst.name)}\.(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[0-9a-f]+\.(?P<kind>tmp|old)$"
    )
    out = []
    try:
        names = os.listdir(dst.parent)
    except OSError:
        return out
    for name in names:
        m = pattern.match(name)
        if m is None:
            continue
        dead = m["host"] == _HOST and not _pid_alive(int(m["pid"]))
        out.append((dst.parent / name, m["kind"], dead))
    return out


def recover(dst: Path) -> bool:
    """Finish or undo an interrupted folder swap of ``dst``; delete stale hidden leftovers.

    When ``dst`` is missing and a complete ``.old`` copy of a dead writer exists, it is renamed
    back onto ``dst``. Stale ``.tmp``/``.old`` siblings of dead writers are then deleted.

    Parameters
    ----------
    dst : Path
        The destination file or folder.

    Returns
    -------
    bool
        Whether ``dst`` was restored from an ``.old`` copy.

    Examples
    --------
    >>> recover(Path("seg.zarr"))  # doctest: +SKIP
    False
    """
    dst = Path(dst)
    restored = False
    leftovers = _leftovers(dst)
    if not os.path.lexists(dst):
        olds = [p for p, kind, dead in leftovers if kind == "old" and dead]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            with contextlib.suppress(OSError):
                os.rename(newest, dst)
                restored = True
    for p, _, dead in leftovers:
        if dead and p.exists():
            _remove(p)
    return restored


def prepare_parent(dst: Path) -> None:
    """Create the destination folder if needed; raise :class:`VolumeWriteError` if impossible."""
    parent = dst.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VolumeWriteError(f"{dst}: cannot create destination folder {parent} ({exc})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VolumeWriteError(f"{dst}: destination folder {parent} is not writable")


def _swap_folder(tmp: Path, dst: Path) -> None:
    """Put the finished folder ``tmp`` in place of ``dst`` (see the module docstring)."""
    old = None
    if os.path.lexists(dst):
        old = sibling(dst, "old")
        os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except BaseException:
        if old is not None and not os.path.lexists(dst):
            os.rename(old, dst)  # put the old destination back
        raise
    if old is not None:
        _remove(old)


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
        If the destination cannot be written. Nothing is left behind on failure, and an existing
        destination is left untouched.
    """
    prepare_parent(dst)
    recover(dst)
    if dst.exists() and dst.is_dir() != directory:
        kind = "folder" if dst.is_dir() else "file"
        raise VolumeWriteError(f"{dst}: exists as a {kind}; refusing to replace it")
    tmp = sibling(dst, "tmp")
    try:
        if keep_existing and dst.exists():
            if directory:
                shutil.copytree(dst, tmp)
            else:
                shutil.copy2(dst, tmp)
        yield tmp
        if directory:
            _swap_folder(tmp, dst)
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
