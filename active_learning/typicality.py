"""Typicality and coverage for small budgets: TypiClust (Hacohen, Dekel & Weinshall, ICML 2022).

With few labels a model's uncertainty is mostly noise; what helps is labelling *typical* items (in dense
regions of the feature space) that *cover* the data (one per region). TypiClust clusters the pool into
``labelled + k`` clusters (at most ``max_clusters``), then repeatedly takes the cluster with the fewest
labelled items (the largest first among equals, clusters smaller than ``min_cluster`` left aside while
others remain) and labels its most typical unlabelled item, where

    typicality(x) = 1 / mean distance from x to its ``knn`` nearest neighbours in its cluster.

Clustering is scikit-learn's ``KMeans`` (one init); above ``KMEANS_SAMPLE`` items the centroids are fitted on a
seeded random sample of that many and every item is assigned to its nearest centroid. Neighbours are
``sklearn.neighbors.NearestNeighbors``; in a cluster of more than ``KNN_REFERENCE`` items they are searched
among a seeded random sample of that many members. Both bounds keep a selection over a 10,000-item pool to a
few seconds; pools of up to 3,000 items, and clusters of up to 1,000, are computed exactly as before.
"""

from __future__ import annotations

import warnings

import numpy as np

#: Above this many items k-means fits its centroids on a random sample of this many, then assigns every item.
KMEANS_SAMPLE = 3000
#: In a cluster of more items than this, typicality's neighbours are searched among this many sampled members.
KNN_REFERENCE = 1000


def cluster_pool(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster ids (N,) of a k-means with ``n_clusters`` clusters (seeded; centroids from a sample of
    ``KMEANS_SAMPLE`` items on larger pools)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    n_clusters = int(max(1, min(n_clusters, x.shape[0])))
    km = KMeans(n_clusters=n_clusters, n_init=1, random_state=seed)
    with warnings.catch_warnings():  # duplicate points give fewer distinct clusters: fine for selection
        warnings.simplefilter("ignore", ConvergenceWarning)
        if x.shape[0] <= KMEANS_SAMPLE:
            return np.asarray(km.fit_predict(x).astype(np.intp))
        sample = np.random.default_rng(seed).choice(x.shape[0], size=KMEANS_SAMPLE, replace=False)
        return np.asarray(km.fit(x[np.sort(sample)]).predict(x).astype(np.intp))


def typicality(x: np.ndarray, clusters: np.ndarray, knn: int = 20, seed: int = 0) -> np.ndarray:
    """1 / mean distance to the ``knn`` nearest other items of the same cluster (inf for a lone item);
    in a cluster larger than ``KNN_REFERENCE`` the neighbours come from a seeded sample of that many members."""
    from sklearn.neighbors import NearestNeighbors

    out = np.full(x.shape[0], np.inf)
    rng = np.random.default_rng(seed)
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        if members.shape[0] < 2:
            continue
        k = min(knn, members.shape[0] - 1)
        if members.shape[0] <= KNN_REFERENCE:
            dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x[members]).kneighbors(x[members])
            out[members] = 1.0 / np.maximum(dist[:, 1:].mean(axis=1), 1e-12)
            continue
        ref = np.sort(rng.choice(members, size=KNN_REFERENCE, replace=False))
        dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x[ref]).kneighbors(x[members])
        own = ref[idx] == members[:, None]  # a sampled member finds itself at distance 0: drop that one
        keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1) < k)
        out[members] = 1.0 / np.maximum((dist * keep).sum(axis=1) / k, 1e-12)
    return out


def typiclust_select(embeddings: np.ndarray, labeled_mask: np.ndarray, k: int, rng: np.random.Generator, *,
                     max_clusters: int = 500, min_cluster: int = 5, knn: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust's batch: k unlabelled indices, and the typicality of every item (normalised to 0..1)."""
    x = np.asarray(embeddings, dtype=np.float64)
    mask = np.asarray(labeled_mask, dtype=bool)
    unlabeled = np.flatnonzero(~mask)
    if k < 0 or k > unlabeled.shape[0]:
        raise ValueError(f"cannot select {k} items: {unlabeled.shape[0]} are unlabelled")
    n_clusters = min(int(mask.sum()) + k, max_clusters, x.shape[0])
    cluster_seed = int(rng.integers(2**31 - 1))
    clusters = cluster_pool(x, n_clusters, cluster_seed)
    typ = typicality(x, clusters, knn, seed=cluster_seed)
    finite = np.isfinite(typ)
    top = typ[finite].max() if finite.any() else 1.0
    typ_norm = np.where(finite, typ / top if top > 0 else 0.0, 1.0)
    if k == 0:
        return np.empty(0, dtype=np.intp), typ_norm
    ids, sizes = np.unique(clusters, return_counts=True)
    size = {int(c): int(n) for c, n in zip(ids, sizes, strict=True)}
    covered = {int(c): int(n) for c, n in zip(*np.unique(clusters[mask], return_counts=True), strict=True)}
    taken = mask.copy()
    remaining = {int(c): int(n) for c, n in zip(*np.unique(clusters[~mask], return_counts=True), strict=True)}
    picks: list[int] = []
    tiebreak = rng.random(size=(x.shape[0],))
    for _ in range(k):
        open_clusters = [c for c, n in remaining.items() if n > 0]
        big = [c for c in open_clusters if size[c] >= min_cluster] or open_clusters
        best = min(big, key=lambda c: (covered.get(c, 0), -size[c], c))
        cand = np.flatnonzero((clusters == best) & ~taken)
        j = int(cand[np.lexsort((tiebreak[cand], -typ[cand]))[0]])
        picks.append(j)
        taken[j] = True
        covered[best] = covered.get(best, 0) + 1
        remaining[best] -= 1
    return np.asarray(picks, dtype=np.intp), typ_norm


__all__ = ["cluster_pool", "typicality", "typiclust_select"]
