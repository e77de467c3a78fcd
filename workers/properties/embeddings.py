"""Image embeddings of a local BLIP or CLIP model, and the embedding-cluster feature extractor.

- ``feature_extractor.kind: blip | clip`` (CelebA-HQ ``diversity``): L2-normalised image embeddings of a
  local BLIP or CLIP model. ``fit`` embeds a fixed reference set (the real images, at most
  ``reference_size``, chosen with the run seed) and Ward-clusters it into K clusters (the paper: 20);
  the extractor's "class probabilities" are the one-hot assignment of each image to the nearest centroid,
  so the built-in ``diversity`` (entropy of the predicted-class proportions) is exactly the paper's
  property: H = -sum_k q_k log q_k, q_k = share of generated images in cluster k (max log K).
- :class:`ImageEmbedder` is shared with the ArtBench aesthetic head (``contribshap.usecases.artbench``).

Extractors take generated images as float tensors (N, 3, H, W) in [-1, 1], as every extractor does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.workers.models import from_pretrained_safetensors
from contribshap.workers.properties.base import GeneratedFeatures
from contribshap.workers.properties.extractors import (
    EXTRACTOR_JSON,
    Extractor,
    ExtractorKind,
)

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import EmbeddingClustersExtractor
    from contribshap.workers.data import ContributorDataset

#: CLIP image normalisation (used when the model folder has no preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CENTROIDS_NAME = "centroids.npz"


# ----------------------------------------------------------------------------------------------------------
# Pure numpy pieces (unit-tested against hand computations)
# ----------------------------------------------------------------------------------------------------------
def ward_centroids(embeddings: np.ndarray, n_clusters: int) -> np.ndarray:
    """Ward-cluster reference embeddings (N, D) into ``n_clusters``; returns centroids (n_clusters, D)."""
    from sklearn.cluster import AgglomerativeClustering

    if len(embeddings) < n_clusters:
        raise ValueError(
            f"feature_extractor: {len(embeddings)} reference images < n_clusters={n_clusters}; "
            "use more reference images or fewer clusters"
        )
    labels = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward").fit_predict(embeddings)
    return np.stack([embeddings[labels == k].mean(axis=0) for k in range(n_clusters)])


def nearest_centroid(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) for each row of ``embeddings`` (N, D) -> int64 (N,)."""
    d2 = ((embeddings[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return d2.argmin(axis=1).astype(np.int64)


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """float64 (N, n_classes) one-hot rows of int ``labels`` (N,)."""
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


# ----------------------------------------------------------------------------------------------------------
# Image embeddings (CLIP or BLIP, local folders in the transformers layout)
# ----------------------------------------------------------------------------------------------------------
class ImageEmbedder:
    """L2-normalised image embeddings from a local CLIP or BLIP model folder (``save_pretrained`` layout).

    Args:
        kind: ``"clip"`` (``CLIPVisionModelWithProjection(...).image_embeds``, e.g. a copy of
            openai/clip-vit-large-patch14) or ``"blip"`` (``BlipModel.get_image_features``, e.g. a copy of
            Salesforce/blip-itm-base-coco).
        path: the model folder. Its ``preprocessor_config.json`` (if present) gives mean and std.
        device: torch device. batch_size: images per forward (default 64).

    Call with float images (N, 3, H, W) in [-1, 1]; returns float64 (N, D) rows of unit norm. Images are
    resized (bicubic) to the model's ``image_size``.
    """

    def __init__(self, kind: str, path: str | Path, *, device: torch.device | str = "cpu", batch_size: int = 64):
        path = Path(path).expanduser()
        self.device = torch.device(device)
        self.batch_size = batch_size
        if kind == "clip":
            from transformers import CLIPVisionModelWithProjection

            self.model = from_pretrained_safetensors(CLIPVisionModelWithProjection, path, key="feature_extractor (clip)")
            self.size = int(self.model.config.image_size)
        elif kind == "blip":
            from transformers import BlipModel

            self.model = from_pretrained_safetensors(BlipModel, path, key="feature_extractor (blip)")
            self.size = int(self.model.config.vision_config.image_size)
        else:
            raise ValueError(f"embedding kind={kind!r} is not valid; allowed: clip, blip")
        self.kind = kind
        self.model = self.model.to(self.device).eval()
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            self.mean = tuple(cfg.get("image_mean", self.mean))
            self.std = tuple(cfg.get("image_std", self.std))

    def _embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.kind == "clip":
            return self.model(pixel_values=pixel_values).image_embeds
        out = self.model.get_image_features(pixel_values=pixel_values)
        if isinstance(out, torch.Tensor):
            return out
        for attr in ("image_embeds", "pooler_output"):  # transformers 5 may return a model output
            value = getattr(out, attr, None)
            if isinstance(value, torch.Tensor):
                return value
        raise TypeError(f"BLIP get_image_features returned {type(out).__name__}; expected a tensor")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        outs = []
        for start in range(0, len(images), self.batch_size):
            x = images[start : start + self.batch_size].to(self.device).float()
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            x = ((x.clamp(-1, 1) + 1) / 2).clamp(0, 1)
            if x.shape[-1] != self.size or x.shape[-2] != self.size:
                x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False)
            emb = self._embed((x - mean) / std).float()
            outs.append(torch.nn.functional.normalize(emb, dim=-1).cpu().numpy())
        return np.concatenate(outs).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# kind blip | clip: Ward clusters of a reference set -> one-hot "class probabilities" for `diversity`
# ----------------------------------------------------------------------------------------------------------
class ClusterExtractor(Extractor):
    """Embeddings as features, the one-hot nearest-centroid assignment as probabilities (K = n_clusters)."""

    def __init__(self, embedder: ImageEmbedder, centroids: np.ndarray) -> None:
        self.embedder = embedder
        self.centroids = centroids
        self.n_classes = len(centroids)

    def __call__(self, images: torch.Tensor) -> GeneratedFeatures:
        emb = self.embedder(images)
        return GeneratedFeatures(features=emb, probs=one_hot(nearest_centroid(emb, self.centroids), self.n_classes))


def _fit_clusters(config: EmbeddingClustersExtractor, dataset: ContributorDataset, folder: Path, *, seed: int, device: torch.device) -> dict[str, Any]:
    """Embed at most ``reference_size`` real images (seeded choice), Ward-cluster them, save the centroids."""
    images = dataset.images if hasattr(dataset, "images") else dataset
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(images), size=min(len(images), config.reference_size), replace=False))
    embedder = ImageEmbedder(config.kind, config.weights, device=device, batch_size=config.batch_size)
    embeddings = embedder(images[torch.as_tensor(pick)])
    centroids = ward_centroids(embeddings, config.n_clusters)
    sizes = np.bincount(nearest_centroid(embeddings, centroids), minlength=config.n_clusters)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / CENTROIDS_NAME, centroids=centroids)
    summary = {
        "kind": config.kind,
        "weights": str(config.weights),
        "n_reference": len(pick),
        "n_clusters": config.n_clusters,
        "embedding_dim": int(embeddings.shape[1]),
        "reference_diversity": float(-(sizes[sizes > 0] / len(pick) * np.log(sizes[sizes > 0] / len(pick))).sum()),
        "max_diversity": float(np.log(config.n_clusters)),
    }
    (folder / EXTRACTOR_JSON).write_text(json.dumps(summary, indent=1))
    return summary


def _load_clusters(config: EmbeddingClustersExtractor, folder: Path, *, device: torch.device) -> Extractor:
    path = Path(folder) / CENTROIDS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"cluster centroids {path} do not exist; re-run prepare")
    with np.load(path) as data:
        centroids = data["centroids"]
    return ClusterExtractor(ImageEmbedder(config.kind, config.weights, device=device, batch_size=config.batch_size), centroids)


#: ``feature_extractor.kind: blip | clip``.
EMBEDDING_CLUSTERS = ExtractorKind(fit=_fit_clusters, load=_load_clusters)


