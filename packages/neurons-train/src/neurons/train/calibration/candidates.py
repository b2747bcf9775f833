"""The decoders calibration can choose from, their parameter grids, and one way to run them.

The decoders come from the registry :data:`neurons.train.inference.decoders.DECODERS` (each
entry has ``needs``, ``defaults`` and a ``search_space``) and run through its ``decode`` entry
point. Where that registry is not installed, the two decoders of
:mod:`neurons.train.inference.decode` (seeded watershed of the class probability, mean-shift
of the instance embedding) are offered with the grids in :data:`FALLBACK_SPACES`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CalibrationError

__all__ = [
    "FALLBACK_SPACES",
    "Candidate",
    "available_candidates",
    "decode_with",
    "parameter_grid",
]

#: parameter grids of the built-in decoders when the decoder registry is absent
FALLBACK_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "watershed": {
        "defaults": {"seed_threshold": None, "seed_distance": 2.0, "sigma": 0.0, "min_size": 0},
        "search_space": {
            "seed_threshold": [None, 0.5, 0.6, 0.7, 0.8, 0.9],
            "sigma": [0.0, 1.0],
            "min_size": [0, 20],
        },
        "needs": ("semantic",),
    },
    "embedding": {
        "defaults": {"bandwidth": 0.5, "min_size": 0},
        "search_space": {"bandwidth": [0.25, 0.5, 0.75, 1.0], "min_size": [0, 20]},
        "needs": ("semantic", "instance"),
    },
}


@dataclass
class Candidate:
    """One decoder as calibration sees it.

    Attributes
    ----------
    name : str
        Registry name (what ``neurons-infer --decoder`` accepts).
    needs : tuple of str
        Model outputs the decoder reads.
    defaults : dict
        Its documented robust parameters (always tried first).
    search_space : dict
        Parameter -> candidate values.
    run : callable
        ``run(outputs, params, offsets, semantic_mode) -> uint64 instances``.
    """

    name: str
    needs: tuple[str, ...]
    defaults: dict[str, Any]
    search_space: dict[str, list[Any]]
    run: Callable[..., np.ndarray] = field(repr=False)


def _registry() -> tuple[Mapping[str, Any], Callable[..., np.ndarray]] | None:
    try:
        from neurons.train.inference.decoders import DECODERS, decode
    except ImportError:
        return None
    return DECODERS, decode


def _fallback_run(name: str) -> Callable[..., np.ndarray]:
    def run(outputs, params, offsets=None, semantic_mode=None):  # noqa: ARG001
        from neurons.train.inference.decode import DecodeConfig, decode_instances

        ins, _ = decode_instances(outputs, DecodeConfig(method=name, **dict(params)))
        return ins

    return run


def available_candidates(names: Sequence[str] | None = None) -> dict[str, Candidate]:
    """Decoders calibration may use, by name (all registered ones when ``names`` is None).

    Raises
    ------
    CalibrationError
        A name that is not a decoder.

    Examples
    --------
    >>> "watershed" in available_candidates()
    True
    """
    reg = _registry()
    table: dict[str, Candidate] = {}
    if reg is not None:
        decoders, decode = reg
        for name, spec in decoders.items():

            def run(outputs, params, offsets=None, semantic_mode=None, _n=name):
                kw = {} if semantic_mode is None else {"semantic_mode": semantic_mode}
                return decode(outputs, _n, dict(params), offsets=offsets, **kw)

            table[name] = Candidate(
                name=name,
                needs=tuple(spec.needs),
                defaults=dict(spec.defaults),
                search_space={k: list(v) for k, v in dict(spec.search_space).items()},
                run=run,
            )
    else:
        for name, spec in FALLBACK_SPACES.items():
            table[name] = Candidate(
                name=name,
                needs=tuple(spec["needs"]),
                defaults=dict(spec["defaults"]),
                search_space={k: list(v) for k, v in spec["search_space"].items()},
                run=_fallback_run(name),
            )
    if names is None:
        return table
    unknown = [n for n in names if n not in table]
    if unknown:
        raise CalibrationError(
            f"unknown decoder(s) {unknown} for calibration; available: {sorted(table)}"
        )
    return {n: table[n] for n in names}


def decode_with(
    outputs: Mapping[str, np.ndarray],
    decoder: str,
    params: Mapping[str, Any] | None = None,
    *,
    offsets: Sequence[Sequence[int]] | None = None,
    semantic_mode: str | None = None,
) -> np.ndarray:
    """Decode ``outputs`` with the named decoder and parameters (uint64 instances).

    Examples
    --------
    >>> p = np.zeros((2, 5, 9), np.float32); p[0] = 1; p[:, 1:4, 1:4] = [[[0]], [[1]]]
    >>> int(decode_with({"semantic": p}, "watershed", {"seed_threshold": 0.5}).max())
    1
    """
    cand = available_candidates([decoder])[decoder]
    merged = {**cand.defaults, **dict(params or {})}
    out = cand.run(outputs, merged, offsets, semantic_mode)
    return np.asarray(out).astype(np.uint64, copy=False)


def parameter_grid(
    search_space: Mapping[str, Sequence[Any]],
    defaults: Mapping[str, Any] | None = None,
    budget: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Parameter sets to try: the defaults first, then the grid (a random subset past ``budget``).

    Parameters
    ----------
    search_space : mapping
        Parameter -> candidate values; the full grid is their Cartesian product.
    defaults : mapping, optional
        Values of parameters not in the grid; the first set tried is exactly these defaults.
    budget : int, optional
        Most parameter sets returned (the defaults included). Past it the grid is subsampled
        uniformly without replacement (deterministic from ``seed``).

    Returns
    -------
    list of dict
        Distinct complete parameter sets.

    Examples
    --------
    >>> parameter_grid({"a": [1, 2]}, {"a": 1, "b": 0})
    [{'a': 1, 'b': 0}, {'a': 2, 'b': 0}]
    """
    base = dict(defaults or {})
    keys = list(search_space)
    combos = [
        {**base, **dict(zip(keys, vals, strict=True))}
        for vals in itertools.product(*(list(search_space[k]) for k in keys))
    ]
    out: list[dict[str, Any]] = [base] if base or not combos else []
    seen = {repr(sorted(base.items()))} if out else set()
    unique = []
    for c in combos:
        r = repr(sorted(c.items()))
        if r not in seen:
            seen.add(r)
            unique.append(c)
    if budget is not None:
        room = max(0, int(budget) - len(out))
        if len(unique) > room:
            pick = np.sort(np.random.default_rng(seed).choice(len(unique), room, replace=False))
            unique = [unique[i] for i in pick]
    return out + unique
