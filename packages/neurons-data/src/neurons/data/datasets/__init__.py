"""Readers for the public EM datasets, laid out as distributed, plus the synthetic generator."""

from .base import EMDataset
from .cremi3d import CREMI3DDataset
from .isbi2012 import ISBI2012Dataset
from .microns import CloudVolumeArray, MICRONSDataset
from .mitoem2 import MitoEM2Dataset
from .snemi3d import SNEMI3DDataset
from .synthetic import SyntheticDataset
from .volumes import VolumesDataset, VolumeSpecError

DATASETS: dict[str, type[EMDataset]] = {
    "snemi3d": SNEMI3DDataset,
    "cremi3d": CREMI3DDataset,
    "microns": MICRONSDataset,
    "mitoem2": MitoEM2Dataset,
    "isbi2012": ISBI2012Dataset,
    "synthetic": SyntheticDataset,
    "volumes": VolumesDataset,
}

__all__ = [
    "CREMI3DDataset",
    "CloudVolumeArray",
    "DATASETS",
    "EMDataset",
    "ISBI2012Dataset",
    "MICRONSDataset",
    "MitoEM2Dataset",
    "SNEMI3DDataset",
    "SyntheticDataset",
    "VolumeSpecError",
    "VolumesDataset",
]
