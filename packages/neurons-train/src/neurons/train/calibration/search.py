"""Search each decoder's parameters on validation samples and pick the best decoder.

The search is a grid over the decoder's ``search_space`` (its documented defaults first; a
deterministic random subset of the grid when it exceeds ``budget`` trials), each trial
decoding every validation sample and scoring it with one objective. A parameter set that
returns no object where the semantic head predicts foreground is rejected, whatever its score. A time limit per decoder
bounds the cost; what was tried, and how long it took, is part of the result.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .candidates import Candidate, available_candidates, parameter_grid
from .errors import CalibrationError
from .objective import Objective, get_objective, score_samples
from .validation import ValidationSample

__all__ = ["CalibrationResult", "DecoderResult", "search_decoders"]

#: a parameter set that decodes no object in a sample whose semantic output predicts more than
#: this fraction of foreground voxels is rejected
EMPTY_FRACTION = 0.01


@dataclass
class DecoderResult:
    """Best parameters of one decoder.

    Attributes
    ----------
    params : dict
        Best complete parameter set (None when every trial failed or it was skipped).
    score : float
        Mean objective over the validation samples reached with ``params``.
    trials : int
        Parameter sets evaluated.
    seconds : float
        Time spent decoding and scoring.
    skipped : str or None
        Why the decoder was not searched (e.g. the model has no ``affinity`` output).
    semantic_mode : str or None
        How the semantic output was used for the best score (``classes``/``dense``; None: the
        decoder default).
    """

    params: dict[str, Any] | None = None
    score: float = float("nan")
    trials: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    semantic_mode: str | None = None


@dataclass
class CalibrationResult:
    """Outcome of a calibration: what ``neurons-infer`` uses when given no decoder flags.

    Attributes
    ----------
    decoder : str
        The decoder with the best validation score.
    params : dict
        Its parameters.
    metric : str
        Objective name (``"cremi"``...), ``key`` the report key (``"cremi_score"``) and
        ``higher_is_better`` its direction.
    score : float
        Best mean validation score.
    per_decoder : dict of str to DecoderResult
        Every decoder's best (or why it was skipped).
    seconds : float
        Total time (prediction + search).
    samples, voxels : int
        Validation samples and voxels scored.
    """

    decoder: str
    params: dict[str, Any]
    metric: str
    key: str
    higher_is_better: bool
    score: float
    per_decoder: dict[str, DecoderResult] = field(default_factory=dict)
    seconds: float = 0.0
    predict_seconds: float = 0.0
    samples: int = 0
    voxels: int = 0
    offsets: list[list[int]] | None = None
    semantic_mode: str | None = None
    global_step: int | None = None
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (str/int/float/bool/None/list/dict): safe for ``weights_only``."""
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        d = dict(data)
        per = {k: DecoderResult(**v) for k, v in dict(d.pop("per_decoder", {}) or {}).items()}
        known = set(cls.__dataclass_fields__)
        return cls(per_decoder=per, **{k: v for k, v in d.items() if k in known})

    def summary(self) -> str:
        """One line: decoder, parameters and validation score."""
        return (
            f"{self.decoder} {_fmt_params(self.params)} "
            f"(validation {self.key} {self.score:.4f}, {self.samples} samples)"
        )


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fmt_params(params: Mapping[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(params.items())) + "}"


def _has_foreground(outputs: Mapping[str, np.ndarray], fraction: float = EMPTY_FRACTION) -> bool:
    """Whether the semantic output predicts a non-background class on > ``fraction`` of voxels."""
    probs = outputs.get("semantic")
    if probs is None:
        return False
    probs = np.asarray(probs)
    return float(np.mean(np.argmax(probs[:5], axis=0) != 0)) > fraction


def _search_one(
    cand: Candidate,
    samples: Sequence[ValidationSample],
    objective: Objective,
    budget: int | None,
    time_limit: float | None,
    offsets: Any,
    semantic_mode: str | None,
) -> DecoderResult:
    missing = sorted({k for s in samples for k in cand.needs if k not in s.outputs})
    if missing:
        return DecoderResult(skipped=f"model has no {', '.join(missing)} output")
    gts = [s.gt for s in samples]
    with_fg = [i for i, s in enumerate(samples) if _has_foreground(s.outputs)]
    res = DecoderResult()
    empty = 0
    t0 = time.perf_counter()
    errors: list[str] = []
    for params in parameter_grid(cand.search_space, cand.defaults, budget):
        if time_limit is not None and res.trials and time.perf_counter() - t0 > time_limit:
            break
        try:
            preds = [cand.run(s.outputs, params, offsets, semantic_mode) for s in samples]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - one bad parameter set must not end the
            # search (BaseException: a Rust panic of a decoder library is not an Exception)
            errors.append(f"{params}: {exc}")
            res.trials += 1
            continue
        res.trials += 1
        if any(not np.any(preds[i]) for i in with_fg):
            empty += 1  # never calibrate to settings that give nothing where objects are seen
            continue
        score = score_samples(gts, [np.asarray(p) for p in preds], objective)
        if res.params is None or objective.better(score, res.score):
            res.params, res.score = dict(params), score
    res.seconds = time.perf_counter() - t0
    if res.params is None:
        why = errors[0] if errors else "no trials"
        if empty:
            why = f"{empty} gave no object where the semantic head predicts foreground"
        res.skipped = "every parameter set failed: " + why
    elif errors:
        warnings.warn(
            f"calibration of decoder {cand.name!r}: {len(errors)} parameter set(s) failed, "
            f"e.g. {errors[0]}",
            stacklevel=3,
        )
    return res


def search_decoders(
    samples: Sequence[ValidationSample],
    *,
    decoders: Sequence[str] | None = None,
    metric: str | Objective = "cremi",
    budget: int | None = 24,
    time_limit: float | None = None,
    offsets: Sequence[Sequence[int]] | None = None,
    semantic_mode: str | None = None,
    semantic_modes: Sequence[str | None] | None = None,
) -> CalibrationResult:
    """Best decoder and parameters for ``samples`` by ``metric``.

    Parameters
    ----------
    samples : sequence of ValidationSample
        Predicted validation regions with their ground truth.
    decoders : sequence of str, optional
        Decoder names (default: every registered decoder).
    metric : str
        Objective (see :data:`~.objective.OBJECTIVES`), default the CREMI score.
    budget : int, optional
        Most parameter sets tried per decoder.
    time_limit : float, optional
        Seconds per decoder after which no new parameter set is started.
    offsets, semantic_mode
        Passed to the decoders: the model's affinity offsets; how the semantic output is used
        (``classes``, ``dense`` or ``none``; None: the decoder default).
    semantic_modes : sequence, optional
        Search these semantic modes too (e.g. ``["classes", "dense"]``; overrides
        ``semantic_mode``); the best one is stored with the decoder.

    Returns
    -------
    CalibrationResult

    Raises
    ------
    CalibrationError
        No samples, or no decoder could be run on them.

    Examples
    --------
    >>> res = search_decoders(samples, decoders=["watershed"])  # doctest: +SKIP
    >>> res.decoder, res.score  # doctest: +SKIP
    """
    if not samples:
        raise CalibrationError("no validation samples to calibrate on")
    objective = get_objective(metric)
    cands = available_candidates(decoders)
    t0 = time.perf_counter()
    modes = list(semantic_modes) if semantic_modes else [semantic_mode]
    per: dict[str, DecoderResult] = {}
    for name, c in cands.items():
        for mode in modes:
            r = _search_one(c, samples, objective, budget, time_limit, offsets, mode)
            r.semantic_mode = mode
            old = per.get(name)
            if old is None or (
                r.params is not None
                and (old.params is None or objective.better(r.score, old.score))
            ):
                if old is not None:
                    r.trials, r.seconds = r.trials + old.trials, r.seconds + old.seconds
                per[name] = r
            else:
                old.trials, old.seconds = old.trials + r.trials, old.seconds + r.seconds
    ranked = [n for n, r in per.items() if r.params is not None]
    if not ranked:
        reasons = "; ".join(f"{n}: {r.skipped}" for n, r in per.items())
        raise CalibrationError(f"no decoder could be calibrated ({reasons})")
    best = ranked[0]
    for name in ranked[1:]:
        if objective.better(per[name].score, per[best].score):
            best = name
    return CalibrationResult(
        decoder=best,
        params=dict(per[best].params or {}),
        metric=objective.name,
        key=objective.key,
        higher_is_better=objective.higher_is_better,
        score=float(per[best].score),
        per_decoder=per,
        seconds=time.perf_counter() - t0,
        samples=len(samples),
        voxels=int(sum(s.voxels for s in samples)),
        offsets=None if offsets is None else [list(map(int, o)) for o in offsets],
        semantic_mode=per[best].semantic_mode,
    )
