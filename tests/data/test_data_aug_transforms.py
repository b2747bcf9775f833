"""Each EM augmentation on its own: alignment, label ids, reproducibility, 2-D/3-D, p=0."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from neurons.data.transforms import (
    AUGMENTATIONS,
    AugmentationError,
    RandElastic,
    RandMisalignment,
    RandMissingSection,
    line_kernel,
    reflect_coordinates,
    smooth_random_field,
)

GEOMETRIC = ["flip", "rot90", "transpose", "elastic", "misalignment"]
GEOMETRIC_CASES = [
    (n, d) for n in GEOMETRIC for d in (2, 3) if not (n == "misalignment" and d == 2)
]
INTENSITY = [n for n, c in AUGMENTATIONS.items() if c.intensity_only]
EXACT = {"elastic": {"image_order": 0}}  # nearest-neighbour image so image == labels exactly


def blocky_labels(
    spatial: tuple[int, ...], seed: int = 0, dtype=np.uint32, offset: int = 0
) -> np.ndarray:
    """Piecewise-constant ids: a coarse random grid upsampled (nearest) to ``spatial``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, 40, tuple(max(1, s // 8) for s in spatial))
    reps = [int(np.ceil(s / c)) for s, c in zip(spatial, coarse.shape, strict=True)]
    lab = np.kron(coarse, np.ones(reps, dtype=np.int64))[tuple(slice(0, s) for s in spatial)]
    return (lab.astype(dtype) + dtype(offset)) if offset else lab.astype(dtype)


def make_sample(spatial: tuple[int, ...], dtype=np.uint32, offset: int = 0) -> dict:
    inst = blocky_labels(spatial, 0, dtype, offset)
    small = blocky_labels(spatial, 0)  # same layout, small ids: the image encodes the id
    return {
        "image": (small.astype(np.float32) / 40.0)[None],
        "instance": inst,
        "semantic": (small % 5).astype(np.uint8),
    }


SHAPES = {2: (48, 48), 3: (12, 48, 48)}


def build_one(name: str, seed: int = 0, **extra):
    params = {"p": 1.0, **EXACT.get(name, {}), **extra}
    return AUGMENTATIONS[name](**params, seed=seed)


@pytest.mark.parametrize(("name", "dims"), GEOMETRIC_CASES)
def test_geometric_keeps_image_and_labels_aligned(name, dims):
    sample = make_sample(SHAPES[dims])
    before = {k: v.copy() for k, v in sample.items()}
    changed = False
    for seed in range(4):
        out = build_one(name, seed)(sample)
        assert out["image"].shape == sample["image"].shape
        assert out["image"].dtype == np.float32
        # the image encodes the small-id layout, the semantic map too: all three moved together
        np.testing.assert_array_equal(out["image"][0], np.round(out["image"][0] * 40) / 40)
        small = np.round(out["image"][0] * 40).astype(np.uint32)
        np.testing.assert_array_equal(small, out["instance"])
        np.testing.assert_array_equal(small % 5, out["semantic"])
        changed |= not np.array_equal(out["instance"], sample["instance"])
    assert changed, f"{name} never changed the sample"
    for k in sample:  # inputs are never modified in place
        np.testing.assert_array_equal(sample[k], before[k])


@pytest.mark.parametrize(("name", "dims"), GEOMETRIC_CASES)
def test_geometric_keeps_label_id_set_uint64(name, dims):
    sample = make_sample(SHAPES[dims], dtype=np.uint64, offset=2**63 + 12345)
    ids_in = set(np.unique(sample["instance"]).tolist())
    for seed in range(3):
        out = build_one(name, seed, **({"image_order": 1} if name == "elastic" else {}))(sample)
        assert out["instance"].dtype == np.uint64
        assert set(np.unique(out["instance"]).tolist()) <= ids_in
        assert set(np.unique(out["semantic"]).tolist()) <= set(
            np.unique(sample["semantic"]).tolist()
        )


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_only_leaves_labels_untouched(name, dims):
    sample = make_sample(SHAPES[dims])
    sample["image"] = np.random.default_rng(0).random(sample["image"].shape, dtype=np.float32)
    out = build_one(name, 1)(sample)
    if dims == 2 and AUGMENTATIONS[name].needs_depth > 1:
        np.testing.assert_array_equal(out["image"], sample["image"])  # no-op without sections
    else:
        assert not np.array_equal(out["image"], sample["image"]), f"{name} did nothing"
    assert out["image"].shape == sample["image"].shape and out["image"].dtype == np.float32
    assert out["image"].min() >= 0 and out["image"].max() <= 1
    for key in ("instance", "semantic"):
        assert out[key].dtype == sample[key].dtype
        np.testing.assert_array_equal(out[key], sample[key])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_reproducible_from_seed_and_rng(name, dims):
    sample = make_sample(SHAPES[dims])
    a = build_one(name, 7)(sample)
    b = build_one(name, 7)(sample)
    c = build_one(name, 99)(sample, rng=np.random.default_rng(5))
    d = build_one(name, 0)(sample, rng=np.random.default_rng(5))
    for k in sample:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(c[k], d[k])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_p_zero_is_identity(name, dims):
    sample = make_sample(SHAPES[dims])
    out = AUGMENTATIONS[name](p=0.0, seed=0)(sample)
    assert set(out) == set(sample)
    for k in sample:
        assert out[k].shape == sample[k].shape and out[k].dtype == sample[k].dtype
        np.testing.assert_array_equal(out[k], sample[k])


@pytest.mark.parametrize("name", ["rot90", "transpose", "elastic"])
def test_isotropic_3d_variants_stay_aligned(name):
    sample = make_sample((24, 24, 24))
    for seed in range(4):
        out = build_one(name, seed, anisotropic=False)(sample)
        np.testing.assert_array_equal(
            np.round(out["image"][0] * 40).astype(np.uint32), out["instance"]
        )


def test_rotations_keep_non_square_shapes():
    sample = make_sample((6, 32, 48))
    for name in ("rot90", "transpose"):
        for seed in range(6):
            out = build_one(name, seed)(sample)
            assert out["instance"].shape == (6, 32, 48)


def test_anisotropic_elastic_is_in_plane_and_isotropic_is_not():
    d, h, w = 10, 40, 40
    z_id = np.broadcast_to(np.arange(1, d + 1, dtype=np.uint16)[:, None, None], (d, h, w)).copy()
    sample = {"image": np.zeros((1, d, h, w), np.float32), "instance": z_id}
    aniso = RandElastic(p=1.0, sigma=4.0, spacing=8.0, spacing_z=2.0, seed=0)(sample)
    np.testing.assert_array_equal(aniso["instance"], z_id)  # no voxel changed section
    iso = RandElastic(p=1.0, sigma=4.0, spacing=8.0, spacing_z=2.0, anisotropic=False, seed=0)(
        sample
    )
    assert not np.array_equal(iso["instance"], z_id)


@pytest.mark.parametrize("anisotropic", [True, False])
def test_elastic_matches_scipy_map_coordinates(anisotropic):
    """Image = linear interpolation, labels = nearest, at the same pull-back coordinates."""
    sample = make_sample((8, 40, 40))
    sample["image"] = np.random.default_rng(1).random((1, 8, 40, 40), dtype=np.float32)
    t = RandElastic(p=1.0, sigma=3.0, spacing=16, spacing_z=4, anisotropic=anisotropic)
    params = t.randomize(np.random.default_rng(4), (8, 40, 40))
    out = t(sample, rng=np.random.default_rng(4))
    cz = (
        params["cz"]
        if params["cz"] is not None
        else np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], params["cy"].shape)
    )
    coords = [cz, params["cy"], params["cx"]]
    ref_img = ndimage.map_coordinates(sample["image"][0], coords, order=1, mode="mirror")
    np.testing.assert_allclose(out["image"][0], ref_img, atol=1e-5)
    ref_lab = ndimage.map_coordinates(
        sample["instance"].astype(np.float64), coords, order=0, mode="mirror"
    )
    assert (ref_lab.astype(np.uint32) != out["instance"]).mean() < 1e-3  # only .5 ties may differ
    assert (out["instance"] != sample["instance"]).mean() > 0.01


