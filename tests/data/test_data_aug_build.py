"""The augmentation pipeline: config handling, whole-pipeline invariants, seeding, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurons.data.synthetic import make_synthetic_volume
from neurons.data.transforms import (
    AUGMENTATIONS,
    DEFAULT_AUGMENTATIONS,
    AugmentationError,
    Compose,
    RandGaussianNoise,
    build_augmentation,
)

ALL_ON = {name: {"p": 1.0} for name in AUGMENTATIONS}


@pytest.fixture(scope="module")
def volume():
    return make_synthetic_volume((12, 64, 64), seed=3)


def sample_from(volume, dims: int) -> dict:
    sl = (6,) if dims == 2 else (slice(None),)
    return {
        "image": (volume["raw"][sl].astype(np.float32) / 255)[None],
        "instance": volume["instance"][sl],
        "semantic": volume["semantic"][sl],
    }


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("params", [True, ALL_ON], ids=["defaults", "all_p1"])
def test_pipeline_keeps_keys_shapes_dtypes_and_ids(volume, dims, params):
    sample = sample_from(volume, dims)
    sample["dataset"] = "synthetic"  # keys not named by the pipeline pass through
    aug = build_augmentation(params, spatial_dims=dims, seed=0)
    for _ in range(3):
        out = aug(sample)
        assert set(out) == set(sample) and out["dataset"] == "synthetic"
        for k in ("image", "instance", "semantic"):
            assert out[k].shape == sample[k].shape and out[k].dtype == sample[k].dtype
            assert out[k].flags.c_contiguous
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert set(np.unique(out["instance"])) <= set(np.unique(sample["instance"]))
        assert set(np.unique(out["semantic"])) <= set(np.unique(sample["semantic"]))
        torch.from_numpy(out["image"])  # collatable without copies


@pytest.mark.parametrize("dims", [2, 3])
def test_geometric_pipeline_keeps_alignment(volume, dims):
    """All geometric augmentations at p=1 (nearest image): image still equals its labels."""
    sample = sample_from(volume, dims)
    sample["image"] = (sample["instance"].astype(np.float32) / 255.0)[None]
    cfg = {n: False for n, c in AUGMENTATIONS.items() if c.intensity_only}
    cfg |= {"flip": 1.0, "rot90": 1.0, "transpose": 1.0, "misalignment": 1.0}
    cfg["elastic"] = {"p": 1.0, "image_order": 0, "sigma": 4.0}
    aug = build_augmentation(cfg, spatial_dims=dims, seed=1)
    for _ in range(3):
        out = aug(sample)
        np.testing.assert_array_equal(
            np.rint(out["image"][0] * 255).astype(np.uint32), out["instance"]
        )
        # semantic moved with the instances: the (instance, semantic) pairs are unchanged
        pairs_in = set(
            zip(
                sample["instance"].ravel().tolist(),
                sample["semantic"].ravel().tolist(),
                strict=True,
            )
        )
        pairs_out = set(
            zip(out["instance"].ravel().tolist(), out["semantic"].ravel().tolist(), strict=True)
        )
        assert pairs_out <= pairs_in


def test_false_is_identity_and_true_has_all(volume):
    sample = sample_from(volume, 3)
    ident = build_augmentation(False, 3)
    assert len(ident) == 0
    out = ident(sample)
    for k in sample:
        np.testing.assert_array_equal(out[k], sample[k])
    assert build_augmentation(True, 3).names == list(AUGMENTATIONS)
    names2d = build_augmentation(True, 2).names
    assert (
        "misalignment" not in names2d and "missing_section" not in names2d and "elastic" in names2d
    )


def test_overrides_are_applied():
    aug = build_augmentation(
        {"elastic": {"p": 1.0, "sigma": 2.5}, "gamma": False, "flip": 0.25, "anisotropic": False}, 3
    )
    by_name = {t.name: t for t in aug}
    assert "gamma" not in by_name
    assert by_name["flip"].p == 0.25
    assert by_name["elastic"].p == 1.0 and by_name["elastic"].sigma == (2.5, 2.5)
    assert by_name["elastic"].spacing == DEFAULT_AUGMENTATIONS["elastic"]["spacing"]
    assert not by_name["rot90"].anisotropic and not by_name["elastic"].anisotropic
    assert "contrast" not in build_augmentation({"contrast": {"p": 0}}, 3).names


def test_config_errors_name_the_problem(volume):
    with pytest.raises(AugmentationError, match="elastik"):
        build_augmentation({"elastik": True}, 3)
    with pytest.raises(AugmentationError, match="sigmaa"):
        build_augmentation({"elastic": {"sigmaa": 3}}, 3)
    with pytest.raises(AugmentationError, match="spatial_dims"):
        build_augmentation(True, 4)
    aug = build_augmentation(True, 3)
    with pytest.raises(AugmentationError, match="3-D patches got a 2-D sample"):
        aug(sample_from(volume, 2))
    bad = sample_from(volume, 3)
    bad["image"] = volume["raw"][None]
    with pytest.raises(AugmentationError, match="uint8"):
        aug(bad)


def test_reproducible_and_seed_dependent(volume):
    sample = sample_from(volume, 3)
    a, b, c = (build_augmentation(ALL_ON, 3, seed=s) for s in (5, 5, 6))
    outs_a = [a(sample) for _ in range(3)]
    outs_b = [b(sample) for _ in range(3)]
    for oa, ob in zip(outs_a, outs_b, strict=True):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k])
    assert not np.array_equal(outs_a[0]["image"], c(sample)["image"])
    assert not np.array_equal(outs_a[0]["image"], outs_a[1]["image"])  # the stream advances
    # an explicit per-sample generator overrides the pipeline's own state
    r1 = a(sample, rng=np.random.default_rng(11))
    r2 = c(sample, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(r1["image"], r2["image"])


def test_torch_tensors_round_trip(volume):
    sample = {
        k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sample_from(volume, 2).items()
    }
    out = build_augmentation(ALL_ON, 2, seed=0)(sample)
    assert isinstance(out["image"], torch.Tensor) and out["image"].shape == sample["image"].shape
    assert out["instance"].dtype == sample["instance"].dtype


class _Dataset(torch.utils.data.Dataset):
    def __init__(self, aug):
        self.aug = aug
        self.sample = {
            "image": np.zeros((1, 16, 16), np.float32),
            "instance": np.zeros((16, 16), np.uint8),
        }

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.aug(self.sample)["image"]


@pytest.mark.parametrize("wrap", [True, False], ids=["compose", "bare_transform"])
def test_dataloader_workers_and_epochs_draw_different_augmentations(wrap):
    noise = RandGaussianNoise(p=1.0, std=0.2, seed=0)
    aug = Compose([noise], spatial_dims=2, seed=0) if wrap else noise
    loader = torch.utils.data.DataLoader(_Dataset(aug), batch_size=2, num_workers=2)
    torch.manual_seed(0)
    b0, b1 = list(loader)  # batch 0 from worker 0, batch 1 from worker 1
    e0, e1 = list(loader)  # next epoch
    assert not torch.equal(b0, b1), "workers replayed the same augmentations"
    assert not torch.equal(b0, e0), "epochs replayed the same augmentations"
    torch.manual_seed(0)
    c0, c1 = list(loader)
    assert torch.equal(b0, c0) and torch.equal(b1, c1)  # reproducible under a fixed torch seed
