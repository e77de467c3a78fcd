"""Properties of the three published use cases, all from local weight files.

- ``inception``: Inception score and FID from Inception-v3 in clean-fid's TorchScript format
  (``inception-2015-12-05.pt``, the file clean-fid and StyleGAN2-ADA download; here a local path). FID uses
  the 2048-d pool features (``return_features=True``) against reference statistics cached in the artifacts;
  IS uses the 1008-way softmax without output bias (``no_output_bias=True``), as the original implementation.
- ``cluster_diversity``: the CelebA-HQ property. A fixed reference set is embedded (BLIP or CLIP image
  embeddings, a local model folder), Ward-clustered into K clusters (the paper: 20); generated images are
  assigned to the nearest cluster centroid and the property is the Shannon entropy (nats) of the assignment
  proportions (max log K: every cluster equally represented).
- ``aesthetic``: LAION aesthetic predictor v1, a linear head (768 -> 1) on L2-normalised CLIP ViT-L/14 image
  embeddings; both local files. Reported as ``aesthetic_mean`` and ``aesthetic_p90`` (90th percentile).

Every property takes generated images as uint8 tensors (N, 3, H, W) and returns ``{name: float}``.

Paper notation -> code: IS = exp(E_x KL(p(y|x) || p(y))) -> :func:`inception_score`;
FID = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^1/2) -> ``cleanfid.fid.frechet_distance``;
H = -sum_k q_k log q_k over cluster proportions q -> :func:`assignment_entropy`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from workers.usecases.common import resize_uint8

#: CLIP image normalisation (used when the model folder has no preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class UseCaseProperty(Protocol):
    """A property: ``names`` it returns, ``prepare`` on reference images once, ``measure`` per coalition."""

    names: list[str]

    def prepare(self, reference: torch.Tensor, cache: Path) -> dict[str, Any]:
        """Compute reference statistics from uint8 images (N, 3, H, W); cache them under ``cache``."""
        ...

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        """Values for uint8 generated images (N, 3, H, W)."""
        ...


# ----------------------------------------------------------------------------------------------------------
# Pure numpy formulas (unit-tested against hand computations)
# ----------------------------------------------------------------------------------------------------------
def inception_score(probs: np.ndarray, splits: int = 1) -> float:
    """IS = exp(mean_x KL(p(y|x) || p(y))), averaged over ``splits`` chunks. probs: (N, classes), rows sum to 1."""
    scores = []
    for part in np.array_split(np.asarray(probs, dtype=np.float64), splits):
        p = np.clip(part, 1e-12, 1.0)
        marginal = p.mean(axis=0, keepdims=True)
        scores.append(float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1)))))
    return float(np.mean(scores))


def assignment_entropy(labels: np.ndarray, n_clusters: int) -> float:
    """Shannon entropy (nats) of the cluster proportions of ``labels`` (ints in [0, n_clusters))."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_clusters).astype(np.float64)
    q = counts / counts.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum())


