"""Checkpoints: atomic writes, ``ckpt_path=last`` resolution, RNG state, model loading."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from neurons.io.atomic import recover, sibling
from neurons.train.errors import CheckpointError

__all__ = [
    "AtomicCheckpointIO",
    "capture_rng_state",
    "load_checkpoint",
    "read_checkpoint",
    "resolve_ckpt_path",
    "restore_rng_state",
]

LAST_NAME = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file in its folder, fsync it, then rename it.

    A process killed at any moment (SIGKILL included) leaves either the previous complete
    file or the new complete file, never a truncated one. Temporary files start with a dot,
    so Lightning's ``last*.ckpt`` search never picks one up; those of killed runs are deleted by
    the next save of the same checkpoint (see :func:`neurons.io.atomic.recover`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike[str], storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        recover(path)  # deletes temporaries left by killed runs (dead writer, same host)
        tmp = sibling(path, "tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - e.g. filesystems without directory fsync
            pass


def resolve_ckpt_path(value: str | None, checkpoint_dir: str | os.PathLike[str]) -> str | None:
    """Turn ``training.ckpt_path`` into a file to resume from.

    Parameters
    ----------
    value : str or None
        ``None`` (fresh run), ``"last"`` (``<checkpoint_dir>/last.ckpt`` when it exists, else a
        fresh run) or a checkpoint file.
    checkpoint_dir : path-like
        Folder the run writes its checkpoints to.

    Returns
    -------
    str or None
        The file to resume from, or ``None``.

    Raises
    ------
    CheckpointError
        An explicit path that does not exist, or a file that is not a readable training
        checkpoint (empty, truncated, foreign, holding arbitrary Python objects).
    """
    if value is None or value == "":
        return None
    if value == "last":
        last = Path(checkpoint_dir) / LAST_NAME
        if not last.is_file():
            return None
        check_resume_checkpoint(last, "training.ckpt_path=last")
        return str(last)
    path = Path(value)
    if not path.is_file():
        raise CheckpointError(f"training.ckpt_path={value!r}: no such checkpoint file")
    check_resume_checkpoint(path, f"training.ckpt_path={value!r}")
    return str(path)


def _clean_reason(exc: BaseException) -> str:
    """torch's message without its advice to unpickle arbitrary objects (never given by us)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "weights_only" in first or "pickle" in first.lower() or len(first) > 200:
        return type(exc).__name__
    return first


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(2)


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load`` a checkpoint safely (tensors and plain containers only) with typed errors.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    map_location : str or torch.device
        Where to put the tensors.

    Returns
    -------
    dict
        The checkpoint.

    Raises
    ------
    CheckpointError
        Missing, empty, truncated or foreign file, or one holding arbitrary Python objects (never
        unpickled); the message names the file and the reason.

    Examples
    --------
    >>> ckpt = read_checkpoint("outputs/synthetic/checkpoints/last.ckpt")  # doctest: +SKIP
    """
    import pickle
    import warnings
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: empty file (0 bytes; the write that made it "
            "did not finish)"
        )
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = (
            "it holds Python objects other than tensors and plain containers, which are never "
            "unpickled (it was not written by neurons-train, or was tampered with)"
            if zipfile.is_zipfile(path)
            else f"not a PyTorch checkpoint ({size} bytes of another kind of file)"
        )
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {why}") from exc
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name and the reason
        why = (
            f"truncated or damaged zip archive ({_clean_reason(exc)})"
            if zipfile.is_zipfile(path) or _head(path) == b"PK"
            else f"not a PyTorch checkpoint ({size} bytes; {_clean_reason(exc)})"
        )
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {why}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{str(path)!r} is not a neurons-train checkpoint (holds a {type(ckpt).__name__}, "
            "expected a dict with 'state_dict')"
        )
    return ckpt


def check_resume_checkpoint(path: str | os.PathLike[str], what: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a readable Lightning checkpoint."""
    ckpt = read_checkpoint(path)
    missing = [k for k in ("state_dict", "global_step") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{what}: {str(path)!r} is not a training checkpoint to resume from (missing "
            f"{', '.join(map(repr, missing))})"
        )


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states as tensors / plain types (weights-only safe)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the global RNG is what we persist
    py_state = random.getstate()
    state: dict[str, Any] = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a training checkpoint.

    Parameters
    ----------
    path : path-like
        A ``.ckpt`` written by ``neurons-train``.
    map_location : str or torch.device
        Where to put the weights.

    Returns
    -------
    model : torch.nn.Module
        The network (``VistaModule.model``) with trained weights, in eval mode.
    cfg : dict
        The full training config the run used (plain dict).

    Raises
    ------
    CheckpointError
        Missing file, not a Neurons checkpoint, or weights that do not fit the config's model.

    Examples
    --------
    >>> model, cfg = load_checkpoint("outputs/synthetic/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> cfg["model"]["name"]
    'vista3d'
    """
    from neurons.train.builders import build_model_from_cfg

    ckpt = read_checkpoint(path, map_location)
    hparams = ckpt.get("hyper_parameters") or {}
    cfg = hparams.get("cfg")
    if not isinstance(cfg, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{str(path)!r} is not a neurons-train checkpoint (no hyper_parameters['cfg'] / "
            "state_dict)"
        )
    model = build_model_from_cfg(cfg)
    prefix = "model."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    heads = getattr(getattr(model, "heads", None), "heads", None)
    if heads is not None and "affinity" in heads and not any(".affinity." in k for k in state):
        del heads["affinity"]  # trained before the affinity head existed: no affinity output
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {str(path)!r} do not fit model {cfg['model']}: {exc}"
        ) from exc
    model.to(map_location)
    model.eval()
    return model, cfg
