"""neurons.io — open, read and write connectomics volumes.

Formats: HDF5, TIFF stacks, folders of TIFF/PNG slices, PNG, NRRD, NIfTI, NumPy ``.npy`` and
(with the ``zarr`` extra) Zarr v2/v3. Arrays are (Z, Y, X); voxel sizes (z, y, x) in nm.
"""

from .detect import detect_format
from .errors import (
    CorruptFileError,
    InvalidVolumeError,
    KeyNotFoundError,
    MissingDependencyError,
    PathError,
    UnknownFormatError,
    UnsupportedDtypeError,
    VolumeError,
    VolumeReadError,
    VolumeWriteError,
)
from .paths import split_key
from .render import label_colors, render_section
from .volume import Volume, list_keys, open_volume, read_volume
from .write import check_destination, convert_volume, write_blocks, write_volume

__version__ = "0.1.0"

__all__ = [
    "CorruptFileError",
    "InvalidVolumeError",
    "KeyNotFoundError",
    "MissingDependencyError",
    "PathError",
    "UnknownFormatError",
    "UnsupportedDtypeError",
    "Volume",
    "VolumeError",
    "VolumeReadError",
    "VolumeWriteError",
    "__version__",
    "check_destination",
    "convert_volume",
    "detect_format",
    "list_keys",
    "open_volume",
    "label_colors",
    "read_volume",
    "render_section",
    "split_key",
    "write_blocks",
    "write_volume",
]
