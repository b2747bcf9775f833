"""Where a calibration lives: inside the checkpoint, or in a JSON file next to it.

* **Embedded** (what training writes into its own checkpoints): the entry
  ``checkpoint["neurons_calibration"]`` holds :meth:`CalibrationResult.to_dict` — plain
  containers only, so ``torch.load(..., weights_only=True)`` keeps working. The checkpoint is
  rewritten atomically (temporary file in the same folder, fsync, rename); every other entry is
  kept as it was.
* **Sidecar** (what ``neurons-tune CKPT`` writes by default, leaving the checkpoint the user
  named untouched): ``<CKPT>.calibration.json``, written atomically. It records the
  checkpoint's ``global_step`` and file size; :func:`read_calibration` ignores (with a warning)
  a sidecar that no longer matches its checkpoint, e.g. after training resumed.

:func:`read_calibration` prefers a matching sidecar over the embedded entry.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .errors import CalibrationError
from .search import CalibrationResult

__all__ = [
    "CALIBRATION_KEY",
    "embed_calibration",
    "read_calibration",
    "sidecar_path",
    "write_sidecar",
]

#: checkpoint entry holding the calibration
CALIBRATION_KEY = "neurons_calibration"


def sidecar_path(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>.calibration.json``.

    Examples
    --------
    >>> sidecar_path("runs/last.ckpt").name
    'last.ckpt.calibration.json'
    """
    p = Path(checkpoint)
    return p.with_name(p.name + ".calibration.json")


def _load(path: Path, mmap: bool = True) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise CalibrationError(f"checkpoint {str(path)!r} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise CalibrationError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(ck, dict):
        raise CalibrationError(f"{str(path)!r} is not a neurons-train checkpoint (not a dict)")
    return ck


def _fingerprint(path: Path, ck: dict[str, Any] | None = None) -> dict[str, int | None]:
    if ck is None:
        ck = _load(path)
    step = ck.get("global_step")
    return {"global_step": None if step is None else int(step), "size": path.stat().st_size}


def embed_calibration(checkpoint: str | os.PathLike, result: CalibrationResult) -> Path:
    """Write ``result`` into ``checkpoint`` (atomic rewrite; other entries unchanged).

    Examples
    --------
    >>> embed_calibration("run/checkpoints/last.ckpt", result)  # doctest: +SKIP
    """
    from neurons.train.checkpointing import AtomicCheckpointIO

    path = Path(checkpoint)
    ck = _load(path, mmap=False)
    data = result.to_dict()
    if data.get("global_step") is None and ck.get("global_step") is not None:
        data["global_step"] = int(ck["global_step"])
    ck[CALIBRATION_KEY] = data
    AtomicCheckpointIO().save_checkpoint(ck, path)
    return path


def write_sidecar(
    checkpoint: str | os.PathLike, result: CalibrationResult, path: str | os.PathLike | None = None
) -> Path:
    """Write ``result`` as JSON next to ``checkpoint`` (atomic); returns the file written."""
    ck_path = Path(checkpoint)
    out = Path(path) if path is not None else sidecar_path(ck_path)
    data = result.to_dict()
    fp = _fingerprint(ck_path)
    data["checkpoint"] = {"name": ck_path.name, **fp}
    if data.get("global_step") is None:
        data["global_step"] = fp["global_step"]
    from neurons.io.atomic import atomic_destination

    with atomic_destination(out, directory=False, keep_existing=False) as tmp:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=True))
    return out


def read_calibration(checkpoint: str | os.PathLike) -> CalibrationResult | None:
    """The calibration of ``checkpoint`` (matching sidecar first, then the embedded entry).

    Returns None when the checkpoint carries none.

    Examples
    --------
    >>> cal = read_calibration("run/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> cal.summary()  # doctest: +SKIP
    """
    path = Path(checkpoint)
    ck = _load(path)
    side = sidecar_path(path)
    if side.is_file():
        try:
            data = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"cannot read calibration file {str(side)!r}: {exc}") from exc
        recorded = {k: data.get("checkpoint", {}).get(k) for k in ("global_step", "size")}
        if recorded == _fingerprint(path, ck):
            return CalibrationResult.from_dict(data)
        warnings.warn(
            f"{side} was written for another state of {path.name} (recorded {recorded}, "
            f"found {_fingerprint(path, ck)}): ignored; run neurons-tune again",
            UserWarning,
            stacklevel=2,
        )
    data = ck.get(CALIBRATION_KEY)
    if data is None:
        return None
    return CalibrationResult.from_dict(data)
