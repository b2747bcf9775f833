"""neurons.train.inference — segment volumes of any size with a trained model.

sliding window (Gaussian blending, global window grid, flip TTA) -> instance decoding
(mean-shift on embeddings / seeded watershed, per unified class) -> block-wise stitching with
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
from .errors import CheckpointError, DecodeError, InferenceError, StitchError
from .pipeline import InferenceRun, evaluate_segmentation, run_inference
from .previews import preview_paths, write_previews
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
    "INSTANCE_CLASSES",
    "BlockGrid",
    "CheckpointError",
    "DecodeConfig",
    "DecodeError",
    "InferenceError",
    "InferenceRun",
    "InferenceSettings",
    "Predictor",
    "SegmentationResult",
    "SlidingWindow",
    "StitchError",
    "cluster_embeddings",
    "compute_tasks",
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
    "segment_volume",
    "seeded_watershed",
    "semantic_argmax",
    "settings_from_config",
    "union_find_lut",
    "window_starts",
    "write_previews",
]
