"""neurons.train.calibration — decoders calibrated on the validation split, stored with the model.

:func:`calibrate` predicts the held-out validation regions of a checkpoint's own data config
once, searches every decoder's parameters on them (grid over the registry's ``search_space``,
bounded by a budget) for the best score of a :mod:`neurons.metrics` objective (CREMI score by
default), and stores the winner with the checkpoint; ``neurons-infer`` uses it when given no
decoder flags. ``neurons-tune CKPT`` is the command line.
"""

from .api import calibrate, model_offsets
from .candidates import (
    FALLBACK_SPACES,
    Candidate,
    available_candidates,
    decode_with,
    parameter_grid,
)
from .errors import CalibrationError
from .objective import OBJECTIVES, Objective, get_objective, score_samples
from .resolve import (
    DecoderChoice,
    apply_decoder,
    choose_decoder,
    foreground_fraction,
    warn_if_empty,
)
from .search import CalibrationResult, DecoderResult, search_decoders
from .storage import (
    CALIBRATION_KEY,
    embed_calibration,
    read_calibration,
    sidecar_path,
    write_sidecar,
)
from .validation import ValidationSample, predict_validation, validation_regions

__all__ = [
    "CALIBRATION_KEY",
    "FALLBACK_SPACES",
    "OBJECTIVES",
    "CalibrationError",
    "CalibrationResult",
    "Candidate",
    "DecoderChoice",
    "DecoderResult",
    "Objective",
    "ValidationSample",
    "apply_decoder",
    "available_candidates",
    "calibrate",
    "choose_decoder",
    "decode_with",
    "embed_calibration",
    "foreground_fraction",
    "get_objective",
    "model_offsets",
    "parameter_grid",
    "predict_validation",
    "read_calibration",
    "score_samples",
    "search_decoders",
    "sidecar_path",
    "validation_regions",
    "warn_if_empty",
    "write_sidecar",
]
