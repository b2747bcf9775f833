"""neurons.metrics — exact, fast, out-of-core segmentation metrics for connectomics (no torch).

Everything is computed from one sparse, mergeable contingency table of (gt, pred) ids; see the
package README for conventions (VOI split = H(pred|gt), merge = H(gt|pred), log2; named ARAND
conventions) and edge-case values.
"""

from .ap import MITOEM_AREA_RANGES, MITOEM_IOU_THRESHOLDS, APResult, average_precision
from .conventions import (
    CONVENTIONS,
    CREMI_BORDER_NM,
    ISBIScores,
    apply_convention,
    apply_cremi_border_mask,
    cremi_border_mask,
    isbi2012_scores,
    snemi3d_crop,
    thin_boundaries,
)
from .distributed import distributed_table, evaluate_distributed
from .emi import expected_mutual_information
from .errors import InputError, MetricsError, ShapeMismatchError, TableMergeError, TEDError
from .instance import MatchResult, PQResult, match_instances, panoptic_quality
from .partition import (
    VOI,
    ARand,
    adapted_rand_error,
    adjusted_mutual_info,
    adjusted_rand_index,
    axi,
    cremi_score,
    mutual_information,
    normalized_mutual_info,
    rand_index,
    variation_of_information,
)
from .report import DEFAULT_METRICS, METRICS, Report, evaluate, evaluate_batch
from .semantic import ClassScores, dice, iou
from .table import ContingencyTable, contingency_table
from .ted import EditCounts, TEDResult, split_merge_edits, tolerant_edit_distance

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ContingencyTable",
    "contingency_table",
    "VOI",
    "ARand",
    "variation_of_information",
    "adapted_rand_error",
    "cremi_score",
    "rand_index",
    "adjusted_rand_index",
    "mutual_information",
    "adjusted_mutual_info",
    "normalized_mutual_info",
    "expected_mutual_information",
    "axi",
    "ClassScores",
    "dice",
    "iou",
    "MatchResult",
    "APResult",
    "PQResult",
    "MITOEM_AREA_RANGES",
    "MITOEM_IOU_THRESHOLDS",
    "match_instances",
    "average_precision",
    "panoptic_quality",
    "EditCounts",
    "TEDResult",
    "split_merge_edits",
    "tolerant_edit_distance",
    "CONVENTIONS",
    "CREMI_BORDER_NM",
    "ISBIScores",
    "apply_convention",
    "apply_cremi_border_mask",
    "cremi_border_mask",
    "isbi2012_scores",
    "snemi3d_crop",
    "thin_boundaries",
    "Report",
    "evaluate",
    "evaluate_batch",
    "evaluate_distributed",
    "distributed_table",
    "METRICS",
    "DEFAULT_METRICS",
    "MetricsError",
    "InputError",
    "ShapeMismatchError",
    "TableMergeError",
    "TEDError",
]