def test_misalignment_matches_shifted_reference():
    sample = make_sample((8, 48, 48))
    t = RandMisalignment(p=1.0, max_displacement=6)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        params = t.randomize(np.random.default_rng(seed), (8, 48, 48))
        out = t(sample, rng=rng)
        (z0, z1), (dy, dx) = params["z"], params["shift"]
        lab = sample["instance"]
        np.testing.assert_array_equal(out["instance"][:z0], lab[:z0])
        np.testing.assert_array_equal(out["instance"][z1:], lab[z1:])
        # interior of the moved block: out[y, x] == in[y - dy, x - dx]
        ys = slice(max(dy, 0), 48 + min(dy, 0))
        xs = slice(max(dx, 0), 48 + min(dx, 0))
        ref = lab[z0:z1, max(-dy, 0) : 48 - max(dy, 0), max(-dx, 0) : 48 - max(dx, 0)]
        np.testing.assert_array_equal(out["instance"][z0:z1, ys, xs], ref)
        assert z1 - z0 == 1 if params["mode"] == "slip" else z1 == 8


def _missing_reference(img, zs, mode):
    """Per-section loop: fill each missing section from the nearest valid sections only."""
    out = img.copy()
    missing = set(int(z) for z in zs)
    depth = img.shape[1]
    for z in missing:
        below = [v for v in range(z - 1, -1, -1) if v not in missing]
        above = [v for v in range(z + 1, depth) if v not in missing]
        lo, hi = (below[0] if below else None), (above[0] if above else None)
        if lo is None and hi is None:
            out[:, z] = 0
        elif mode == "interpolate":
            if lo is None or hi is None:
                out[:, z] = img[:, lo if hi is None else hi]
            else:
                t = (z - lo) / (hi - lo)
                out[:, z] = (1 - t) * img[:, lo] + t * img[:, hi]
        elif mode == "copy":
            if lo is None or (hi is not None and hi - z < z - lo):
                out[:, z] = img[:, hi]
            else:
                out[:, z] = img[:, lo]
        else:
            out[:, z] = 0
    return out


