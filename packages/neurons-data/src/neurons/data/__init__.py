"""neurons.data — EM datasets, augmentations, datamodules and the unified label space.

Readers find the public EM datasets laid out as distributed (SNEMI3D, CREMI, MICrONS, MitoEM2,
ISBI 2012) or generate synthetic EM; samplers serve random training patches, deterministic
held-out validation grids and whole test volumes in one batch format (see the README).
"""

from .datamodule import (
    DATAMODULES,
    CombineDataModule,
    CREMI3DDataModule,
    EMDataModule,
    ISBI2012DataModule,
    MICRONSDataModule,
    MitoEM2DataModule,
    SNEMI3DDataModule,
    SyntheticDataModule,
    build_datamodule,
)
from .datasets import (
    DATASETS,
    CloudVolumeArray,
    CREMI3DDataset,
    EMDataset,
    ISBI2012Dataset,
    MICRONSDataset,
    MitoEM2Dataset,
    SNEMI3DDataset,
    SyntheticDataset,
    VolumesDataset,
    VolumeSpecError,
)
from .errors import (
    ChecksumError,
    DataError,
    DownloadError,
    EmptyDatasetError,
    MissingDataError,
    OfflineError,
    PatchSizeError,
    ShapeMismatchError,
)
from .labels import (
    DATASET_MAPPINGS,
    IGNORE_INDEX,
    NUM_UNIFIED_CLASSES,
    UNIFIED_CLASSES,
    renumber_instances,
    semantic_ids_vector,
)
from .sampling import (
    EpochSampler,
    GridPatchDataset,
    MixtureDataset,
    RandomPatchDataset,
    WholeVolumeDataset,
)
from .splits import Region, split_regions
from .synthetic import make_synthetic_volume
from .transforms import build_augmentation
from .volume import ArraySource, LabeledVolume, intensity_range, scale_intensity
from .volume_splits import BoxRegion
from .volumes_datamodule import VolumesDataModule

__version__ = "0.1.0"

__all__ = [
    "ArraySource",
    "BoxRegion",
    "CREMI3DDataModule",
    "CREMI3DDataset",
    "ChecksumError",
    "CloudVolumeArray",
    "CombineDataModule",
    "DATAMODULES",
    "DATASETS",
    "DATASET_MAPPINGS",
    "DataError",
    "DownloadError",
    "EMDataModule",
    "EMDataset",
    "EmptyDatasetError",
    "EpochSampler",
    "GridPatchDataset",
    "IGNORE_INDEX",
    "ISBI2012DataModule",
    "ISBI2012Dataset",
    "LabeledVolume",
    "MICRONSDataModule",
    "MICRONSDataset",
    "MissingDataError",
    "MitoEM2DataModule",
    "MitoEM2Dataset",
    "MixtureDataset",
    "NUM_UNIFIED_CLASSES",
    "OfflineError",
    "PatchSizeError",
    "RandomPatchDataset",
    "Region",
    "SNEMI3DDataModule",
    "SNEMI3DDataset",
    "ShapeMismatchError",
    "SyntheticDataModule",
    "SyntheticDataset",
    "UNIFIED_CLASSES",
    "VolumeSpecError",
    "VolumesDataModule",
    "VolumesDataset",
    "WholeVolumeDataset",
    "__version__",
    "build_augmentation",
    "build_datamodule",
    "intensity_range",
    "make_synthetic_volume",
    "renumber_instances",
    "scale_intensity",
    "semantic_ids_vector",
    "split_regions",
]
