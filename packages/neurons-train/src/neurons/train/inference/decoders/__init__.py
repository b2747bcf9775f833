"""Decoders: model outputs + parameters -> uint64 instances, one small module each.

* ``mutex_watershed`` (:mod:`.mutex`) — mutex watershed of the affinities;
* ``agglomeration`` (:mod:`.agglomeration`) — waterz fragments + mean-affinity merging;
* ``embedding`` (:mod:`.embedding`) — embedding distances -> affinities -> mutex watershed;
* ``watershed`` (:mod:`.watershed`) — seeded watershed of the class probability;
* ``meanshift`` (:mod:`.meanshift`) — mean-shift of the embedding (the predecessor's decoder).

All go through :func:`decode` (registry :data:`DECODERS`) and run block by block with the
stitching of :mod:`neurons.train.inference.stitch`.
"""

from .agglomeration import SCORING_FUNCTIONS, agglomerate, agglomerate_all
from .base import DecoderSpec, cut_region_edges, pair_slices, resolve_offsets
from .embedding import embedding_affinities
from .labels import (
    INSTANCE_CLASSES,
    NUM_CLASSES,
    label_components,
    relabel_sequential,
    remove_small_objects,
    semantic_argmax,
)
from .meanshift import cluster_embeddings
from .mutex import mutex_watershed
from .registry import DECODERS, SEMANTIC_MODES, decode, resolve_decoder
from .watershed import seeded_watershed

__all__ = [
    "DECODERS",
    "INSTANCE_CLASSES",
    "NUM_CLASSES",
    "SCORING_FUNCTIONS",
    "SEMANTIC_MODES",
    "DecoderSpec",
    "agglomerate",
    "agglomerate_all",
    "cluster_embeddings",
    "cut_region_edges",
    "decode",
    "embedding_affinities",
    "label_components",
    "mutex_watershed",
    "pair_slices",
    "relabel_sequential",
    "remove_small_objects",
    "resolve_decoder",
    "resolve_offsets",
    "seeded_watershed",
    "semantic_argmax",
]