def ward_centroids(embeddings: np.ndarray, n_clusters: int) -> np.ndarray:
    """Ward-cluster reference embeddings (N, D) into ``n_clusters``; returns centroids (n_clusters, D)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < n_clusters:
        raise ValueError(
            f"cluster_diversity: {len(embeddings)} reference images < n_clusters={n_clusters}; "
            "use more reference images or fewer clusters"
        )
    labels = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(embeddings)
    return np.stack([embeddings[labels == k].mean(axis=0) for k in range(n_clusters)])


def nearest_centroid(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for each row of ``embeddings`` (N, D) -> (N,) ints."""
    d2 = ((embeddings[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return d2.argmin(axis=1)


# ----------------------------------------------------------------------------------------------------------
# Inception (clean-fid TorchScript format)
# ----------------------------------------------------------------------------------------------------------
class InceptionProperty:
    """IS and FID from a local ``inception-2015-12-05.pt`` (clean-fid / StyleGAN2-ADA TorchScript file).

    Args:
        path: the ``.pt`` file (a TorchScript module called as ``m(x, return_features=True)`` -> (N, 2048)
            and ``m(x, no_output_bias=True)`` -> (N, 1008) softmax; ``x`` float in [0, 255], any size).
        metrics: subset of ``["inception_score", "fid"]`` to report (default both).
        device: torch device; batch_size: images per forward; is_splits: IS splits (10 in the literature
            for 50k images; 1 for small samples).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        metrics: tuple[str, ...] = ("inception_score", "fid"),
        device: torch.device | str = "cpu",
        batch_size: int = 100,
        is_splits: int = 1,
    ) -> None:
        unknown = sorted(set(metrics) - {"inception_score", "fid"})
        if unknown:
            raise ValueError(f"inception metrics {unknown} are not valid; allowed: inception_score, fid")
        self.names = list(metrics)
        self.device = torch.device(device)
        self.model = torch.jit.load(str(path), map_location=self.device).eval()
        self.batch_size = batch_size
        self.is_splits = is_splits
        self.ref_mu: np.ndarray | None = None
        self.ref_sigma: np.ndarray | None = None

    @torch.no_grad()
    def _run(self, images: torch.Tensor, **kwargs: bool) -> np.ndarray:
        outs = []
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(self.device).float()
            outs.append(self.model(x, **kwargs).float().cpu().numpy())
        return np.concatenate(outs).astype(np.float64)

    def features(self, images: torch.Tensor) -> np.ndarray:
        return self._run(images, return_features=True)

    def probs(self, images: torch.Tensor) -> np.ndarray:
        return self._run(images, no_output_bias=True)

    def prepare(self, reference: torch.Tensor, cache: Path) -> dict[str, Any]:
        stats = cache / "inception_reference.npz"
        if not stats.exists():
            feats = self.features(reference)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / ".inception_reference.tmp.npz"
            np.savez(tmp, mu=feats.mean(axis=0), sigma=np.cov(feats, rowvar=False), n=len(feats))
            tmp.replace(stats)
        data = np.load(stats)
        self.ref_mu, self.ref_sigma = data["mu"], data["sigma"]
        return {"inception_reference_n": int(data["n"])}

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        from cleanfid.fid import frechet_distance

        out: dict[str, float] = {}
        if "fid" in self.names:
            if self.ref_mu is None:
                raise RuntimeError("InceptionProperty.measure before prepare(): reference statistics missing")
            feats = self.features(images)
            out["fid"] = float(frechet_distance(feats.mean(axis=0), np.cov(feats, rowvar=False), self.ref_mu, self.ref_sigma))
        if "inception_score" in self.names:
            out["inception_score"] = inception_score(self.probs(images), splits=self.is_splits)
        return out


# ----------------------------------------------------------------------------------------------------------
# Image embeddings (CLIP or BLIP, local folders in the transformers layout)
# ----------------------------------------------------------------------------------------------------------
class ImageEmbedder:
    """L2-normalised image embeddings from a local CLIP or BLIP model folder (``save_pretrained`` layout).

    Args:
        kind: ``"clip"`` (``CLIPVisionModelWithProjection.image_embeds``, e.g. openai/clip-vit-large-patch14)
            or ``"blip"`` (``BlipModel.get_image_features``, e.g. Salesforce/blip-itm-base-coco).
        path: the model folder. Its ``preprocessor_config.json`` (if present) gives size, mean and std.
    """

    def __init__(self, kind: str, path: str | Path, *, device: torch.device | str = "cpu", batch_size: int = 64):
        path = Path(path)
        self.device = torch.device(device)
        self.batch_size = batch_size
        if kind == "clip":
            from transformers import CLIPVisionModelWithProjection

            self.model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True)
            self._embed = lambda px: self.model(pixel_values=px).image_embeds
            self.size = int(self.model.config.image_size)
        elif kind == "blip":
            from transformers import BlipModel

            self.model = BlipModel.from_pretrained(str(path), local_files_only=True)
            self._embed = lambda px: _as_tensor(self.model.get_image_features(pixel_values=px))
            self.size = int(self.model.config.vision_config.image_size)
        else:
            raise ValueError(f"embedding kind={kind!r} is not valid; allowed: clip, blip")
        self.model = self.model.to(self.device).eval()
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.exists():
            cfg = json.loads(pre.read_text())
            self.mean = tuple(cfg.get("image_mean", self.mean))
            self.std = tuple(cfg.get("image_std", self.std))

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """uint8 (N, 3, H, W) -> float64 (N, D), rows of unit L2 norm."""
        outs = []
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            hwc = resize_uint8(chunk.permute(0, 2, 3, 1).numpy(), self.size)
            px = (torch.from_numpy(hwc).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            emb = self._embed(px.to(self.device)).float()
            outs.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(outs).astype(np.float64)


def _as_tensor(out: Any) -> torch.Tensor:
    """transformers 5 may return a model output instead of a tensor from ``get_image_features``."""
    if isinstance(out, torch.Tensor):
        return out
    for attr in ("image_embeds", "pooler_output"):
        value = getattr(out, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected image-feature output {type(out).__name__}; expected a tensor")


class ClusterDiversityProperty:
    """Entropy of the assignment of generated images to Ward clusters of a fixed reference set.

    Args:
        embedder: an :class:`ImageEmbedder`.
        n_clusters: K (the paper: 20). The value lies in [0, log K].
        name: property name (default ``"diversity"``).
    """

    def __init__(self, embedder: ImageEmbedder, *, n_clusters: int = 20, name: str = "diversity") -> None:
        self.embedder = embedder
        self.n_clusters = n_clusters
        self.names = [name]
        self.centroids: np.ndarray | None = None

    def prepare(self, reference: torch.Tensor, cache: Path) -> dict[str, Any]:
        path = cache / f"diversity_centroids_k{self.n_clusters}.npz"
        if not path.exists():
            centroids = ward_centroids(self.embedder(reference), self.n_clusters)
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / ".diversity_centroids.tmp.npz"
            np.savez(tmp, centroids=centroids, n=len(reference))
            tmp.replace(path)
        data = np.load(path)
        self.centroids = data["centroids"]
        return {"diversity_reference_n": int(data["n"]), "diversity_max": float(np.log(self.n_clusters))}

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        if self.centroids is None:
            raise RuntimeError("ClusterDiversityProperty.measure before prepare(): centroids missing")
        labels = nearest_centroid(self.embedder(images), self.centroids)
        return {self.names[0]: assignment_entropy(labels, self.n_clusters)}


# ----------------------------------------------------------------------------------------------------------
# LAION aesthetic predictor (linear head on CLIP ViT-L/14 embeddings)
# ----------------------------------------------------------------------------------------------------------
def load_linear_head(path: str | Path) -> tuple[np.ndarray, float]:
    """Load the LAION linear aesthetic head: a state dict with ``weight`` (1, D) and ``bias`` (1,).

    Accepts ``.safetensors`` or a torch ``.pth``/``.pt`` state dict (loaded with ``weights_only=True``), with
    or without a ``linear.``/``layers.0.`` prefix. Returns (w of shape (D,), b).
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    weights = {k.rsplit(".", 1)[-1]: v for k, v in state.items() if k.endswith(("weight", "bias"))}
    if set(weights) != {"weight", "bias"} or weights["weight"].ndim != 2 or weights["weight"].shape[0] != 1:
        raise ValueError(
            f"aesthetic head {path}: expected one linear layer (keys weight (1, D), bias (1,)), "
            f"found keys {sorted(state)}; use the LAION linear predictor (e.g. sa_0_4_vit_l_14_linear.pth)"
        )
    return weights["weight"][0].double().numpy(), float(weights["bias"].reshape(-1)[0])


class AestheticProperty:
    """LAION aesthetic score: ``w . normalize(clip_embed(x)) + b`` per image; mean and 90th percentile."""

    def __init__(self, embedder: ImageEmbedder, head_path: str | Path, *, quantile: float = 0.9) -> None:
        self.embedder = embedder
        self.w, self.b = load_linear_head(head_path)
        self.quantile = quantile
        self.names = ["aesthetic_mean", f"aesthetic_p{round(quantile * 100)}"]

    def scores(self, images: torch.Tensor) -> np.ndarray:
        emb = self.embedder(images)
        if emb.shape[1] != self.w.shape[0]:
            raise ValueError(
                f"aesthetic head expects {self.w.shape[0]}-d embeddings but the CLIP model gives {emb.shape[1]}; "
                "use CLIP ViT-L/14 (768-d) with the LAION ViT-L/14 head"
            )
        return emb @ self.w + self.b

    def prepare(self, reference: torch.Tensor, cache: Path) -> dict[str, Any]:
        s = self.scores(reference)
        return {"aesthetic_reference_mean": float(s.mean()), "aesthetic_reference_n": len(s)}

    def measure(self, images: torch.Tensor) -> dict[str, float]:
        s = self.scores(images)
        return {self.names[0]: float(s.mean()), self.names[1]: float(np.quantile(s, self.quantile))}
