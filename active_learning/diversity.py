"""Diversity in embedding space: distance to the labelled set, k-center greedy, k-means++ seeding and a
small weighted k-means.

All functions work on squared Euclidean distances in chunks, so memory stays O(N * chunk), and take their
randomness only from an explicit ``rng: np.random.Generator``.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 2048


def _sq_dist_to_nearest(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared distance from each row of ``x`` to its nearest row of ``centers`` (inf without centers)."""
    out = np.full(x.shape[0], np.inf)
    if centers.shape[0] == 0:
        return out
    x_sq = np.einsum("ij,ij->i", x, x)
    for start in range(0, centers.shape[0], _CHUNK):
        c = centers[start:start + _CHUNK]
        d = x_sq[:, None] - 2.0 * (x @ c.T) + np.einsum("ij,ij->i", c, c)[None, :]
        np.minimum(out, np.maximum(d.min(axis=1), 0.0), out=out)
    return out


def _sq_dist_to(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    diff = x - center[None, :]
    return np.asarray(np.einsum("ij,ij->i", diff, diff))


def distance_to_labelled(x: np.ndarray, labeled_mask: np.ndarray) -> np.ndarray:
    """Distance of every row to its nearest labelled row, scaled to 0..1 (all 1 without labelled rows): the
    diversity part of the hybrid and core-set queue scores."""
    if not labeled_mask.any():
        return np.ones(x.shape[0])
    dist: np.ndarray = np.sqrt(_sq_dist_to_nearest(x, x[labeled_mask]))
    top = float(dist.max())
    return dist / top if top > 0 else dist


def _check(embeddings: np.ndarray, labeled_mask: np.ndarray, k: int,
           candidates: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (N, D), got shape {x.shape}")
    mask = np.asarray(labeled_mask, dtype=bool)
    if mask.shape != (x.shape[0],):
        raise ValueError(f"labeled_mask must have shape ({x.shape[0]},), got {mask.shape}")
    cand = np.flatnonzero(~mask) if candidates is None else np.asarray(candidates, dtype=np.intp)
    if k < 0 or k > cand.shape[0]:
        raise ValueError(f"cannot select {k} items from {cand.shape[0]} candidates")
    return x, mask, cand


def k_center_greedy(embeddings: np.ndarray, labeled_mask: np.ndarray, k: int, rng: np.random.Generator,
                    candidates: np.ndarray | None = None) -> np.ndarray:
    """Sener & Savarese (2018) core-set: repeatedly take the candidate farthest from every labelled or chosen item.

    ``candidates`` (indices, default: every unlabelled item) restricts the choice; labelled items are the
    initial centres. Without any labelled item the first pick is uniform at random.
    """
    x, mask, cand = _check(embeddings, labeled_mask, k, candidates)
    if k == 0:
        return np.empty(0, dtype=np.intp)
    xc = x[cand]
    dist = _sq_dist_to_nearest(xc, x[mask])
    chosen = np.zeros(cand.shape[0], dtype=bool)
    picks = []
    for _ in range(k):
        if np.isinf(dist).all():
            j = int(rng.integers(cand.shape[0]))
        else:
            d = np.where(chosen, -1.0, dist)
            best = d.max()
            ties = np.flatnonzero(d == best)
            j = int(ties[0] if ties.shape[0] == 1 else rng.choice(ties))
        chosen[j] = True
        picks.append(j)
        np.minimum(dist, _sq_dist_to(xc, xc[j]), out=dist)
    return cand[np.asarray(picks, dtype=np.intp)]


def kmeanspp_seeding(embeddings: np.ndarray, labeled_mask: np.ndarray, k: int, rng: np.random.Generator,
                     candidates: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): sample each pick with probability ~ w * D^2.

    D is the distance to the nearest labelled or already chosen item; ``weights`` (one per candidate,
    default 1) tilt the draw. Without labelled items the first pick is drawn ~ w.
    """
    x, mask, cand = _check(embeddings, labeled_mask, k, candidates)
    w = np.ones(cand.shape[0]) if weights is None else np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if w.shape != (cand.shape[0],):
        raise ValueError(f"weights must have one entry per candidate ({cand.shape[0]})")
    if k == 0:
        return np.empty(0, dtype=np.intp)
    xc = x[cand]
    dist = _sq_dist_to_nearest(xc, x[mask])
    chosen = np.zeros(cand.shape[0], dtype=bool)
    picks = []
    for _ in range(k):
        d = np.where(np.isinf(dist), 1.0, dist)
        p = np.where(chosen, 0.0, d * w)
        if p.sum() <= 0:  # every remaining candidate coincides with a centre, or has zero weight
            p = (~chosen).astype(np.float64)
        j = int(rng.choice(cand.shape[0], p=p / p.sum()))
        chosen[j] = True
        picks.append(j)
        np.minimum(dist, _sq_dist_to(xc, xc[j]), out=dist)
    return cand[np.asarray(picks, dtype=np.intp)]


def weighted_kmeans_representatives(x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator,
                                    n_iter: int = 20) -> np.ndarray:
    """Weighted Lloyd k-means with k clusters on the rows of ``x``; returns k distinct row indices, one per cluster:
    the row nearest to each centroid (Zhdanov 2019, "Diverse mini-batch active learning")."""
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    if k > m:
        raise ValueError(f"cannot pick {k} representatives from {m} rows")
    if k == 0:
        return np.empty(0, dtype=np.intp)
    w = np.maximum(np.asarray(weights, dtype=np.float64), 1e-12)
    seeds = kmeanspp_seeding(x, np.zeros(m, dtype=bool), k, rng, weights=w)
    centers = x[seeds].copy()
    assign = np.full(m, -1)
    for _ in range(n_iter):
        d = (np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ centers.T
             + np.einsum("ij,ij->i", centers, centers)[None, :])
        new = d.argmin(axis=1)
        if np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = assign == c
            if members.any():
                centers[c] = np.average(x[members], axis=0, weights=w[members])
    d = (np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * x @ centers.T
         + np.einsum("ij,ij->i", centers, centers)[None, :])
    taken = np.zeros(m, dtype=bool)
    picks = []
    for c in range(k):  # nearest not-yet-taken row to each centroid
        order = np.argsort(d[:, c], kind="stable")
        j = int(order[~taken[order]][0])
        taken[j] = True
        picks.append(j)
    return np.asarray(picks, dtype=np.intp)


__all__ = ["k_center_greedy", "kmeanspp_seeding", "weighted_kmeans_representatives"]
