"""neurons.train.inference — segment volumes of any size with a trained model.

sliding window (Gaussian blending, global window grid, flip TTA) -> instance decoding
(mutex watershed / waterz agglomeration of affinities, embedding decoder, seeded
watershed, mean-shift; one registry, per unified class) -> block-wise stitching with
ids consistent across blocks (halo matching + union-find), executed with dask, streamed from and
to disk through :mod:`neurons.io` -> PNG previews and scores (:mod:`neurons.metrics`).
"""

from .checkpoint import InferenceSettings, idle_cpu_threads, load_model, settings_from_config
from .decode import (
    INSTANCE_CLASSES,
    DecodeConfig,
    cluster_embeddings,
    decode_instances,
    label_components,
    relabel_sequential,
    remove_small_objects,
    seeded_watershed,
    semantic_argmax,
)
from .decoders import DECODERS, SEMANTIC_MODES, DecoderSpec, decode
from .errors import CheckpointError, DecodeError, InferenceError, StitchError
from .pipeline import InferenceRun, evaluate_segmentation, run_inference
from .previews import preview_paths, write_previews
from .distributed import segment_distributed
from .sliding import (
    SlidingWindow,
    gaussian_weight,
    normalize_intensity,
    predict_region,
    predict_volume,
    training_intensity_range,
    window_starts,
)
from .stitch import (
    BlockGrid,
    Predictor,
    SegmentationResult,
    compute_tasks,
    match_pairs,
    segment_blockwise,
    segment_volume,
    union_find_lut,
)

__all__ = [
    "DECODERS",
    "INSTANCE_CLASSES",
    "SEMANTIC_MODES",
    "BlockGrid",
    "CheckpointError",
    "DecodeConfig",
    "DecodeError",
    "DecoderSpec",
    "InferenceError",
    "InferenceRun",
    "InferenceSettings",
    "Predictor",
    "SegmentationResult",
    "SlidingWindow",
    "StitchError",
    "cluster_embeddings",
    "compute_tasks",
    "decode",
    "decode_instances",
    "evaluate_segmentation",
    "gaussian_weight",
    "idle_cpu_threads",
    "label_components",
    "load_model",
    "match_pairs",
    "normalize_intensity",
    "predict_region",
    "predict_volume",
    "training_intensity_range",
    "preview_paths",
    "relabel_sequential",
    "remove_small_objects",
    "run_inference",
    "segment_blockwise",
    "segment_distributed",
    "segment_volume",
    "seeded_watershed",
    "semantic_argmax",
    "settings_from_config",
    "union_find_lut",
    "window_starts",
    "write_previews",
]
