"""Checks ``neurons-infer`` runs before any block is computed: never overwrite an input, and fail
on an unwritable output at the start rather than after hours of work.

Rules (also in the root README, "Contract"):

* The output may be the input's HDF5/Zarr container only when none of the keys it writes (the
  instance key and the semantic key) is, contains, or lies inside the input array's key (or the
  ground truth's). Any other overlap with an input (same single-array file, a folder output that
  contains an input, the checkpoint itself, a preview PNG path) is refused.
* The output format must be able to hold the arrays that will be written: ``neurons-infer``
  writes two keyed arrays (uint64 instance ids, uint8 semantic classes), so single-array formats
  (``.tif``, ``.nrrd``, ``.npy``, ...) are refused with advice to use ``.h5``/``.zarr``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InferenceError

__all__ = ["OutputConflictError", "check_inference_paths"]

_CONTAINERS = ("hdf5", "zarr")


class OutputConflictError(InferenceError):
    """The output would overwrite an input, or cannot be written (checked before any work)."""


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _overlap(a: str, b: str) -> bool:
    """Whether writing key ``a`` can touch array ``b`` (same key, or one is a group of the other)."""
    return a == b or b.startswith(a + "/") or a.startswith(b + "/")


def check_inference_paths(
    checkpoint: str | os.PathLike | None,
    input: str | os.PathLike,  # noqa: A002 - mirrors the CLI argument
    output: str | os.PathLike,
    *,
    key: str | None = None,
    out_key: str = "segmentation",
    semantic_key: str | None = "semantic",
    gt: str | os.PathLike | None = None,
    gt_key: str | None = None,
    compression: str | None = None,
) -> tuple[Path, str]:
    """Refuse, before any work, an output that overlaps an input or cannot be written.

    Parameters
    ----------
    checkpoint, input, output, key, out_key, semantic_key, gt, gt_key, compression
        As for :func:`~neurons.train.inference.run_inference`.

    Returns
    -------
    (Path, str)
        The output path and the instance key that will be written.

    Raises
    ------
    OutputConflictError
        With a message naming both paths/keys and what to do instead.
    neurons.io.VolumeError
        When the input or ground truth cannot be opened.

    Examples
    --------
    >>> check_inference_paths("m.ckpt", "raw.h5:raw", "raw.h5:raw")  # doctest: +SKIP
    Traceback (most recent call last):
    OutputConflictError: output raw.h5:raw would overwrite the input raw.h5:raw ...
    """
    import numpy as np

    from neurons.io import VolumeError, check_destination, open_volume, split_key
    from neurons.io.write import destination_format

    from .previews import preview_paths

    out_path, okey = split_key(output)
    out_key = okey or out_key
    if checkpoint is not None and _same(out_path, Path(checkpoint)):
        raise OutputConflictError(f"output {out_path} is the checkpoint {checkpoint}")
    written = [out_key] + ([semantic_key] if semantic_key else [])
    if semantic_key and _overlap(out_key, semantic_key):
        raise OutputConflictError(
            f"output {out_path}: instance key {out_key!r} and semantic key {semantic_key!r} "
            "overlap; choose different --out-key / --semantic-key"
        )
    with open_volume(input, key) as vol:
        shape, in_path, in_key = tuple(vol.shape), vol.path, vol.key
    protected = [("input", in_path, in_key)]
    if gt is not None:
        with open_volume(gt, gt_key) as gvol:
            protected.append(("ground truth", gvol.path, gvol.key))
    out_fmt = destination_format(out_path)
    for role, path, pkey in protected:
        where = f"{path}:{pkey}" if pkey else str(path)
        if _same(out_path, path):
            if out_fmt not in _CONTAINERS or pkey is None:
                raise OutputConflictError(
                    f"output {out_path} is the {role} {where}; it would be replaced. Write the "
                    "segmentation to another file"
                )
            hit = [k for k in written if _overlap(k, pkey)]
            if hit:
                raise OutputConflictError(
                    f"output {out_path}:{hit[0]} would overwrite the {role} {where}; choose "
                    "another output file or key (--out-key / --semantic-key)"
                )
        elif out_path.exists() and path.resolve().is_relative_to(out_path.resolve()):
            raise OutputConflictError(
                f"output {out_path} contains the {role} {where}; replacing it would delete the "
                f"{role}. Choose another output path"
            )
        if any(_same(p, path) for p in preview_paths(out_path).values()):
            raise OutputConflictError(
                f"the previews/scores of output {out_path} would overwrite the {role} {where}"
            )
    for k, dtype in zip(written, (np.uint64, np.uint8), strict=False):
        try:
            check_destination(out_path, shape, dtype, key=k, compression=compression)
        except VolumeError as exc:
            if out_fmt not in _CONTAINERS:
                raise OutputConflictError(
                    f"output {out_path}: a {out_fmt} file holds one unnamed array, but "
                    f"neurons-infer writes {len(written)} keyed arrays ({', '.join(written)}); "
                    "write to .h5 or .zarr"
                ) from exc
            raise
    return out_path, out_key