@pytest.mark.parametrize("mode", ["interpolate", "zero", "copy"])
def test_missing_section_modes(mode):
    rng = np.random.default_rng(0)
    img = rng.random((1, 10, 16, 16), dtype=np.float32)
    sample = {"image": img, "instance": np.ones((10, 16, 16), np.uint8)}
    t = RandMissingSection(p=1.0, max_sections=3, modes=[mode])
    for seed in range(20):  # random draws, some with adjacent sections
        params = t.randomize(np.random.default_rng(seed), (10, 16, 16))
        out = t(sample, rng=np.random.default_rng(seed))["image"]
        zs = params["sections"]
        assert zs.min() >= 1 and zs.max() <= 8 and out.shape == img.shape
        np.testing.assert_allclose(out, _missing_reference(img, zs, mode), rtol=1e-6, atol=1e-7)
    # adjacent missing sections: 3, 4, 5 and 8 (valid neighbours 2 | 6 and 7 | 9)
    zs = np.array([3, 4, 5, 8])
    poisoned = img.copy()
    poisoned[:, zs] = np.nan  # a missing section's own pixels must never be read
    out = t.apply({"image": poisoned}, {"sections": zs, "mode": mode})["image"]
    assert np.isfinite(out).all()
    if mode == "interpolate":
        # on a volume linear in z, interpolation between valid sections is exact
        a, b = rng.random((2, 1, 1, 16, 16), dtype=np.float32)
        ramp = a + b * np.arange(10, dtype=np.float32)[None, :, None, None]
        ramp_in = ramp.copy()
        ramp_in[:, zs] = np.nan
        res = t.apply({"image": ramp_in}, {"sections": zs, "mode": mode})["image"]
        np.testing.assert_allclose(res, ramp, rtol=1e-5)
        expected = img[:, [2, 2, 2, 7]] + (np.array([1, 2, 3, 1]) / np.array([4, 4, 4, 2]))[
            None, :, None, None
        ] * (img[:, [6, 6, 6, 9]] - img[:, [2, 2, 2, 7]])
    elif mode == "copy":
        expected = img[:, [2, 2, 6, 7]]  # nearest valid; ties (4: 2 vs 6, 8: 7 vs 9) go below
    else:
        expected = np.zeros_like(img[:, zs])
    np.testing.assert_allclose(out[:, zs], expected, rtol=1e-6)
    others = np.setdiff1d(np.arange(10), zs)
    np.testing.assert_array_equal(out[:, others], img[:, others])
    # no valid section at all: zero fill
    everything = np.arange(10)
    out = t.apply({"image": img}, {"sections": everything, "mode": mode})["image"]
    np.testing.assert_array_equal(out, np.zeros_like(img))


