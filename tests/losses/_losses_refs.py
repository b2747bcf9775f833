"""Float64 per-instance reference implementations (plain loops) for the losses tests."""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch


def random_labels(shape, k, b=2, seed=0, bg=0.2):
    """Blobby random instance maps: Voronoi cells of k seeds, a fraction set to background."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(b):
        pts = g.random((k, len(shape))) * np.array(shape)
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
        d = ((grid[..., None, :] - pts) ** 2).sum(-1)
        lab = d.argmin(-1) + 1
        lab[g.random(shape) < bg] = 0
        out.append(lab)
    return torch.as_tensor(np.stack(out), dtype=torch.long)


def ref_edt(lab, sampling=None):
    out = np.zeros(lab.shape)
    for k in np.unique(lab):
        if k <= 0:
            continue
        m = lab == k
        out[m] = ndi.distance_transform_edt(m, sampling=sampling)[m]
    return out


def ref_weights(lab, we, wb):
    """Boundary x depth weights for one sample, per instance with SciPy."""
    lo = ndi.minimum_filter(lab, size=3, mode="nearest")
    hi = ndi.maximum_filter(lab, size=3, mode="nearest")
    bd = (lo != hi).astype(float)
    d = ref_edt(lab)
    dn = np.zeros_like(d)
    for k in np.unique(lab):
        if k > 0:
            m = lab == k
            dn[m] = d[m] / d[m].max() if d[m].max() > 0 else 0
    return (1 + bd * (we - 1)) * (1 + dn * (wb - 1))


def ref_discriminative(emb, lab, dv=0.5, dd=1.5, weights=None, classes=None):
    """Plain float64 loops: emb (B, E, *sp), lab (B, *sp) numpy -> (pull, push, norm)."""
    b = emb.shape[0]
    per_class = {}
    for i in range(b):
        e = emb[i].reshape(emb.shape[1], -1).T
        li = lab[i].reshape(-1)
        ci = np.ones_like(li) if classes is None else classes[i].reshape(-1)
        wi = np.ones(len(li)) if weights is None else weights[i].reshape(-1)
        for c in np.unique(ci[(li > 0) & (ci > 0)]):
            ids = [k for k in np.unique(li[(ci == c) & (li > 0)])]
            mus, pulls = [], []
            for k in ids:
                m = (li == k) & (ci == c)
                w = wi[m]
                mu = (e[m] * w[:, None]).sum(0) / w.sum()
                d = np.linalg.norm(e[m] - mu, axis=1)
                pulls.append((w * np.maximum(d - dv, 0) ** 2).sum() / w.sum())
                mus.append(mu)
            kk = len(ids)
            push = 0.0
            if kk > 1:
                acc = 0.0
                for a in range(kk):
                    for bb in range(a + 1, kk):
                        acc += max(2 * dd - np.linalg.norm(mus[a] - mus[bb]), 0) ** 2
                push = acc / (kk * (kk - 1) / 2)
            norm = float(np.mean([np.linalg.norm(m) for m in mus]))
            per_class.setdefault(int(c), []).append((np.mean(pulls), push, norm))
    if not per_class:
        return 0.0, 0.0, 0.0
    vals = np.array([np.mean(v, axis=0) for v in per_class.values()])
    return tuple(vals.mean(0))


