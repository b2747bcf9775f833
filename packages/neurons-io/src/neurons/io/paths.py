"""``"file.h5:volumes/raw"`` path syntax: split a source string into (path, key)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PathError, VolumeError

#: Suffixes of container formats whose arrays are addressed by a key (N5 has no backend: not
#: listed, see :data:`neurons.io.detect.UNSUPPORTED_SUFFIXES`).
CONTAINER_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5", ".zarr", ".zr")

PathLike = str | os.PathLike


def split_key(src: PathLike, key: str | None = None) -> tuple[Path, str | None]:
    """Split ``"file.h5:volumes/raw"`` into ``(Path("file.h5"), "volumes/raw")``.

    A path that exists as written is never split. Otherwise the string is split at the first
    ``:`` whose left part exists, or (for destinations that do not exist yet) whose left part ends
    with a container suffix such as ``.h5`` or ``.zarr``.

    Parameters
    ----------
    src : str or os.PathLike
        Path, optionally followed by ``:key``.
    key : str, optional
        Explicit key; must agree with a key embedded in ``src`` if both are given.

    Returns
    -------
    tuple of (Path, str or None)

    Examples
    --------
    >>> split_key("/data/sample_A.h5:volumes/raw")
    (PosixPath('/data/sample_A.h5'), 'volumes/raw')
    """
    text = os.fspath(src)
    if not str(text).strip():
        raise PathError(f"empty path {text!r}: name a file or folder (an empty path is never read "
                        "as the current folder)")
    path, embedded = Path(text), None
    if ":" in text and not os.path.exists(text):
        for i, ch in enumerate(text):
            if ch != ":" or i == 0:
                continue
            left = text[:i]
            if os.path.exists(left) or left.lower().endswith(CONTAINER_SUFFIXES):
                path, embedded = Path(left), text[i + 1 :] or None
                break
    if embedded is not None:
        embedded = embedded.strip("/") or None
    if key is not None:
        key = key.strip("/") or None
    if embedded is not None and key is not None and embedded != key:
        raise VolumeError(f"{text!r} names key {embedded!r} but key={key!r} was also given")
    return path, key if key is not None else embedded
