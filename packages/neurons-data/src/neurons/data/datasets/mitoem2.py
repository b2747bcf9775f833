"""MitoEM 2.0 (nnU-Net layout): ``DatasetNNN_ME2-<Name>/imagesTr|labelsTr/*.nii.gz``."""

from __future__ import annotations

from pathlib import Path

from ..labels import BACKGROUND, MITOCHONDRION, MITOCHONDRION_BOUNDARY, mitoem2_to_unified
from ..volume import ArraySource, LabeledVolume
from .base import EMDataset, io_attrs, natural_key

__all__ = ["MitoEM2Dataset"]

#: Voxel sizes (z, y, x) nm of the sub-datasets (used when the NIfTI header has none).
SUBSET_VOXEL_SIZE = {
    "Beta": (16.0, 16.0, 16.0),
    "Jurkat": (16.0, 16.0, 16.0),
    "Macro": (16.0, 16.0, 16.0),
    "Mossy": (30.0, 8.0, 8.0),
    "Podo": (16.0, 16.0, 16.0),
    "Pyra": (30.0, 8.0, 8.0),
    "Sperm": (16.0, 16.0, 16.0),
    "Stem": (30.0, 8.0, 8.0),
}


class MitoEM2Dataset(EMDataset):
    """MitoEM2 reader.

    Layout (as extracted from the Zenodo zips)::

        Dataset001_ME2-Beta/imagesTr/<case>_0000.nii.gz   labelsTr/<case>.nii.gz
                            imagesTs/<case>_0000.nii.gz   labelsTs/<case>.nii.gz (optional)

    Labels: 0 background, 1 mitochondrion, 2 boundary. NIfTI ``(x, y, z)`` is transposed to
    ``(z, y, x)`` by :mod:`neurons.io`. Each volume is its own group, so splits are stratified
    per sub-dataset.

    Parameters
    ----------
    datasets : sequence of str, optional
        Sub-datasets by name (``"Beta"``) or folder (``"Dataset001_ME2-Beta"``); default all.
    """

    name = "mitoem2"
    download_script = "download_mitoem2.py"

    def __init__(self, root: str | Path | None = None, datasets: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__(root)
        self.requested = tuple(datasets) if datasets else None

    def _subsets(self) -> list[Path]:
        dirs = sorted(self.root.glob("Dataset*_ME2-*"), key=natural_key) if self.root.is_dir() else []
        dirs = [d for d in dirs if d.is_dir()]
        if self.requested:
            chosen = []
            for want in self.requested:
                hit = [d for d in dirs if d.name == want or d.name.split("_ME2-", 1)[-1] == want]
                if not hit:
                    raise self.missing(f"sub-dataset {want!r}", [self.root / f"Dataset*_ME2-{want}"])
                chosen += hit
            dirs = chosen
        if not dirs:
            raise self.missing("sub-datasets", [self.root / "Dataset*_ME2-*"])
        return dirs

    def _find(self, split: str) -> list[LabeledVolume]:
        img_dir, lab_dir = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
        out, searched = [], []
        for d in self._subsets():
            sub = d.name.split("_ME2-", 1)[-1]
            images = sorted((d / img_dir).glob("*_0000.nii.gz"), key=natural_key)
            searched.append(d / img_dir / "*_0000.nii.gz")
            for img in images:
                case = img.name[: -len("_0000.nii.gz")]
                lab = d / lab_dir / f"{case}.nii.gz"
                if not lab.exists() and split == "train":
                    raise self.missing(f"label for {img.name}", [lab])
                image = ArraySource.from_file(img)
                _, vs = io_attrs(image)
                voxel = vs if vs and len(vs) == 3 and any(v != 1.0 for v in vs) else None
                labels = {"label": ArraySource.from_file(lab)} if lab.exists() else {}
                out.append(
                    LabeledVolume(
                        name=f"mitoem2/{d.name}/{case}",
                        dataset=self.name,
                        image=image,
                        labels=labels,
                        converter=mitoem2_to_unified,
                        annotated=(BACKGROUND, MITOCHONDRION, MITOCHONDRION_BOUNDARY),
                        voxel_size=voxel or SUBSET_VOXEL_SIZE.get(sub, (1.0, 1.0, 1.0)),  # type: ignore[arg-type]
                    )
                )
        if not out:
            raise self.missing(f"{split} images", searched)
        return out
