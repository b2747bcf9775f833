"""What ``neurons-infer`` decodes with: calibrated decoder, explicit flags, or robust defaults.

Precedence (highest first):

1. explicit flags: ``--decoder`` and any decoder parameter (``--min-size``, ``--bandwidth``,
   ``decode_options``) — parameters given alone adjust the decoder that would otherwise run;
2. the checkpoint's calibration (:func:`~.storage.read_calibration`), when ``--decoder`` is not
   given or names the calibrated decoder;
3. the documented defaults of the training config's ``inference`` section.

A decoder that returns no object where the semantic head predicts foreground is reported by
:func:`warn_if_empty` (a ``UserWarning``, printed on stderr).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .search import CalibrationResult

__all__ = [
    "DecoderChoice",
    "apply_decoder",
    "choose_decoder",
    "foreground_fraction",
    "warn_if_empty",
]

#: foreground fraction (semantic map != 0) above which an empty segmentation is reported
EMPTY_WARN_FRACTION = 0.01


@dataclass
class DecoderChoice:
    """The decoder ``neurons-infer`` runs and why.

    Attributes
    ----------
    decoder : str or None
        Decoder name (None: the config's default, e.g. ``auto``).
    params : dict
        Parameters on top of the decoder's defaults.
    source : str
        ``"calibrated"``, ``"calibrated+flags"``, ``"flags"`` or ``"defaults"``.
    calibration : CalibrationResult or None
        The stored calibration (also when flags overrode it).
    """

    decoder: str | None
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "defaults"
    calibration: CalibrationResult | None = None
    semantic_mode: str | None = None

    def describe(self) -> str:
        """One line: decoder, parameters, where they come from and the validation score."""
        params = "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(self.params.items())) + "}"
        if self.semantic_mode is not None:
            params += f" semantic_mode={self.semantic_mode}"
        line = f"decoder: {self.decoder or 'auto'} {params} ({self.source}"
        cal = self.calibration
        if cal is not None and self.source.startswith("calibrated"):
            line += f"; validation {cal.key} {cal.score:.4f} on {cal.samples} sample(s)"
        elif cal is not None:
            line += f"; calibrated was {cal.decoder}, validation {cal.key} {cal.score:.4f}"
        elif self.source == "defaults":
            line += "; no calibration in the checkpoint: run neurons-tune CKPT"
        return line + ")"


def choose_decoder(
    calibration: CalibrationResult | None,
    decoder: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DecoderChoice:
    """Combine flags and calibration (see the module docstring).

    Examples
    --------
    >>> choose_decoder(None, None, {"min_size": 5}).source
    'flags'
    """
    over = {k: v for k, v in dict(overrides or {}).items() if v is not None}
    if calibration is not None and decoder in (None, calibration.decoder):
        params = {**calibration.params, **over}
        src = "calibrated+flags" if over or decoder is not None else "calibrated"
        return DecoderChoice(
            calibration.decoder, params, src, calibration, calibration.semantic_mode
        )
    src = "flags" if decoder is not None or over else "defaults"
    return DecoderChoice(decoder, over, src, calibration)


def apply_decoder(base: Any, choice: DecoderChoice) -> Any:
    """A copy of the :class:`~neurons.train.inference.DecodeConfig` ``base`` running ``choice``.

    Parameters named like a field of the config set that field; the others go to its
    ``params`` mapping when it has one (decoders of the registry).

    Raises
    ------
    CalibrationError
        A parameter the decode configuration cannot carry.
    """
    from .errors import CalibrationError

    names = {f.name for f in dataclasses.fields(base)}
    direct = {k: v for k, v in choice.params.items() if k in names and k != "params"}
    rest = {k: v for k, v in choice.params.items() if k not in direct}
    kw: dict[str, Any] = dict(direct)
    if choice.decoder is not None:
        kw["method"] = choice.decoder
    if choice.semantic_mode in ("classes", "dense") and "dense" in names:
        kw["dense"] = choice.semantic_mode == "dense"
    if rest:
        if "params" not in names:
            raise CalibrationError(
                f"decoder parameters {sorted(rest)} are not settings of {type(base).__name__}"
            )
        kw["params"] = {**dict(getattr(base, "params", None) or {}), **rest}
    return dataclasses.replace(base, **kw)


def foreground_fraction(semantic: Any, slab: int = 16) -> float:
    """Fraction of voxels whose semantic class is not background (0) or ignore (255).

    Reads ``slab`` planes at a time, so a lazy on-disk volume is never loaded whole.

    Examples
    --------
    >>> foreground_fraction(np.array([[0, 1], [2, 0]]))
    0.5
    """
    shape = tuple(semantic.shape)
    if not shape or int(np.prod(shape)) == 0:
        return 0.0
    fg = 0
    for z in range(0, shape[0], slab):
        s = np.asarray(semantic[z : z + slab])
        fg += int(np.count_nonzero((s != 0) & (s != 255)))
    return fg / float(np.prod(shape))


def warn_if_empty(
    num_objects: int, semantic: Any, *, decoder: str | None = None, where: str = ""
) -> bool:
    """Warn (``UserWarning``) when ``num_objects`` is 0 but the semantic map has foreground.

    Parameters
    ----------
    num_objects : int
        Objects the decoder produced.
    semantic : array-like or None
        Semantic classes predicted for the same voxels (None: foreground unknown, an empty
        result is reported anyway).

    Returns
    -------
    bool
        Whether a warning was issued.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as w:
    ...     warnings.simplefilter("always")
    ...     warn_if_empty(0, np.ones((4, 4), np.uint8), decoder="watershed")
    True
    """
    if num_objects > 0:
        return False
    frac = None if semantic is None else foreground_fraction(semantic)
    if frac is not None and frac <= EMPTY_WARN_FRACTION:
        return False
    seen = "unknown" if frac is None else f"{100 * frac:.1f} % of the voxels"
    warnings.warn(
        f"EMPTY SEGMENTATION{' of ' + where if where else ''}: decoder "
        f"{decoder or 'auto'!r} produced no object although the semantic head predicts "
        f"foreground ({seen}); its parameters do not fit this model - calibrate them "
        "(neurons-tune CKPT) or pass other --decoder settings",
        UserWarning,
        stacklevel=2,
    )
    return True
