"""Decoders behind one interface: oracle round trips, blockwise = whole, typed errors.

Affinities are computed from ground-truth instances by a brute-force coordinate computation in
this file (independent of the decoders' and the loss's own pair slicing); decoding them must
give back the ground-truth partition (ARAND and VOI of ``neurons.metrics``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.measure import label

from neurons.metrics import adapted_rand_error, variation_of_information
from neurons.train.inference import (
    DECODERS,
    DecodeConfig,
    DecodeError,
    SlidingWindow,
    decode,
    decode_instances,
    segment_blockwise,
    segment_volume,
)
from neurons.train.inference.decoders import (
    agglomerate_all,
    embedding_affinities,
    mutex_watershed,
)

OFFSETS_2D = [(-1, 0), (0, -1), (-3, 0), (0, -3), (-9, 0), (0, -9)]
OFFSETS_3D = [
    (-1, 0, 0),
    (0, -1, 0),
    (0, 0, -1),
    (0, -3, 0),
    (0, 0, -3),
    (0, -9, 0),
    (0, 0, -9),
    (-2, 0, 0),
]
AFFINITY_DECODERS = ["mutex_watershed", "agglomeration"]
BIG = np.uint64(2**60)


def _voronoi(shape, n, rng, membrane=False):
    """Touching cells with uint64 ids 2**60 + k (0 on a one-voxel membrane if asked).

    Objects are face-connected pieces: a digital Voronoi cell (or one cut by the membrane) can
    fall apart at 4/6-connectivity."""
    pts = np.stack([rng.uniform(0, s, n) for s in shape], 1)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    lab = ((grid[..., None, :] - pts) ** 2).sum(-1).argmin(-1).astype(np.uint64) + BIG + 1
    if membrane:
        edge = np.zeros(shape, bool)
        for ax in range(len(shape)):
            sl = [slice(None)] * len(shape)
            sl[ax] = slice(1, None)
            edge[tuple(sl)] |= np.diff(lab, axis=ax) != 0
        lab[edge] = 0
    comp = label(lab.astype(np.int64), background=0, connectivity=1).astype(np.uint64)
    return np.where(comp > 0, comp + BIG, np.uint64(0))


def _gt_affinities(labels, offsets):
    """Brute force: for every voxel coordinate c, same(c, c + o) if inside and both non-zero."""
    coords = np.indices(labels.shape).reshape(labels.ndim, -1)
    flat = labels.reshape(-1)
    out = np.zeros((len(offsets), flat.size), np.float32)
    for k, off in enumerate(offsets):
        nb = coords + np.asarray(off)[:, None]
        inside = np.all((nb >= 0) & (nb < np.asarray(labels.shape)[:, None]), axis=0)
        idx = np.ravel_multi_index(nb[:, inside], labels.shape)
        a, b = flat[inside], flat[idx]
        out[k, inside] = (a == b) & (a != 0)
    return out.reshape(len(offsets), *labels.shape)


def _semantic(labels):
    fg = (labels > 0).astype(np.float32)
    return np.stack([1 - fg, fg])


def _scores(gt, pred):
    voi = variation_of_information(gt, pred)
    return adapted_rand_error(gt, pred).error, voi.split + voi.merge


def _same_partition(a, b):
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.uint64), axis=1)
    if ((pairs[0] == 0) != (pairs[1] == 0)).any():
        return False
    return np.unique(pairs[0]).size == pairs.shape[1] == np.unique(pairs[1]).size


# ------------------------------------------------------------------------------------------
# oracle round trips
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", AFFINITY_DECODERS)
@pytest.mark.parametrize(("shape", "offsets"), [((48, 56), OFFSETS_2D), ((8, 32, 36), OFFSETS_3D)])
def test_gt_affinities_decode_to_gt_partition(rng, decoder, shape, offsets):
    gt = _voronoi(shape, 12, rng)
    aff = _gt_affinities(gt, offsets)
    pred = decode({"affinity": aff}, decoder, offsets=offsets, semantic_mode="none")
    assert pred.dtype == np.uint64 and pred.shape == gt.shape
    arand, voi = _scores(gt, pred)
    assert arand < 1e-3 and voi < 1e-3, (arand, voi)
    assert _same_partition(gt, pred)
    assert np.array_equal(np.unique(pred), np.arange(len(np.unique(gt)) + 1)[1:])


@pytest.mark.parametrize("decoder", AFFINITY_DECODERS)
@pytest.mark.parametrize(("shape", "offsets"), [((40, 44), OFFSETS_2D), ((6, 28, 30), OFFSETS_3D)])
def test_gt_affinities_with_membrane_and_semantic(rng, decoder, shape, offsets):
    gt = _voronoi(shape, 10, rng, membrane=True)
    outputs = {"affinity": _gt_affinities(gt, offsets), "semantic": _semantic(gt)}
    pred = decode(outputs, decoder, offsets=offsets)
    arand, voi = _scores(gt, pred)
    assert arand < 1e-3 and voi < 1e-3
    assert _same_partition(gt, pred)


def test_mutex_watershed_long_range_edges_separate(rng):
    """Nearest-neighbour affinities all 1 (no local evidence): only the long-range repulsive
    edges can split the two halves; with them removed everything is one object."""
    gt = np.ones((20, 30), np.uint64)
    gt[:, 15:] = 2
    offsets = [(-1, 0), (0, -1), (0, -3)]
    aff = _gt_affinities(gt, offsets)
    aff[:2] = 0.8  # attraction 0.3 < repulsion 0.5 of the long-range pairs across the cut
    assert _same_partition(mutex_watershed(aff, offsets), gt)
    assert np.unique(mutex_watershed(aff[:2], offsets[:2])).size == 1


def test_agglomeration_thresholds_hand_computed():
    """Two columns whose shared boundary has mean affinity 0.3: score 1 - 0.3 = 0.7."""
    aff = np.ones((2, 6, 8), np.float32)
    aff[1, :, 4] = np.array([0.1, 0.5, 0.3, 0.3, 0.2, 0.4])  # x-edges between x=3 and x=4
    segs = agglomerate_all(aff, ((-1, 0), (0, -1)), [0.65, 0.75, 0.2])
    assert sorted(segs) == [0.2, 0.65, 0.75]
    assert np.unique(segs[0.2]).size == 2 and np.unique(segs[0.65]).size == 2
    assert np.unique(segs[0.75]).size == 1
    assert (segs[0.65][:, :4] == segs[0.65][0, 0]).all()
    pred = decode(
        {"affinity": aff},
        "agglomeration",
        {"threshold": 0.75},
        offsets=[(-1, 0), (0, -1)],
        semantic_mode="none",
    )
    assert pred.max() == 1


def test_agglomeration_positive_offsets_equal_negative(rng):
    gt = _voronoi((30, 34), 8, rng)
    pos = [(1, 0), (0, 1)]
    pred = decode(
        {"affinity": _gt_affinities(gt, pos)}, "agglomeration", offsets=pos, semantic_mode="none"
    )
    assert _same_partition(gt, pred)


# ------------------------------------------------------------------------------------------
# embedding decoder
# ------------------------------------------------------------------------------------------
def test_embedding_affinity_mapping_margins():
    dv, dd = 0.5, 1.5
    d = np.array([0.0, 2 * dv, dd, 2 * dd - 2 * dv, 10.0], np.float32)
    emb = np.zeros((1, 1, 2 * d.size), np.float32)
    emb[0, 0, 1::2] = d  # pairs (2i, 2i + 1) at distance d[i]
    aff = embedding_affinities(emb, ((0, 1),), delta_v=dv, delta_d=dd)[0, 0, 0::2]
    np.testing.assert_allclose(aff[1:4], [0.95, 0.5, 0.05], atol=1e-6)
    assert aff[0] > 0.99 and aff[4] < 1e-6
    assert np.all(np.diff(aff) < 0)


@pytest.mark.parametrize("decoder", ["embedding", "meanshift"])
@pytest.mark.parametrize(("shape", "offsets"), [((40, 44), OFFSETS_2D), ((6, 24, 26), OFFSETS_3D)])
def test_ideal_embedding_decodes_exactly(rng, decoder, shape, offsets):
    gt = _voronoi(shape, 15, rng)
    ids, inv = np.unique(gt, return_inverse=True)
    centres = rng.normal(size=(ids.size, 6)).astype(np.float32)
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)  # pairwise far apart
    centres += np.arange(ids.size)[:, None] * 0.0
    emb = np.moveaxis(centres[inv.reshape(gt.shape)], -1, 0)
    # guarantee separation: push any close pair apart along a private axis
    emb = np.concatenate(
        [
            emb,
            3.0
            * np.eye(ids.size, dtype=np.float32)[inv.reshape(gt.shape)].transpose(
                -1, *range(gt.ndim)
            ),
        ]
    )
    outputs = {"instance": emb, "semantic": _semantic(gt)}
    pred = decode(outputs, decoder, offsets=offsets)
    arand, voi = _scores(gt, pred)
    assert arand < 1e-3 and voi < 1e-3
    assert _same_partition(gt, pred)


# ------------------------------------------------------------------------------------------
# blockwise = whole
# ------------------------------------------------------------------------------------------
class _Identity(torch.nn.Module):
    """Outputs stored as channels of the source: blending identical values returns them."""

    def __init__(self, n_aff: int, n_emb: int) -> None:
        super().__init__()
        self.n_aff, self.n_emb = n_aff, n_emb

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"semantic": x[:, :2]}
        if self.n_aff:
            out["affinity"] = x[:, 2 : 2 + self.n_aff]
        if self.n_emb:
            out["instance"] = x[:, 2 + self.n_aff :] * 8.0
        return out


@pytest.mark.parametrize("decoder", [*AFFINITY_DECODERS, "embedding", "watershed", "meanshift"])
@pytest.mark.parametrize(
    ("shape", "block", "overlap", "window", "offsets"),
    [
        ((60, 52), (24, 20), (6, 6), (24, 24), OFFSETS_2D),
        ((8, 40, 36), (8, 16, 16), (0, 5, 5), (8, 16, 16), OFFSETS_3D),
    ],
)
def test_blockwise_equals_whole(rng, decoder, shape, block, overlap, window, offsets):
    gt = _voronoi(shape, 10, rng, membrane=True)
    channels = [_semantic(gt)]
    n_aff = n_emb = 0
    if decoder in AFFINITY_DECODERS:
        channels.append(_gt_affinities(gt, offsets))
        n_aff = len(offsets)
    if decoder in ("embedding", "meanshift"):
        ids, inv = np.unique(gt, return_inverse=True)
        onehot = np.eye(ids.size, dtype=np.float32)[inv.reshape(gt.shape)]
        channels.append(np.moveaxis(onehot, -1, 0) * 0.5)  # distance 4 between instances
        n_emb = ids.size
    src = np.concatenate(channels).astype(np.float32)
    torch.set_num_threads(1)  # shared test machine (tests/train/conftest.py restores it)
    sw = SlidingWindow(
        window=window, overlap=0.25, activation={}, keys=None, intensity_range=(0.0, 1.0)
    )
    cfg = DecodeConfig(method=decoder, offsets=offsets, seed_threshold=0.5)
    model = _Identity(n_aff, n_emb)
    res = segment_blockwise(
        model, src, sw, cfg, block_size=block, overlap=overlap, channels=True, scheduler="sync"
    )
    whole, _ = segment_volume(model, src, sw, cfg, channels=True)
    assert res.num_blocks > 1
    assert adapted_rand_error(whole, res.instance).error == 0.0
    assert _same_partition(whole, res.instance)
    assert _same_partition(gt, whole)  # and both are the truth


# ------------------------------------------------------------------------------------------
# interface and errors
# ------------------------------------------------------------------------------------------
def test_registry_entries_are_complete():
    assert {"mutex_watershed", "agglomeration", "embedding", "watershed"} <= set(DECODERS)
    for name, spec in DECODERS.items():
        assert callable(spec.fn)
        assert set(spec.search_space) <= set(spec.defaults), name
        assert all(len(v) >= 2 for v in spec.search_space.values()), name
        assert "min_size" in spec.defaults


def test_wrong_channel_count_names_offsets(rng):
    aff = np.ones((5, 10, 10), np.float32)
    with pytest.raises(DecodeError, match=r"5 channels but there are 6 offsets"):
        decode({"affinity": aff}, "mutex_watershed", offsets=OFFSETS_2D, semantic_mode="none")


@pytest.mark.parametrize(
    ("decoder", "outputs", "missing"),
    [
        ("mutex_watershed", {"semantic": np.ones((2, 4, 4))}, "affinity"),
        ("embedding", {"semantic": np.ones((2, 4, 4))}, "instance"),
        ("agglomeration", {"affinity": np.ones((6, 4, 4))}, "semantic"),
    ],
)
def test_missing_output_named(decoder, outputs, missing):
    with pytest.raises(DecodeError, match=rf"needs output\(s\) \['{missing}'\]"):
        decode(outputs, decoder, offsets=OFFSETS_2D)


def test_bad_names_and_params():
    out = {"affinity": np.ones((6, 4, 4), np.float32)}
    with pytest.raises(DecodeError, match="unknown decoder 'magic'"):
        decode(out, "magic")
    with pytest.raises(DecodeError, match=r"no parameter\(s\) \['bandwidth'\]"):
        decode(out, "mutex_watershed", {"bandwidth": 1}, offsets=OFFSETS_2D, semantic_mode="none")
    with pytest.raises(DecodeError, match="semantic_mode"):
        decode(out, "mutex_watershed", offsets=OFFSETS_2D, semantic_mode="all")
    with pytest.raises(DecodeError, match=r"offsets\[0\]"):
        decode(out, "mutex_watershed", offsets=[(0, 0, -1)] * 6, semantic_mode="none")
    with pytest.raises(DecodeError, match="nearest-neighbour offset"):
        decode(
            out,
            "agglomeration",
            offsets=[(-3, 0), (0, -3), (-9, 0), (0, -9), (1, 1), (2, 2)],
            semantic_mode="none",
        )
    with pytest.raises(DecodeError, match="decode method must be one of"):
        DecodeConfig(method="magic")


def test_decode_instances_auto_picks_affinities_and_classes(rng):
    """Per-class logic: a mitochondrion (classes 3+4) inside a neuron is its own instance,
    even where affinities (wrongly) say it belongs to the neuron."""
    gt = np.ones((30, 30), np.int64)
    gt[10:20, 10:20] = 2
    sem = np.zeros((5, 30, 30), np.float32)
    sem[1] = 1
    sem[1, 10:20, 10:20] = 0
    sem[3, 10:20, 10:20] = 1
    sem[4, 10:20, 10] = 2  # its boundary class belongs to it
    aff = np.ones((len(OFFSETS_2D), 30, 30), np.float32)
    ins, semantic = decode_instances(
        {"semantic": sem, "affinity": aff}, DecodeConfig(offsets=OFFSETS_2D)
    )
    assert _same_partition(ins, gt)
    assert ins[0, 0] == 1 and ins[15, 15] == 2  # class-major ids: neurons first
    assert semantic[15, 10] == 4


def test_offsets_longer_than_the_volume_are_ignored(rng):
    """A block thinner than a long-range offset (e.g. 27 voxels) still decodes."""
    gt = _voronoi((4, 20, 24), 5, rng)
    offsets = [*OFFSETS_3D, (0, -27, 0), (-5, 0, 0)]
    aff = _gt_affinities(gt, offsets)
    for decoder in AFFINITY_DECODERS:
        pred = decode({"affinity": aff}, decoder, offsets=offsets, semantic_mode="none")
        assert _same_partition(gt, pred)


def test_cli_accepts_every_decoder_and_rejects_unknown_params(capsys):
    from neurons.train.inference.cli import build_parser, main

    for name in DECODERS:
        args = build_parser().parse_args(["c.ckpt", "in.h5", "out.h5", "--decoder", name])
        assert args.decoder == name
    with pytest.raises(SystemExit) as exc:
        main(["c.ckpt", "in.h5", "out.h5", "--decoder", "mutex_watershed",
              "--decoder-param", "bandwidth=1"])  # fmt: skip
    assert exc.value.code == 2
    assert "no parameter(s) ['bandwidth']" in capsys.readouterr().err


def test_waterz_missing_is_a_decode_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "waterz", None)  # import waterz raises ImportError
    aff = np.ones((2, 6, 6), np.float32)
    with pytest.raises(DecodeError, match="needs the waterz package"):
        decode({"affinity": aff}, "agglomeration", offsets=[(-1, 0), (0, -1)], semantic_mode="none")


@pytest.mark.parametrize("params", [{"long_range_stride": (1, 2, 2)}, {"bias": 0.3}])
def test_mutex_watershed_parameters_keep_the_oracle_exact(rng, params):
    gt = _voronoi((6, 30, 32), 9, rng)
    aff = _gt_affinities(gt, OFFSETS_3D)
    pred = decode({"affinity": aff}, "mutex_watershed", params, offsets=OFFSETS_3D,
                  semantic_mode="none")  # fmt: skip
    assert _same_partition(gt, pred)


def test_planewise_affinity_decoding_with_2d_offsets(rng):
    """A 2-D model on a stack: (K, Z, Y, X) affinities with in-plane offsets, plane by plane;
    ids unique across planes."""
    gt = np.stack([_voronoi((30, 32), 6, rng) for _ in range(3)])
    aff = np.stack([_gt_affinities(g, OFFSETS_2D) for g in gt], axis=1)
    sem = np.stack([_semantic(g) for g in gt], axis=1)
    cfg = DecodeConfig(method="agglomeration", offsets=OFFSETS_2D, planewise=True)
    ins, _ = decode_instances({"semantic": sem, "affinity": aff}, cfg)
    expected = np.where(gt > 0, gt + (np.arange(3, dtype=np.uint64) * 1000)[:, None, None], 0)
    assert _same_partition(expected, ins)


def test_dense_mode_fills_background_for_neurons(rng):
    """semantic_mode="dense": neurons also take voxels the semantic head calls background;
    the affinities still separate the cells."""
    gt = _voronoi((40, 44), 8, rng)
    sem = _semantic(gt)
    sem[:, 10:14, :] = [[[1.0]], [[0.0]]]  # a band the semantic head misses
    outputs = {"semantic": sem, "affinity": _gt_affinities(gt, OFFSETS_2D)}
    dense = decode(outputs, "mutex_watershed", offsets=OFFSETS_2D, semantic_mode="dense")
    assert _same_partition(gt, dense)
    sparse = decode(outputs, "mutex_watershed", offsets=OFFSETS_2D)
    assert (sparse[10:14] == 0).all() and (sparse[:10] > 0).all()


@pytest.mark.parametrize("decoder", AFFINITY_DECODERS)
def test_real_isbi_labels_round_trip(isbi2012_dir, decoder):
    """Real neurite shapes (thin, branching, one-pixel-wide membranes): three ISBI 2012
    sections' ground truth -> affinities -> the same cells, 3-D offsets across sections."""
    from PIL import Image

    sections = [np.asarray(Image.open(isbi2012_dir / "label" / f"{z:02d}.png")) for z in (0, 1, 2)]
    interior = np.stack(sections)[:, :160, :160] > 127
    gt = label(interior, background=0, connectivity=1).astype(np.uint64)
    gt = np.where(gt > 0, gt + BIG, np.uint64(0))
    outputs = {"affinity": _gt_affinities(gt, OFFSETS_3D), "semantic": _semantic(gt)}
    pred = decode(outputs, decoder, offsets=OFFSETS_3D)
    arand, voi = _scores(gt, pred)
    assert arand < 1e-3 and voi < 1e-3
    assert _same_partition(gt, pred)
