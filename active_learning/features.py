"""Image features learnt without labels from the project's own pool: single-layer k-means patch features.

Coates, Lee & Ng (AISTATS 2011, "An analysis of single-layer networks in unsupervised feature learning")
and Coates & Ng (ICML 2011, "The importance of encoding versus training ..."): on small images a single
layer of filters learnt by k-means on whitened patches, encoded with a soft threshold and pooled over image
quadrants, is a strong label-free representation. Every step is scikit-learn or plain linear algebra:

1. ``n_patches`` random ``patch`` x ``patch`` patches from the pool images (pixels 0..1), each normalised
   for brightness and contrast: ``u = (v - mean(v)) / sqrt(var(v) + norm_eps)``.
2. ZCA whitening of those patches: ``PCA`` eigenvectors and ``1 / sqrt(eigenvalue + zca_eps)``.
3. ``MiniBatchKMeans`` with ``n_centroids`` clusters on the whitened patches; centroids scaled to unit norm.
4. Encoding of every patch position (stride ``stride``): ``d_k = c_k . z`` (z the whitened normalised patch);
   features ``relu(d_k - alpha)`` and ``relu(-d_k - alpha)`` (the two polarities of Coates & Ng's soft
   threshold), so 2 * ``n_centroids`` maps.
5. Average pooling over a ``grid`` x ``grid`` split of the map (overlapping by at most one position).
6. Standardised (pool mean and standard deviation) and projected by ``PCA`` on ``out_dim`` components
   fitted on the pool's features: the embedding.

Because whitening and the centroid dot product are linear, steps 1-4 fold into convolutions: with
``G = W_zca @ C.T`` (one ``patch``-sized filter per centroid), ``d_k = (conv(x, G_k) - m * sum(G_k)) / s -
mu_w . G_k`` where ``m`` and ``s`` are the patch mean and standard deviation, themselves convolutions with a
constant filter. ``to_onnx`` writes exactly that graph (Conv, Mul, Sub, Div, Sqrt, Relu, Concat,
AveragePool, Flatten, MatMul), and ``transform`` computes the same numbers in numpy; the tests hold them
equal to 1e-5.

No label is read anywhere: ``fit`` takes images only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

IMAGE_INPUT = "image"
EMBEDDING = "embedding"
#: L2 strength (scikit-learn's C) of the logistic head on these features: 256 standardised, decorrelated
#: dimensions overfit a few hundred labels at C = 1 (chosen on development splits, docs/active-learning.md).
FEATURE_HEAD_C = 0.01
_CHUNK = 64


@dataclass(frozen=True)
class PatchFeatureParams:
    """Every parameter of the learner (fixed; docs/active-learning.md lists them)."""

    n_centroids: int = 128
    patch: int = 6
    stride: int = 1
    grid: int = 2
    n_patches: int = 100_000
    norm_eps: float = 1e-3
    zca_eps: float = 1e-2
    alpha: float = 0.25
    out_dim: int = 256
    max_side: int = 32


def as_nchw(images: np.ndarray) -> np.ndarray:
    """Images (N, H, W), (N, H, W, C) 0..255 or already (N, C, H, W) float 0..1 as float32 (N, C, H, W)."""
    x = np.asarray(images)
    if x.ndim == 3:
        return x[:, None].astype(np.float32) / 255.0
    if x.ndim == 4 and x.dtype != np.uint8 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        return x.astype(np.float32)
    if x.ndim == 4:
        return x.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    raise ValueError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")


def _patches(x: np.ndarray, p: int, stride: int) -> np.ndarray:
    """All patches of (N, C, H, W) as (N, H', W', C*p*p) in the (C, p, p) order of a Conv weight."""
    win = np.lib.stride_tricks.sliding_window_view(x, (p, p), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, hh, ww = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n, hh, ww, c * p * p)


def _pool_geometry(size: int, grid: int) -> tuple[int, int]:
    """(kernel, stride) of an AveragePool giving ``grid`` outputs over ``size`` positions."""
    step = max(size // grid, 1)
    return size - (grid - 1) * step, step


class PatchKMeansFeatures:
    """Fit on unlabelled images; ``transform`` gives (N, out_dim) float32 features; ``to_onnx`` exports it."""

    def __init__(self, params: PatchFeatureParams | None = None, random_state: int = 0) -> None:
        self.params = params or PatchFeatureParams()
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------------------
    def fit(self, images: np.ndarray, progress: Callable[[str, float], None] | None = None) -> PatchKMeansFeatures:
        """Learn filters, pooling statistics and the projection from ``images`` alone (no labels)."""
        from sklearn.cluster import MiniBatchKMeans
        from sklearn.decomposition import PCA

        report = progress or (lambda _msg, _frac: None)
        prm = self.params
        x = as_nchw(images)
        n, c, h, w = x.shape
        if n < 2:
            raise ValueError("the feature learner needs at least two images")
        p = min(prm.patch, h, w)
        self.stride_ = max(prm.stride, int(np.ceil(max(h, w) / prm.max_side)))
        self.shape_ = (c, h, w)
        self.patch_ = p
        rng = np.random.default_rng(self.random_state)
        report("sampling patches", 0.05)
        idx = rng.integers(0, n, prm.n_patches)
        ys = rng.integers(0, h - p + 1, prm.n_patches)
        xs = rng.integers(0, w - p + 1, prm.n_patches)
        offs = np.arange(p)
        patches = x[idx[:, None, None, None], np.arange(c)[None, :, None, None],
                    (ys[:, None] + offs)[:, None, :, None], (xs[:, None] + offs)[:, None, None, :]]
        v = patches.reshape(prm.n_patches, -1).astype(np.float64)
        u = self._normalise(v)
        report("whitening patches", 0.15)
        pca = PCA(random_state=self.random_state).fit(u)
        self.zca_mean_ = pca.mean_
        self.zca_ = (pca.components_.T / np.sqrt(pca.explained_variance_ + prm.zca_eps)) @ pca.components_
        z = (u - self.zca_mean_) @ self.zca_
        report("k-means on whitened patches", 0.25)
        km = MiniBatchKMeans(n_clusters=prm.n_centroids, batch_size=4096, n_init=3, max_iter=50,
                             random_state=self.random_state).fit(z)
        cent = km.cluster_centers_
        self.centroids_ = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-8)
        self.filters_ = self.zca_ @ self.centroids_.T  # (P, K): d = u @ G - mu_w @ G
        self.filter_bias_ = self.zca_mean_ @ self.filters_
        self.feat_mean_ = np.zeros(1)
        self.feat_scale_ = np.ones(1)
        report("encoding the pool", 0.45)
        pooled = self._pooled(x, lambda frac: report("encoding the pool", 0.45 + 0.45 * frac))
        self.feat_mean_ = pooled.mean(axis=0)
        self.feat_scale_ = 1.0 / np.maximum(pooled.std(axis=0), 1e-6)
        std = (pooled - self.feat_mean_) * self.feat_scale_
        k = int(min(prm.out_dim, std.shape[0], std.shape[1]))
        report("projecting the features", 0.92)
        proj = PCA(n_components=k, random_state=self.random_state).fit(std)
        self.proj_mean_ = proj.mean_
        self.proj_ = proj.components_.T
        self.fit_embedding_ = ((std - self.proj_mean_) @ self.proj_).astype(np.float32)
        report("done", 1.0)
        return self

    def _normalise(self, v: np.ndarray) -> np.ndarray:
        m = v.mean(axis=1, keepdims=True)
        var = v.var(axis=1, keepdims=True)
        return np.asarray((v - m) / np.sqrt(var + self.params.norm_eps))

    # -- encoding -----------------------------------------------------------------------------------------
    def _maps(self, x: np.ndarray) -> np.ndarray:
        """Soft-threshold maps (N, 2K, H', W') of a float (N, C, H, W) chunk."""
        u = self._normalise_positions(_patches(x.astype(np.float32), self.patch_, self.stride_))
        d = u @ self.filters_.astype(np.float32) - self.filter_bias_.astype(np.float32)
        a = self.params.alpha
        maps = np.concatenate([np.maximum(d - a, 0.0), np.maximum(-d - a, 0.0)], axis=-1)
        return maps.transpose(0, 3, 1, 2)

    def _normalise_positions(self, v: np.ndarray) -> np.ndarray:
        m = v.mean(axis=-1, keepdims=True)
        var = np.maximum((v * v).mean(axis=-1, keepdims=True) - m * m, 0.0)
        return np.asarray((v - m) / np.sqrt(var + np.float32(self.params.norm_eps)))

    def _pool(self, maps: np.ndarray) -> np.ndarray:
        _, k2, hh, ww = maps.shape
        kh, sh = _pool_geometry(hh, self.params.grid)
        kw, sw = _pool_geometry(ww, self.params.grid)
        g = self.params.grid
        out = np.empty((maps.shape[0], k2, g, g), dtype=np.float64)
        for i in range(g):
            for j in range(g):
                out[:, :, i, j] = maps[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].mean(axis=(2, 3))
        return out.reshape(maps.shape[0], -1)

    def _pooled(self, x: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
        parts = []
        for start in range(0, x.shape[0], _CHUNK):
            parts.append(self._pool(self._maps(x[start:start + _CHUNK])))
            if progress is not None:
                progress(min(1.0, (start + _CHUNK) / x.shape[0]))
        return np.concatenate(parts) if parts else np.empty((0, 0))

    def transform(self, images: np.ndarray) -> np.ndarray:
        """(N, out_dim) float32 embeddings; the same numbers as the ONNX graph of ``to_onnx``."""
        x = as_nchw(images)
        if x.shape[1:] != self.shape_:
            raise ValueError(f"images of shape {x.shape[1:]} do not match the fitted shape {self.shape_}")
        pooled = self._pooled(x)
        projected = ((pooled - self.feat_mean_) * self.feat_scale_ - self.proj_mean_) @ self.proj_
        return np.asarray(projected, dtype=np.float32)

    def fit_transform(self, images: np.ndarray, progress: Any = None) -> np.ndarray:
        """``fit`` then the embeddings of the same images (computed once, during the fit)."""
        return np.asarray(self.fit(images, progress).fit_embedding_)

    @property
    def n_features(self) -> int:
        return int(self.proj_.shape[1])

    # -- ONNX ---------------------------------------------------------------------------------------------
    def to_onnx(self, input_name: str = IMAGE_INPUT, output_name: str = EMBEDDING, opset: int = 17) -> ModelProto:
        """The fitted transform as an ONNX graph: ``input_name`` float32 (N, C, H, W) in 0..1 ->
        ``output_name`` (N, out_dim)."""
        c, h, w = self.shape_
        p, s = self.patch_, self.stride_
        n_px = c * p * p
        k = self.filters_.shape[1]
        hh, ww = (h - p) // s + 1, (w - p) // s + 1
        kh, sh = _pool_geometry(hh, self.params.grid)
        kw, sw = _pool_geometry(ww, self.params.grid)

        def const(name: str, value: np.ndarray) -> onnx.TensorProto:
            return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

        inits = [
            const("fx/ones", np.full((1, c, p, p), 1.0 / n_px)),
            const("fx/filters", self.filters_.T.reshape(k, c, p, p)),
            const("fx/filter_sum", self.filters_.sum(axis=0).reshape(1, k, 1, 1)),
            const("fx/filter_bias", self.filter_bias_.reshape(1, k, 1, 1)),
            const("fx/eps", np.array(self.params.norm_eps)),
            const("fx/alpha", np.array(self.params.alpha)),
            const("fx/feat_mean", self.feat_mean_[None, :]),
            const("fx/feat_scale", self.feat_scale_[None, :]),
            const("fx/proj_mean", self.proj_mean_[None, :]),
            const("fx/proj", self.proj_),
        ]
        strides = [s, s]
        nodes = [
            helper.make_node("Conv", [input_name, "fx/ones"], ["fx/m"], name="fx/patch_mean", strides=strides),
            helper.make_node("Mul", [input_name, input_name], ["fx/x2"]),
            helper.make_node("Conv", ["fx/x2", "fx/ones"], ["fx/m2"], name="fx/patch_sq_mean", strides=strides),
            helper.make_node("Mul", ["fx/m", "fx/m"], ["fx/mm"]),
            helper.make_node("Sub", ["fx/m2", "fx/mm"], ["fx/var_raw"]),
            helper.make_node("Relu", ["fx/var_raw"], ["fx/var"]),
            helper.make_node("Add", ["fx/var", "fx/eps"], ["fx/var_eps"]),
            helper.make_node("Sqrt", ["fx/var_eps"], ["fx/sd"]),
            helper.make_node("Conv", [input_name, "fx/filters"], ["fx/dot"], name="fx/centroid_filters",
                             strides=strides),
            helper.make_node("Mul", ["fx/m", "fx/filter_sum"], ["fx/m_g"]),
            helper.make_node("Sub", ["fx/dot", "fx/m_g"], ["fx/dot_c"]),
            helper.make_node("Div", ["fx/dot_c", "fx/sd"], ["fx/dot_n"]),
            helper.make_node("Sub", ["fx/dot_n", "fx/filter_bias"], ["fx/d"]),
            helper.make_node("Sub", ["fx/d", "fx/alpha"], ["fx/d_pos"]),
            helper.make_node("Relu", ["fx/d_pos"], ["fx/f_pos"]),
            helper.make_node("Neg", ["fx/d"], ["fx/d_neg_raw"]),
            helper.make_node("Sub", ["fx/d_neg_raw", "fx/alpha"], ["fx/d_neg"]),
            helper.make_node("Relu", ["fx/d_neg"], ["fx/f_neg"]),
            helper.make_node("Concat", ["fx/f_pos", "fx/f_neg"], ["fx/maps"], axis=1),
            helper.make_node("AveragePool", ["fx/maps"], ["fx/pooled"], kernel_shape=[kh, kw], strides=[sh, sw]),
            helper.make_node("Flatten", ["fx/pooled"], ["fx/flat"], axis=1),
            helper.make_node("Sub", ["fx/flat", "fx/feat_mean"], ["fx/centred"]),
            helper.make_node("Mul", ["fx/centred", "fx/feat_scale"], ["fx/standard"]),
            helper.make_node("Sub", ["fx/standard", "fx/proj_mean"], ["fx/standard_c"]),
            helper.make_node("MatMul", ["fx/standard_c", "fx/proj"], [output_name]),
        ]
        graph = helper.make_graph(
            nodes, "patch_kmeans_features",
            [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", c, h, w])],
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", self.n_features])],
            initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="medlabel-al")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def learn_features(images: np.ndarray, params: PatchFeatureParams | None = None, seed: int = 0,
                   progress: Callable[[str, float], None] | None = None) -> PatchKMeansFeatures:
    """Fit :class:`PatchKMeansFeatures` on unlabelled ``images`` (the project's pool)."""
    return PatchKMeansFeatures(params, random_state=seed).fit(images, progress)


__all__ = ["EMBEDDING", "FEATURE_HEAD_C", "IMAGE_INPUT", "PatchFeatureParams", "PatchKMeansFeatures", "as_nchw",
           "learn_features"]