def test_line_kernel_and_helpers():
    k = line_kernel(7, 0.0)
    assert k.shape == (7, 7) and np.isclose(k.sum(), 1.0) and np.allclose(k[3], 1 / 7)
    kv = line_kernel(7, np.pi / 2)
    np.testing.assert_allclose(kv, k.T, atol=1e-6)
    rng = np.random.default_rng(0)
    for lo, hi in ((-3.0, 7.0), (-30.0, 60.0)):  # one-reflection fast path, general path
        c = rng.uniform(lo, hi, 1000)
        ref = ndimage.map_coordinates(np.arange(5.0), [c], order=1, mode="mirror")
        np.testing.assert_allclose(reflect_coordinates(c.copy(), 5), ref, atol=1e-9)
    f = smooth_random_field(np.random.default_rng(0), (16, 64, 64), (4, 8, 8), 2)
    assert f.shape == (2, 16, 64, 64) and 0.6 < f.std() < 1.4
    assert np.abs(np.diff(f, axis=-1)).mean() < 0.4 * np.abs(f).mean()  # smooth


def test_bad_parameters_and_samples_raise():
    with pytest.raises(AugmentationError, match="probability"):
        RandElastic(p=1.5)
    with pytest.raises(AugmentationError, match="image_order"):
        RandElastic(image_order=3)
    with pytest.raises(AugmentationError, match="modes"):
        RandMissingSection(modes=["smear"])
    t = RandElastic(p=1.0)
    with pytest.raises(AugmentationError, match="spatial shape"):
        t({"image": np.zeros((1, 4, 8, 8), np.float32), "instance": np.zeros((4, 8, 9), np.uint8)})
    with pytest.raises(AugmentationError, match="integer ids"):
        t({"image": np.zeros((1, 8, 8), np.float32), "instance": np.zeros((8, 8), np.float32)})
    with pytest.raises(AugmentationError, match="none of the keys"):
        t({"raw": np.zeros((8, 8))})


def test_monai_compose_set_random_state_seeds_our_transforms():
    from monai.transforms import Compose as MonaiCompose
    from monai.transforms import Randomizable
    from monai.utils import MAX_SEED

    from neurons.data.transforms import Compose

    names = ["flip", "elastic", "missing_section", "gaussian_noise"]
    sample = make_sample(SHAPES[3])

    def chain():
        return [AUGMENTATIONS[n](p=1.0) for n in names]

    assert all(isinstance(t, Randomizable) for t in chain())
    pipe = MonaiCompose(chain())
    first = pipe.set_random_state(seed=7)(dict(sample))
    again = pipe.set_random_state(seed=7)(dict(sample))
    other = pipe.set_random_state(seed=8)(dict(sample))
    for key in ("image", "instance", "semantic"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["image"], other["image"])
    # independent reference: MONAI hands transform i the i-th uint32 of RandomState(seed)
    r = np.random.RandomState(7)
    manual = dict(sample)
    for t in chain():
        manual = t.set_random_state(seed=int(r.randint(MAX_SEED, dtype="uint32")))(manual)
    for key in ("image", "instance", "semantic"):
        np.testing.assert_array_equal(first[key], manual[key])
    # state= (MONAI's other argument) works too and is reproducible
    a = AUGMENTATIONS["gaussian_noise"](p=1.0).set_random_state(state=np.random.RandomState(3))
    b = AUGMENTATIONS["gaussian_noise"](p=1.0).set_random_state(state=np.random.RandomState(3))
    np.testing.assert_array_equal(a(dict(sample))["image"], b(dict(sample))["image"])
    with pytest.raises(AugmentationError, match="RandomState or Generator, got int"):
        a.set_random_state(state=3)
    # our own Compose nests in MONAI's and is seeded by it
    ours = Compose(chain(), spatial_dims=3)
    assert isinstance(ours, Randomizable)
    nested = MonaiCompose([ours])
    x = nested.set_random_state(seed=1)(dict(sample))["image"]
    y = nested.set_random_state(seed=1)(dict(sample))["image"]
    np.testing.assert_array_equal(x, y)
